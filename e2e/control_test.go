package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
)

// graph renders a graph-form IR from steps written as {"key": ..., "cmd": ...} JSON objects.
func graph(timeout int, steps []string, edges string) string {
	top := ""
	if timeout > 0 {
		top = fmt.Sprintf(`"timeout_seconds":%d,`, timeout)
	}
	var nodes []string
	for _, s := range steps {
		nodes = append(nodes, `{"step":`+s+`,"env":{}}`)
	}
	return `{"version":"0",` + top + `"graph":{"nodes":[` + strings.Join(nodes, ",") + `],"edges":[` + edges + `]}}`
}

func stepJSON(key, cmd string, extra string) string {
	b, _ := json.Marshal(cmd)
	s := `{"key":"` + key + `","cmd":` + string(b)
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func TestFailFastCancelsSibling(t *testing.T) {
	e := newEnv(t)
	doc := graph(0, []string{
		stepJSON("sleeper", "echo started; sleep 30", ""),
		// Fail only once the sleeper is running, so the failure has something to cancel.
		stepJSON("bad", "for i in $(seq 200); do [ -f \"$HM_E2E/started\" ] && exit 3; sleep 0.05; done; exit 4", ""),
	}, "")
	marker := t.TempDir()
	doc = strings.Replace(doc, `"echo started; sleep 30"`, `"touch `+marker+`/started; sleep 30"`, 1)
	r := e.run("run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host",
		"-e", "HM_E2E="+marker, "--parallelism", "2")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (an ordinary failure is never 130); stderr:\n%s", r.code, r.stderr)
	}
	v := view(t, parseEvents(t, r.stdout))
	if v.status["bad"] != 3 || v.status["sleeper"] != 130 {
		t.Errorf("bad exit %d (want 3), sleeper exit %d (want 130: canceled)", v.status["bad"], v.status["sleeper"])
	}
	// Exit 130 above is the proof that the sleeper was killed, not left to sleep 30 s out;
	// how fast is for bench/, the log only reports it.
	t.Logf("fail-fast build took %s", r.elapsed)
}

func TestKeepGoingLetsSiblingFinish(t *testing.T) {
	e := newEnv(t)
	doc := graph(0, []string{
		stepJSON("sibling", "sleep 1; echo finished", ""),
		stepJSON("bad", "exit 2", ""),
		stepJSON("after-bad", "echo never", ""),
	}, `[1,2,"depends_on"]`)
	r := e.run("run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host", "-k", "--parallelism", "2")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	v := view(t, parseEvents(t, r.stdout))
	if diff := cmp.Diff([]string{"finished"}, v.lines("sibling")); diff != "" || v.status["sibling"] != 0 {
		t.Errorf("sibling exit %d, output (-want +got):\n%s", v.status["sibling"], diff)
	}
	if diff := cmp.Diff([]string{"step_queued", "step_skipped"}, v.kinds["after-bad"]); diff != "" {
		t.Errorf("after-bad (-want +got):\n%s", diff)
	}
}

func TestStepTimeout(t *testing.T) {
	e := newEnv(t)
	doc := graph(0, []string{stepJSON("slow", "sleep 30", `"timeout_seconds":2`)}, "")
	r := e.run("run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (a step timeout is a failure); stderr:\n%s", r.code, r.stderr)
	}
	v := view(t, parseEvents(t, r.stdout))
	if v.status["slow"] != 124 {
		t.Errorf("step exit %d, want 124", v.status["slow"])
	}
	if want := "step 'slow' timed out after 2s"; v.failures["slow"] != want {
		t.Errorf("chain_failed message %q, want %q", v.failures["slow"], want)
	}
	t.Logf("2s step timeout on sleep 30 ended after %s", r.elapsed)
}

func TestPipelineTimeout(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		args []string
	}{
		{"timeout_seconds", graph(3, []string{stepJSON("slow", "sleep 30", "")}, ""), nil},
		{"--timeout flag", graph(0, []string{stepJSON("slow", "sleep 30", "")}, ""), []string{"--timeout", "3s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			args := append([]string{"run", "--file", e.writeIR("p.json", tt.doc), "--format", "json", "--backend", "host"}, tt.args...)
			r := e.run(args...)
			if r.code != 124 {
				t.Fatalf("exit %d, want 124; stderr:\n%s", r.code, r.stderr)
			}
			v := view(t, parseEvents(t, r.stdout))
			if v.buildEnd.ExitCode != 124 || v.status["slow"] != 130 {
				t.Errorf("build_end exit %d (want 124), slow step exit %d (want 130: killed, not slept out)",
					v.buildEnd.ExitCode, v.status["slow"])
			}
			t.Logf("3s pipeline timeout on sleep 30 ended after %s", r.elapsed)
		})
	}
}

