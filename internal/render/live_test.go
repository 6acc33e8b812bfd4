package render

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-cmp/cmp"
	"github.com/hinshun/vt10x"

	"github.com/hmci/hm/internal/events"
)

// helperEnv makes the test binary act as a tiny hm: it reads NDJSON events on stdin into an
// events.Queue and renders them live on stderr, which the test connects to a pseudo-terminal.
const helperEnv = "HM_RENDER_PTY_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(ptyHelper(mode))
	}
	os.Exit(m.Run())
}

// ptyHelper renders in mode "live", "verbose" (Verbose) or "hint" (with a LogHint).
func ptyHelper(mode string) int {
	q := events.NewQueue()
	go func() {
		defer q.Close()
		dec := json.NewDecoder(os.Stdin)
		for {
			var ev events.Event
			if err := dec.Decode(&ev); err != nil {
				if !errors.Is(err, io.EOF) {
					fmt.Println("helper:", err)
				}
				return
			}
			q.Publish(ev)
		}
	}()
	opts := Options{Live: true, Verbose: mode == "verbose"}
	if mode == "hint" {
		opts.LogHint = func(runID, key string) string { return "hm logs " + runID + " " + key }
	}
	if err := Run(context.Background(), os.Stderr, q.C(), opts); err != nil {
		fmt.Println("helper:", err)
		return 1
	}
	return 0
}

// screen is a terminal emulator fed from a pty master.
type screen struct {
	vt     vt10x.Terminal
	chunks chan []byte
}

func newScreen(master io.Reader, cols, rows int) *screen {
	s := &screen{vt: vt10x.New(vt10x.WithSize(cols, rows)), chunks: make(chan []byte, 64)}
	go func() {
		defer close(s.chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := master.Read(buf)
			if n > 0 {
				s.chunks <- buf[:n]
			}
			if err != nil { // EIO once the helper has exited and the slave is closed
				return
			}
		}
	}()
	return s
}

// text is the screen, each line right-trimmed, trailing blank lines dropped.
func (s *screen) text() string {
	lines := strings.Split(s.vt.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " \x00")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n") + "\n"
}

// waitFor feeds output into the emulator until ok(screen) holds; with done it also waits for
// the end of the output. The deadline only bounds a broken run; it synchronises nothing.
func (s *screen) waitFor(t *testing.T, what string, done bool, ok func(string) bool) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		txt := s.text()
		if !done && ok(txt) {
			return txt
		}
		select {
		case b, open := <-s.chunks:
			if !open {
				if ok(txt) {
					return txt
				}
				t.Fatalf("output ended before %s; screen:\n%s", what, txt)
			}
			s.vt.Write(b)
		case <-deadline:
			t.Fatalf("no %s on the screen; screen:\n%s", what, txt)
		}
	}
}

func hasLine(re string) func(string) bool {
	r := regexp.MustCompile("(?m)" + re)
	return func(s string) bool { return r.MatchString(s) }
}

func TestLiveViewInPTY(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mode    string
		verbose bool
	}{{name: "default", mode: "live"}, {name: "verbose", mode: "verbose", verbose: true}} {
		t.Run(tt.name, func(t *testing.T) { testLiveView(t, tt.mode, tt.verbose) })
	}
}

// ptyRun is a helper process rendering live into a pseudo-terminal, and its screen.
type ptyRun struct {
	scr   *screen
	send  func(evs ...events.Event)
	stdin io.WriteCloser
	cmd   *exec.Cmd
	out   *bytes.Buffer
}

func startPTYHelper(t *testing.T, mode string, cols, rows int) *ptyRun {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("needs a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := pty.Setsize(master, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "CI" && k != "NO_COLOR" && k != "TERM" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, helperEnv+"="+mode, "TERM=xterm-256color")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var helperOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &helperOut, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	t.Cleanup(func() {
		if t.Failed() && cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	enc := events.NewNDJSONWriter(stdin)
	return &ptyRun{scr: newScreen(master, cols, rows), stdin: stdin, cmd: cmd, out: &helperOut,
		send: func(evs ...events.Event) {
			t.Helper()
			for _, ev := range evs {
				if err := enc.Write(ev); err != nil {
					t.Fatal(err)
				}
			}
		}}
}

// finish ends the stream and returns the final screen once the helper has exited.
func (p *ptyRun) finish(t *testing.T) string {
	t.Helper()
	p.stdin.Close()
	final := p.scr.waitFor(t, "end of output", true, func(string) bool { return true })
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, p.out.String())
	}
	if p.out.Len() > 0 {
		t.Errorf("helper printed on stdout: %s", p.out.String())
	}
	return final
}

