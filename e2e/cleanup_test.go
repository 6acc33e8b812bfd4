package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nothing is left behind — machines, ephemeral snapshots, processes — after success, failure,
// step timeout, SIGINT, and kill -9 of hm followed by a new run, on every backend.
func TestNothingLeftBehind(t *testing.T) {
	parent := stepJSON("parent", "echo p > p.txt", `"image":"ubuntu:24.04"`)
	edge := `[0,1,"builds_in"]`
	// A daemon that ignores SIGTERM, and the step's own sleep; both carry a token so that the
	// process table can be searched for survivors.
	token := strconv.Itoa(int(time.Now().UnixNano()%900000) + 100000)
	stubborn := fmt.Sprintf(`sh -c 'trap "" TERM; sleep %s1' & echo ready; sleep %s2`, token, token)
	tests := []struct {
		name  string
		child string
		code  int
		// interrupt, when set, is sent once the child printed "ready".
		interrupt func(c *exec.Cmd) error
	}{
		{name: "success", child: stepJSON("child", "cat p.txt", ""), code: 0},
		{name: "failure", child: stepJSON("child", "exit 9", ""), code: 1},
		{name: "step timeout", child: stepJSON("child", stubborn, `"timeout_seconds":2`), code: 1},
		{name: "SIGINT", child: stepJSON("child", stubborn, ""), code: 130,
			interrupt: func(c *exec.Cmd) error { return c.Process.Signal(syscall.SIGINT) }},
		{name: "kill -9", child: stepJSON("child", stubborn, ""), code: -1,
			interrupt: func(c *exec.Cmd) error { return c.Process.Kill() }},
	}
	for _, bc := range cacheBackends(t) {
		for _, tt := range tests {
			t.Run(bc.name+"/"+tt.name, func(t *testing.T) {
				e := newBackendEnv(t, bc)
				writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{parent, tt.child}, edge)})
				args := append([]string{"run", "--format", "json"}, bc.args...)
				code, _ := runUntilReady(t, e, args, tt.interrupt)
				if code != tt.code {
					t.Fatalf("exit %d, want %d", code, tt.code)
				}
				if tt.code == -1 {
					// hm died without cleaning up; the next run must reconcile.
					if len(bc.leftovers(t, e.stateDir)) == 0 {
						t.Fatal("kill -9 left nothing behind: the test would prove nothing")
					}
					writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{stepJSON("ok", "true", `"image":"ubuntu:24.04"`)}, "")})
					if r := e.run(append([]string{"run"}, bc.args...)...); r.code != 0 {
						t.Fatalf("run after kill -9: exit %d\n%s", r.code, r.stderr)
					}
				}
				if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
					t.Errorf("left behind: %v", left)
				}
				if left := processesWith(token); len(left) > 0 {
					t.Errorf("step processes survived: %v", left)
				}
			})
		}
	}
}

// runUntilReady runs hm, applies interrupt once a step logged "ready", and returns the exit
// code (-1 when hm was killed by a signal) and what hm wrote on stderr.
func runUntilReady(t *testing.T, e *env, args []string, interrupt func(*exec.Cmd) error) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sent := false
	for sc.Scan() {
		if !sent && interrupt != nil && strings.Contains(sc.Text(), `"line":"ready"`) {
			sent = true
			if err := interrupt(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.Wait()
	if interrupt != nil && !sent {
		t.Fatalf("the step never got ready; stderr:\n%s", stderr.String())
	}
	return c.ProcessState.ExitCode(), stderr.String()
}