// SIGINT cancels the build (exit 130) and leaves no process of the step behind.
func TestSIGINT(t *testing.T) {
	e := newEnv(t)
	token := strconv.Itoa(int(time.Now().UnixNano()%900000) + 100000)
	// A background child that ignores SIGTERM, and a foreground sleep; both carry the token.
	cmd := fmt.Sprintf(`sh -c 'trap "" TERM; sleep %s1' & echo ready; sleep %s2`, token, token)
	doc := graph(0, []string{stepJSON("long", cmd, ""), stepJSON("after", "echo never", "")}, `[0,1,"builds_in"]`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host")
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	sc := bufio.NewScanner(stdout)
	sent := false
	for sc.Scan() {
		var ev events.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
		if !sent && ev.StepLog != nil && ev.StepLog.Line == "ready" {
			sent = true
			if err := c.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = c.Wait()
	code := c.ProcessState.ExitCode()
	if code != 130 {
		t.Fatalf("exit %d (%v), want 130", code, err)
	}
	v := view(t, evs)
	if v.status["long"] != 130 || v.buildEnd.ExitCode != 130 {
		t.Errorf("long step exit %d, build_end %d; want 130", v.status["long"], v.buildEnd.ExitCode)
	}
	if diff := cmp.Diff([]string{"step_queued", "step_skipped"}, v.kinds["after"]); diff != "" {
		t.Errorf("after (-want +got):\n%s", diff)
	}
	if left := processesWith(token); len(left) > 0 {
		t.Errorf("processes left after SIGINT: %v", left)
	}
}

// processesWith lists the command lines in the process table that contain s.
func processesWith(s string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		line := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(line, s) {
			out = append(out, d+": "+line)
		}
	}
	return out
}

// The flags of `hm run` work together, and --parallelism 4 never runs more than 4 steps.
func TestFlagsTogether(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "input.txt"), []byte("from-source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	slots := t.TempDir()
	// Each step registers itself in a shared directory while it runs and records how many
	// registrations it saw: that count can only be lower than the true concurrency, never higher.
	probe := `mkdir "$SLOTS/$$"; n=$(ls "$SLOTS" | wc -l); echo "$n" >> "$SLOTS.max"; sleep 0.3; rmdir "$SLOTS/$$"; cat input.txt; echo "img=$IMG"`
	var steps []string
	for i := 0; i < 12; i++ {
		steps = append(steps, stepJSON(fmt.Sprintf("s%02d", i), probe, `"image":"ubuntu:24.04"`))
	}
	steps = append(steps, stepJSON("broken", "exit 5", ""))
	doc := graph(0, steps, "")
	r := e.run("run", "-d", src, "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host",
		"--map-image", "ubuntu:24.04=busybox", "--parallelism", "4", "-k", "-e", "SLOTS="+slots, "-e", "IMG=x")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (one step fails, -k runs the rest); stderr:\n%s", r.code, r.stderr)
	}
	evs := parseEvents(t, r.stdout)
	v := view(t, evs)
	images := map[string]bool{}
	running, maxRunning := 0, 0
	for _, ev := range evs {
		switch {
		case ev.StepStart != nil:
			running++
			maxRunning = max(maxRunning, running)
			if ev.StepStart.Image != nil {
				images[*ev.StepStart.Image] = true
			}
		case ev.StepEnd != nil:
			running--
		}
	}
	if maxRunning > 4 {
		t.Errorf("%d steps ran at once by the event stream, want <= 4", maxRunning)
	}
	if diff := cmp.Diff(map[string]bool{"busybox": true}, images); diff != "" {
		t.Errorf("--map-image not applied (-want +got):\n%s", diff)
	}
	maxSeen := 0
	data, err := os.ReadFile(slots + ".max")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(data)) {
		n, _ := strconv.Atoi(f)
		maxSeen = max(maxSeen, n)
	}
	if maxSeen > 4 || maxSeen < 1 {
		t.Errorf("steps observed %d running at once, want 1..4", maxSeen)
	}
	for i := 0; i < 12; i++ {
		k := fmt.Sprintf("s%02d", i)
		if diff := cmp.Diff([]string{"from-source", "img=x"}, v.lines(k)); diff != "" {
			t.Errorf("%s: -d source or -e env missing (-want +got):\n%s", k, diff)
		}
	}
	if v.status["broken"] != 5 {
		t.Errorf("broken exit %d", v.status["broken"])
	}
}

// After kill -9 of hm mid-step, the next run reconciles: the orphaned step processes die and
// the dead run's work directories and snapshots are removed.
func TestKill9ThenReconcile(t *testing.T) {
	e := newEnv(t)
	token := strconv.Itoa(int(time.Now().UnixNano()%900000) + 100000)
	doc := graph(0, []string{
		stepJSON("parent", "echo p > p.txt", ""),
		stepJSON("long", fmt.Sprintf(`sh -c 'trap "" TERM; sleep %s1' & echo ready; sleep %s2`, token, token), ""),
	}, `[0,1,"builds_in"]`)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": doc})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--format", "json", "--backend", "host")
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"line":"ready"`) {
			break
		}
	}
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if len(processesWith(token)) == 0 || len(hostLeftovers(t, e.stateDir)) == 0 {
		t.Fatalf("kill -9 left nothing to reconcile; the test would prove nothing")
	}
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{stepJSON("ok", "true", "")}, "")})
	if r := e.run("run", "--backend", "host"); r.code != 0 {
		t.Fatalf("next run: exit %d\n%s", r.code, r.stderr)
	}
	if left := processesWith(token); len(left) > 0 {
		t.Errorf("orphaned step processes survived reconcile: %v", left)
	}
	if left := hostLeftovers(t, e.stateDir); len(left) > 0 {
		t.Errorf("reconcile left: %v", left)
	}
}