func testLiveView(t *testing.T, mode string, verbose bool) {
	const cols, rows = 100, 30
	p := startPTYHelper(t, mode, cols, rows)
	scr, send := p.scr, p.send

	// A running root step: spinner, key, display name and elapsed time.
	send(buildStart(6, 3), queued("t1", "toolchain", "", ":go: install"), started("t1"),
		logLine("t1", "installing go"))
	scr.waitFor(t, "running toolchain line", false,
		hasLine(`^\S toolchain  :go: install  \d+(ms|\.\ds)$`))

	// Children run nested under their builds_in parent, which is now finished.
	send(ended("t1", 0, 2100),
		queued("t2", "test", "toolchain", "go test ./..."),
		queued("t3", "lint", "toolchain", "golangci-lint run"),
		started("t2"), started("t3"),
		logLine("t2", "=== RUN TestAdd"), logLine("t2", "--- FAIL: TestAdd (0.00s)"),
		queued("t4", "deps", "", "go mod download"), cacheHit("t4"), ended("t4", 0, 3))
	mid := scr.waitFor(t, "nested running steps", false, func(s string) bool {
		// The whole frame, status line included: a screen read while a frame is being drawn
		// has only its first lines.
		return hasLine(`^  \S test  go test \./\.\.\.  \d+(ms|\.\ds)$`)(s) &&
			hasLine(`^  \S lint  golangci-lint run  \d+(ms|\.\ds)$`)(s) &&
			hasLine(`^✓ deps  go mod download  cached 3ms$`)(s) &&
			strings.Contains(s, "2 running, 2 of 6 done")
	})
	for _, want := range []string{"✓ toolchain  :go: install  2.1s"} {
		if !strings.Contains(mid, want) {
			t.Errorf("mid-build screen lacks %q:\n%s", want, mid)
		}
	}

	send(ended("t2", 1, 400), chainFailed("t2", "test", 1, "step 'test' failed with exit code 1"),
		ended("t3", 0, 1200),
		queued("t5", "deploy", "test", "./deploy.sh"), skipped("t5"),
		buildEnd(1, 6400))
	final := p.finish(t)

	var above string
	if verbose { // log lines scroll above the progress area, in order, as they arrive
		above = "[toolchain] installing go\n[test] === RUN TestAdd\n[test] --- FAIL: TestAdd (0.00s)\n"
	}
	want := above + `✓ toolchain  :go: install  2.1s
  ✗ test  go test ./...  0.4s exit 1
    ○ deploy  skipped (dependency failed)
  ✓ lint  golangci-lint run  1.2s
✓ deps  go mod download  cached 3ms

── logs: test (exit 1) ──
=== RUN TestAdd
--- FAIL: TestAdd (0.00s)
step 'test' failed with exit code 1

✗ Build failed in 6.4s (1 failed, 1 skipped)
`
	if diff := cmp.Diff(want, final); diff != "" {
		t.Errorf("final screen mismatch (-want +got):\n%s", diff)
	}
}

func TestReportGolden(t *testing.T) {
	for _, name := range []string{"passed", "failed", "timed_out", "canceled"} {
		t.Run(name, func(t *testing.T) {
			b := newBuild(true, time.Now)
			for _, ev := range readEvents(t, name) {
				b.apply(ev)
			}
			var out bytes.Buffer
			if err := writeReport(&out, b, newStyles(&out, true), nil); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "report", name+".golden"), out.Bytes())
		})
	}
}

