package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
)

// remoteIR is a flat IR whose steps are remotetest's fake agent scripts.
func remoteIR(cmds ...string) string {
	var steps []string
	for i, c := range cmds {
		b, _ := json.Marshal(map[string]string{"type": "command", "key": string(rune('a' + i)), "cmd": c})
		steps = append(steps, string(b))
	}
	return `{"version":"0","default_image":"host","steps":[` + strings.Join(steps, ",") + `]}`
}

// hm run --backend remote against a real server (its driver and a fake agent): --format json
// prints build_accepted, then exactly the server's event stream; exit codes per remote.md,
// with the error line and its fix for the refusals.
func TestRemoteRun(t *testing.T) { remoteStores(t, testRemoteRun) }

func testRemoteRun(t *testing.T, st remoteStore) {
	srv := st.testServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	tests := []struct {
		name, server, org, token string
		cmds                     []string
		exit                     int
		stderr                   string // in the error output
	}{
		{name: "passed", cmds: []string{"print hello;print world", "print b"}, exit: 0},
		{name: "failed", cmds: []string{"print oops;exit 2"}, exit: 1},
		{name: "bad token", token: "hmu_wrong", cmds: []string{"print x"}, exit: 3, stderr: "error[unauthorized]"},
		{name: "unknown org", org: "nobody", cmds: []string{"print x"}, exit: 5, stderr: "error[organization_not_found]"},
		{name: "unreachable", server: dead, cmds: []string{"print x"}, exit: 4, stderr: "error[server_unreachable]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.server == "" {
				tc.server = srv.URL + "/"
			}
			if tc.org == "" {
				tc.org = "acme"
			}
			if tc.token == "" {
				tc.token = srv.Token
			}
			e := newEnv(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := e.cmd(ctx, "run", "--file", e.writeIR("p.json", remoteIR(tc.cmds...)), "--backend", "remote",
				"--server", tc.server, "--org", tc.org, "--format", "json")
			c.Env = append(c.Env, "HM_API_TOKEN="+tc.token)
			var out, errb bytes.Buffer
			c.Stdout, c.Stderr = &out, &errb
			code := exitOf(t, c.Run())
			if code != tc.exit {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.exit, out.String(), errb.String())
			}
			if tc.stderr != "" {
				if !strings.Contains(errb.String(), tc.stderr) || !strings.Contains(errb.String(), "  fix    ") {
					t.Errorf("stderr %q, want %s with a fix line", errb.String(), tc.stderr)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			var first events.Event
			if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.BuildAccepted == nil {
				t.Fatalf("first line %q is not build_accepted (%v)", lines[0], err)
			}
			var want []string
			for _, ev := range srv.Stored(t, first.BuildAccepted.Build.RunID) {
				b, err := json.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, string(b))
			}
			if got := lines[1:]; strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("stdout after build_accepted:\n%s\nwant the server's stream:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// Ctrl-C sends one cancelBuild and hm exits 130 once the build ended canceled.
func TestRemoteInterrupt(t *testing.T) { remoteStores(t, testRemoteInterrupt) }

func testRemoteInterrupt(t *testing.T, st remoteStore) {
	srv := st.testServer(t)
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--file", e.writeIR("p.json", remoteIR("print started;block")), "--backend", "remote",
		"--server", srv.URL, "--org", "acme", "--format", "json")
	c.Env = append(c.Env, "HM_API_TOKEN="+srv.Token)
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var kinds []string
	for sc.Scan() {
		var ev events.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		kinds = append(kinds, string(ev.Kind))
		if ev.StepLog != nil && ev.StepLog.Line == "started" {
			c.Process.Signal(syscall.SIGINT)
		}
	}
	code := exitOf(t, c.Wait())
	if code != 130 {
		t.Fatalf("exit %d, want 130; events %v\n%s", code, kinds, errb.String())
	}
	if kinds[len(kinds)-1] != "build_end" {
		t.Errorf("events %v do not end with build_end", kinds)
	}
	if n := srv.Count("PUT ", "/cancel"); n != 1 {
		t.Errorf("%d cancelBuild calls, want 1", n)
	}
}

func exitOf(t *testing.T, err error) int {
	t.Helper()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}
