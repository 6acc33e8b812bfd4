package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/buildlog"
)

// hangGuard bounds a test that waits on a process: it ends before the test's deadline, so a
// follow that never ends fails with a message instead of hanging the run.
func hangGuard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-10*time.Second))
	}
	t.Cleanup(cancel)
	return ctx
}

func builds(t *testing.T, e *env) []buildlog.Meta {
	t.Helper()
	r := e.run("builds", "--format", "json")
	if r.code != 0 {
		t.Fatalf("hm builds: exit %d\n%s", r.code, r.stderr)
	}
	var ms []buildlog.Meta
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
		t.Fatalf("hm builds --format json: %v\n%s", err, r.stdout)
	}
	return ms
}

// logLines keeps the `[key] line` lines of step output (not the status lines) of a human log.
func logLines(out string) []string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if regexp.MustCompile(`^\[\w+\] (out|err) `).MatchString(l) {
			keep = append(keep, l)
		}
	}
	return keep
}

// A passing build's output, which the terminal view never shows, is in hm logs afterwards;
// --format json is the very stream hm run printed; hm builds lists the build.
func TestLogsAfterPassingBuild(t *testing.T) {
	e := newEnv(t)
	doc := graph(0, []string{
		// One stream per step: the order of stdout and stderr lines across pipes is not defined.
		stepJSON("first", "echo out one; echo out two", ""),
		stepJSON("second", "echo err three >&2", ""),
	}, `[0,1,"depends_on"]`)
	ir := e.writeIR("demo.json", doc)
	r := e.run("run", "--file", ir, "--format", "json", "--backend", "host")
	if r.code != 0 {
		t.Fatalf("hm run: exit %d\n%s", r.code, r.stderr)
	}
	runID := parseEvents(t, r.stdout)[0].BuildStart.RunID

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{name: "last build", args: []string{"logs"},
			want: []string{"[first] out one", "[first] out two", "[second] err three"}},
		{name: "by id prefix and step", args: []string{"logs", runID[:8], "second"},
			want: []string{"[second] err three"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := e.run(tt.args...)
			if l.code != 0 {
				t.Fatalf("hm %v: exit %d\n%s", tt.args, l.code, l.stderr)
			}
			if diff := cmp.Diff(tt.want, logLines(l.stdout)); diff != "" {
				t.Errorf("hm %v log lines (-want +got):\n%s\nfull output:\n%s", tt.args, diff, l.stdout)
			}
			if tt.args[len(tt.args)-1] == "logs" && !strings.Contains(l.stdout, "✓ Build passed") {
				t.Errorf("hm logs lacks the summary:\n%s", l.stdout)
			}
		})
	}

	j := e.run("logs", "--format", "json")
	if j.code != 0 {
		t.Fatalf("hm logs --format json: exit %d\n%s", j.code, j.stderr)
	}
	if diff := cmp.Diff(r.stdout, j.stdout); diff != "" {
		t.Errorf("replay differs from the stream (-streamed +replayed):\n%s", diff)
	}

	ms := builds(t, e)
	if len(ms) != 1 {
		t.Fatalf("hm builds lists %d builds, want 1", len(ms))
	}
	m := ms[0]
	if m.ID != runID || m.Status != buildlog.Passed || m.ExitCode == nil || *m.ExitCode != 0 ||
		m.Pipeline != "demo" || m.SourceDir != e.srcDir || m.Backend != "host" || m.EndedAt == nil {
		t.Errorf("hm builds: %+v; want id %s, passed, exit 0, pipeline demo, source %s, backend host", m, runID, e.srcDir)
	}
	table := e.run("builds")
	if !regexp.MustCompile(`(?m)^` + buildlog.Short(runID) + `\s+demo\s+passed\s`).MatchString(table.stdout) {
		t.Errorf("hm builds table lacks the build:\n%s", table.stdout)
	}

	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"logs", "nosuchbuild"}, 5, "error[build_not_found]"},
		{[]string{"logs", runID, "nosuchstep"}, 2, "error[usage]"},
	} {
		if l := e.run(tt.args...); l.code != tt.code || !strings.Contains(l.stderr, tt.msg) || !strings.Contains(l.stderr, "  fix ") {
			t.Errorf("hm %v: exit %d, stderr %q; want exit %d with %s and a fix", tt.args, l.code, l.stderr, tt.code, tt.msg)
		}
	}
}