// A failed step's replay keeps only its last LogTail lines, and says how many it dropped.
func TestReplayIsBounded(t *testing.T) {
	b := newBuild(true, time.Now)
	b.apply(queued("s", "big", "", "big"))
	b.apply(started("s"))
	const n = 5 * LogTail
	for i := range n {
		b.apply(logLine("s", fmt.Sprintf("line %d", i)))
	}
	b.apply(logLine("s", strings.Repeat("é", maxKeptLine))) // cut on a rune boundary
	b.apply(ended("s", 2, 10))
	b.apply(chainFailed("s", "big", 2, "boom"))
	b.apply(buildEnd(1, 20))
	kept := b.steps["s"].logs.all()
	if len(kept) != LogTail {
		t.Fatalf("kept %d lines, want %d", len(kept), LogTail)
	}
	if got, want := kept[0], fmt.Sprintf("line %d", n+1-LogTail); got != want {
		t.Errorf("oldest kept line = %q, want %q", got, want)
	}
	last := kept[len(kept)-1]
	if len(last) > maxKeptLine+len("…") || !strings.HasSuffix(last, "é…") {
		t.Errorf("long line kept as %d bytes ending %q", len(last), last[len(last)-8:])
	}
	var out bytes.Buffer
	if err := writeReport(&out, b, newStyles(&out, true), nil); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("── logs: big (exit 2) ──\n… %d earlier lines not shown\nline %d\n", n+1-LogTail, n+1-LogTail); !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%.400s", want, out.String())
	}
	// Passed steps keep nothing once they end.
	b.apply(queued("p", "ok", "", "ok"))
	b.apply(started("p"))
	b.apply(logLine("p", "fine"))
	b.apply(ended("p", 0, 1))
	if got := b.steps["p"].logs.all(); len(got) != 0 {
		t.Errorf("passed step kept %q", got)
	}
}

// Event constructors for scripted streams.

func buildStart(steps, chains int) events.Event {
	return events.Event{Kind: events.KindBuildStart, BuildStart: &events.BuildStart{
		RunID: "run", Plan: events.Plan{StepCount: steps, ChainCount: chains, DefaultRunner: "host"}}}
}

func queued(id, key, parent, name string) events.Event {
	q := &events.StepQueued{StepID: id, Key: key, DisplayName: name}
	if parent != "" {
		q.ParentKey = &parent
	}
	return events.Event{Kind: events.KindStepQueued, StepQueued: q}
}

func started(id string) events.Event {
	return events.Event{Kind: events.KindStepStart, StepStart: &events.StepStart{StepID: id, Runner: "host"}}
}

func logLine(id, line string) events.Event {
	return events.Event{Kind: events.KindStepLog, StepLog: &events.StepLog{StepID: id, Stream: events.Stdout, Line: line}}
}

func cacheHit(id string) events.Event {
	return events.Event{Kind: events.KindStepCacheHit, StepCacheHit: &events.StepCacheHit{
		StepID: id, Key: "e498eb61", Tag: "sha256:4c1d9e0f1a2b3c4d5e6f"}}
}

func ended(id string, code int, ms int64) events.Event {
	return events.Event{Kind: events.KindStepEnd, StepEnd: &events.StepEnd{StepID: id, ExitCode: code, DurationMS: ms}}
}

func skipped(id string) events.Event {
	return events.Event{Kind: events.KindStepSkipped, StepSkipped: &events.StepSkipped{
		StepID: id, Reason: events.SkipDependencyFailed}}
}

func chainFailed(id, key string, code int, msg string) events.Event {
	return events.Event{Kind: events.KindChainFailed, ChainFailed: &events.ChainFailed{
		FailedStepID: id, FailedStepKey: key, ExitCode: code, Message: msg}}
}

func buildEnd(code int, ms int64) events.Event {
	return events.Event{Kind: events.KindBuildEnd, BuildEnd: &events.BuildEnd{ExitCode: code, DurationMS: ms}}
}

// Colours follow the terminal, and NoColor or NO_COLOR turn them off.
func TestColors(t *testing.T) {
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("needs a pseudo-terminal: %v", err)
	}
	defer master.Close()
	defer tty.Close()
	t.Setenv("TERM", "xterm-256color")
	t.Setenv("CI", "")
	t.Setenv("NO_COLOR", "")
	tests := []struct {
		name     string
		w        io.Writer
		noColor  bool
		noColEnv string
		colored  bool
	}{
		{name: "terminal", w: tty, colored: true},
		{name: "option", w: tty, noColor: true},
		{name: "NO_COLOR", w: tty, noColEnv: "1"},
		{name: "not a terminal", w: &bytes.Buffer{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NO_COLOR", tt.noColEnv)
			got := newStyles(tt.w, tt.noColor).fail.Render("✗")
			if colored := got != "✗"; colored != tt.colored {
				t.Errorf("Render = %q, want colored=%v", got, tt.colored)
			}
		})
	}
}
