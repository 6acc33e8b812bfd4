// Package e2e tests hm through its built binary, as a user runs it.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/testutil"
)

var hmBin string

func TestMain(m *testing.M) {
	maxRSSHelper()
	dir, err := os.MkdirTemp("", "hm-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hmBin = filepath.Join(dir, "hm")
	build := exec.Command("go", "build", "-o", hmBin, "./cmd/hm")
	build.Dir = testutil.RepoRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building hm:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished hm invocation.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// env is a fresh state dir and source dir for one test.
type env struct {
	t        *testing.T
	stateDir string
	srcDir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, stateDir: t.TempDir(), srcDir: t.TempDir()}
	return e
}

func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, hmBin, args...)
	c.Dir = e.srcDir
	c.Env = append(os.Environ(), "HM_STATE_DIR="+e.stateDir, "CI=true", "NO_COLOR=1")
	return c
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	start := time.Now()
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("hm %v: %v", args, err)
	}
	return r
}

// writeIR writes an IR document into the source dir and returns its path.
func (e *env) writeIR(name, doc string) string {
	e.t.Helper()
	p := filepath.Join(e.t.TempDir(), name)
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// parseEvents decodes NDJSON output.
func parseEvents(t *testing.T, out string) []events.Event {
	t.Helper()
	var evs []events.Event
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var ev events.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad NDJSON line %q: %v", truncate(sc.Text()), err)
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// stepView is a step's events as kinds, by key.
type stepView struct {
	kinds    map[string][]string
	status   map[string]int // exit code from step_end
	logs     map[string][]events.StepLog
	failures map[string]string // chain_failed message by key
	buildEnd *events.BuildEnd
}

func view(t *testing.T, evs []events.Event) stepView {
	t.Helper()
	v := stepView{kinds: map[string][]string{}, status: map[string]int{}, logs: map[string][]events.StepLog{}, failures: map[string]string{}}
	keys := map[string]string{}
	if len(evs) == 0 || evs[0].Kind != events.KindBuildStart {
		t.Fatalf("first event is not build_start")
	}
	if evs[len(evs)-1].Kind != events.KindBuildEnd {
		t.Fatalf("last event is not build_end")
	}
	for i, ev := range evs {
		if (ev.Kind == events.KindBuildStart && i != 0) || (ev.Kind == events.KindBuildEnd && i != len(evs)-1) {
			t.Fatalf("build_start/build_end at position %d", i)
		}
		if ev.StepQueued != nil {
			keys[ev.StepQueued.StepID] = ev.StepQueued.Key
		}
		id := ev.StepID()
		if id == "" {
			continue
		}
		k, ok := keys[id]
		if !ok {
			t.Fatalf("%s for step %s before its step_queued", ev.Kind, id)
		}
		v.kinds[k] = append(v.kinds[k], string(ev.Kind))
		switch {
		case ev.StepEnd != nil:
			v.status[k] = ev.StepEnd.ExitCode
		case ev.StepLog != nil:
			v.logs[k] = append(v.logs[k], *ev.StepLog)
		case ev.ChainFailed != nil:
			v.failures[k] = ev.ChainFailed.Message
		}
	}
	v.buildEnd = evs[len(evs)-1].BuildEnd
	return v
}

// compact folds step_log runs into one "step_log*" for sequence comparisons.
func compact(kinds []string) []string {
	var out []string
	for _, k := range kinds {
		if k == "step_log" {
			if len(out) > 0 && out[len(out)-1] == "step_log*" {
				continue
			}
			k = "step_log*"
		}
		out = append(out, k)
	}
	return out
}

func (v stepView) lines(key string) []string {
	var out []string
	for _, l := range v.logs[key] {
		out = append(out, l.Line)
	}
	return out
}