// hm logs -f follows a running build: it prints what the build already wrote, then what it
// writes next, and ends at build_end.
func TestLogsFollowRunningBuild(t *testing.T) {
	e := newEnv(t)
	ctx := hangGuard(t)
	marker := filepath.Join(t.TempDir(), "go")
	doc := graph(0, []string{stepJSON("wait",
		`echo out before; while [ ! -f "$HM_E2E_MARKER" ]; do sleep 0.05; done; echo out after`, "")}, "")
	run := e.cmd(ctx, "run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host",
		"-e", "HM_E2E_MARKER="+marker)
	runOut, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(marker, nil, 0o644) // let the step end whatever failed
		run.Wait()
	}()
	// The record is written before an event is passed on: once hm run printed the line, the
	// record holds it.
	waitLine(t, ctx, bufio.NewReader(runOut), `"line":"out before"`)

	follow := e.cmd(ctx, "logs", "-f")
	fout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	frd := bufio.NewReader(fout)
	waitLine(t, ctx, frd, "[wait] out before")
	if st := builds(t, e); len(st) != 1 || st[0].Status != buildlog.Running {
		t.Errorf("hm builds during the build: %+v, want one running build", st)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(frd)
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Wait(); err != nil {
		t.Fatalf("hm logs -f: %v (context: %v)", err, ctx.Err())
	}
	if diff := cmp.Diff([]string{"[wait] out after"}, logLines(string(rest))); diff != "" || !strings.Contains(string(rest), "✓ Build passed") {
		t.Errorf("followed after the marker (-want +got):\n%s\nfull:\n%s", diff, rest)
	}
	io.Copy(io.Discard, runOut)
	if err := run.Wait(); err != nil {
		t.Fatalf("hm run: %v", err)
	}
}

// waitLine reads rd until a line contains want; the hang guard bounds a broken run.
func waitLine(t *testing.T, ctx context.Context, rd *bufio.Reader, want string) {
	t.Helper()
	got := make(chan error, 1)
	go func() {
		for {
			l, err := rd.ReadString('\n')
			if strings.Contains(l, want) {
				got <- nil
				return
			}
			if err != nil {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("output ended before %q: %v", want, err)
		}
	case <-ctx.Done():
		t.Fatalf("no %q before the hang guard", want)
	}
}

// A build whose hm is killed shows as interrupted, not running forever.
func TestKilledBuildIsInterrupted(t *testing.T) {
	e := newEnv(t)
	ctx := hangGuard(t)
	marker := filepath.Join(t.TempDir(), "go")
	doc := graph(0, []string{stepJSON("wait",
		`echo out before; while [ ! -f "$HM_E2E_MARKER" ]; do sleep 0.05; done`, "")}, "")
	run := e.cmd(ctx, "run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host",
		"-e", "HM_E2E_MARKER="+marker)
	runOut, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(marker, nil, 0o644) // the orphaned step ends too
	waitLine(t, ctx, bufio.NewReader(runOut), `"line":"out before"`)
	run.Process.Signal(syscall.SIGKILL)
	run.Wait()
	st := builds(t, e)
	if len(st) != 1 || st[0].Status != buildlog.Interrupted {
		t.Fatalf("hm builds after kill -9: %+v, want one interrupted build", st)
	}
	l := e.run("logs", "-f")
	if l.code != 0 || !strings.Contains(l.stderr, "was interrupted") || len(logLines(l.stdout)) != 1 {
		t.Errorf("hm logs -f of an interrupted build: exit %d\nstdout:\n%s\nstderr:\n%s", l.code, l.stdout, l.stderr)
	}
}

// Records are pruned when a build starts (HM_BUILDS_KEEP) and by hm builds prune.
func TestBuildsArePruned(t *testing.T) {
	e := newEnv(t)
	ir := e.writeIR("p.json", graph(0, []string{stepJSON("s", "echo out hi", "")}, ""))
	var ids []string
	for range 3 {
		c := e.cmd(context.Background(), "run", "--file", ir, "--format", "json", "--backend", "host")
		c.Env = append(c.Env, "HM_BUILDS_KEEP=2")
		out, err := c.Output()
		if err != nil {
			t.Fatalf("hm run: %v", err)
		}
		ids = append(ids, parseEvents(t, string(out))[0].BuildStart.RunID)
	}
	listed := func() []string {
		var out []string
		for _, m := range builds(t, e) {
			out = append(out, m.ID)
		}
		return out
	}
	if diff := cmp.Diff([]string{ids[2], ids[1]}, listed()); diff != "" {
		t.Errorf("after 3 builds with keep 2 (-want +got):\n%s", diff)
	}
	if r := e.run("builds", "prune", "--keep", "1"); r.code != 0 {
		t.Fatalf("hm builds prune: exit %d\n%s", r.code, r.stderr)
	}
	if diff := cmp.Diff([]string{ids[2]}, listed()); diff != "" {
		t.Errorf("after prune --keep 1 (-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(filepath.Join(e.stateDir, "builds"))
	if len(entries) != 1 {
		t.Errorf("STATE/builds holds %d entries after pruning to 1", len(entries))
	}
}

// A state dir where the record cannot be written does not stop the build: hm warns once.
func TestUnwritableBuildLogWarnsOnce(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(filepath.Join(e.stateDir, "builds"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run("run", "--file", e.writeIR("p.json", graph(0, []string{stepJSON("s", "echo out hi", "")}, "")), "--backend", "host")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
	}
	if n := strings.Count(r.stderr, "log is not kept"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, r.stderr)
	}
}
