package scheduler

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
)

// recorder collects events; it is the Publish func of the tests.
type recorder struct {
	mu  sync.Mutex
	evs []events.Event
	on  func(events.Event)
}

func (r *recorder) publish(e events.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	on := r.on
	r.mu.Unlock()
	if on != nil {
		on(e)
	}
}

// byStep returns the kinds of each step's events, keyed by step key.
func (r *recorder) byStep() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := map[string]string{}
	out := map[string][]string{}
	for _, e := range r.evs {
		if e.StepQueued != nil {
			keys[e.StepQueued.StepID] = e.StepQueued.Key
		}
		if id := e.StepID(); id != "" {
			k := keys[id]
			kind := string(e.Kind)
			if e.StepSkipped != nil {
				kind += ":" + e.StepSkipped.Reason
			}
			if e.StepEnd != nil {
				kind += ":" + itoa(e.StepEnd.ExitCode)
			}
			out[k] = append(out[k], kind)
		}
	}
	return out
}

func itoa(n int) string { return strconv.Itoa(n) }

type step struct {
	key, cmd string
	parent   string   // builds_in
	after    []string // depends_on
	timeout  time.Duration
	cache    bool
	retry    *ir.Retry
	secrets  []string
}

// build makes a plan from a compact description.
func build(t *testing.T, steps []step) *plan.Plan {
	t.Helper()
	p := &ir.Pipeline{Version: "0", DefaultImage: "img"}
	idx := map[string]int{}
	for i, s := range steps {
		idx[s.key] = i
		st := ir.Step{Key: s.key, Cmd: s.cmd, Retry: s.retry, Secrets: s.secrets}
		if s.cache {
			st.Cache = &ir.Cache{Policy: ir.PolicyForever}
		}
		p.Nodes = append(p.Nodes, ir.Node{Step: st, Env: map[string]string{}})
	}
	for i, s := range steps {
		if s.parent != "" {
			p.Edges = append(p.Edges, ir.Edge{From: idx[s.parent], To: i, Kind: ir.BuildsIn})
		}
		for _, a := range s.after {
			p.Edges = append(p.Edges, ir.Edge{From: idx[a], To: i, Kind: ir.DependsOn})
		}
	}
	pl := plan.New(p)
	for i, s := range steps {
		pl.Steps[i].Timeout = s.timeout
	}
	return pl
}

func keysFor(steps []step) []string {
	var out []string
	for _, s := range steps {
		if s.cache {
			out = append(out, "key-"+s.key)
		} else {
			out = append(out, "")
		}
	}
	return out
}

func runPlan(t *testing.T, ctx context.Context, pl *plan.Plan, f *fakeVM, opts Options) (Result, *recorder) {
	t.Helper()
	rec := &recorder{}
	if opts.Publish == nil {
		opts.Publish = rec.publish
	}
	if opts.Parallelism == 0 {
		opts.Parallelism = 4
	}
	res := guard(t, func() Result { return Run(ctx, pl, f, opts) })
	return res, rec
}

// hangLimit bounds one build in these tests. The fake backend does no work, so a build still
// running after it is deadlocked (a step never released, a completion never received, a slot
// never freed): failing here, with every goroutine's stack, names the test and the stuck
// goroutines in seconds instead of at go test's 10-minute timeout.
const hangLimit = 10 * time.Second

// guard runs build and fails the test with a goroutine dump if it does not return within
// hangLimit (or before the test binary's own deadline, if that is sooner).
func guard(t *testing.T, build func() Result) Result {
	t.Helper()
	limit := hangLimit
	if d, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(d)*9/10)
	}
	done := make(chan Result, 1)
	go func() { done <- build() }()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case res := <-done:
		return res
	case <-timer.C:
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("build did not end within %s: deadlocked? goroutines:\n%s", limit, buf)
		return Result{}
	}
}

func statuses(pl *plan.Plan, res Result) map[string]Status {
	out := map[string]Status{}
	for i, s := range res.Steps {
		out[pl.Steps[i].Key] = s
	}
	return out
}

func TestOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		steps     []step
		keepGoing bool
		timeout   time.Duration
		want      BuildStatus
		statuses  map[string]Status
		events    map[string][]string
	}{
		{
			name:     "all pass",
			steps:    []step{{key: "a", cmd: "print hi"}, {key: "b", cmd: "ok", parent: "a"}},
			want:     BuildPassed,
			statuses: map[string]Status{"a": Passed, "b": Passed},
			events: map[string][]string{
				"a": {"step_queued", "step_start", "step_log", "step_end:0"},
				"b": {"step_queued", "step_start", "step_end:0"},
			},
		},
		{
			name: "fail-fast cancels a running sibling and skips the rest",
			steps: []step{
				{key: "sleeper", cmd: "signal started block"},
				{key: "bad", cmd: "wait started fail 3"},
				{key: "child", cmd: "ok", parent: "bad"},
			},
			want:     BuildFailed,
			statuses: map[string]Status{"sleeper": Canceled, "bad": Failed, "child": Skipped},
			events: map[string][]string{
				"sleeper": {"step_queued", "step_start", "step_end:130"},
				"bad":     {"step_queued", "step_start", "step_end:3", "chain_failed"},
				"child":   {"step_queued", "step_skipped:dependency_failed"},
			},
		},
		{
			// "slow" can only finish after the failure of "bad" has been processed (its
			// dependent skipped), so it passes only if keep-going did not cancel it.
			name: "keep-going lets independent branches finish",
			steps: []step{
				{key: "slow", cmd: "wait go ok"},
				{key: "bad", cmd: "fail 1"},
				{key: "after-bad", cmd: "ok", after: []string{"bad"}},
				{key: "grandchild", cmd: "ok", parent: "after-bad"},
			},
			keepGoing: true,
			want:      BuildFailed,
			statuses:  map[string]Status{"slow": Passed, "bad": Failed, "after-bad": Skipped, "grandchild": Skipped},
		},
		{
			name:     "step timeout is 124 and a failure",
			steps:    []step{{key: "t", cmd: "block", timeout: 20 * time.Millisecond}},
			want:     BuildFailed,
			statuses: map[string]Status{"t": TimedOut},
			events:   map[string][]string{"t": {"step_queued", "step_start", "step_end:124", "chain_failed"}},
		},
		{
			name:      "pipeline timeout wins over failure",
			steps:     []step{{key: "bad", cmd: "fail 1"}, {key: "slow", cmd: "block"}},
			keepGoing: true,
			timeout:   30 * time.Millisecond,
			want:      BuildTimedOut,
			statuses:  map[string]Status{"bad": Failed, "slow": Canceled},
		},
		{
			name:     "infrastructure error fails the step",
			steps:    []step{{key: "x", cmd: "infra"}, {key: "y", cmd: "ok", parent: "x"}},
			want:     BuildFailed,
			statuses: map[string]Status{"x": Failed, "y": Skipped},
			events: map[string][]string{
				// retried once by default: each attempt logs why it could not run
				"x": {"step_queued", "step_start", "step_log", "step_retry", "step_log", "step_end:-1", "chain_failed"},
				"y": {"step_queued", "step_skipped:dependency_failed"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := build(t, tt.steps)
			f := newFakeVM()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			rec := &recorder{on: func(e events.Event) {
				if e.StepSkipped != nil {
					once.Do(func() { close(f.signal("go")) })
				}
			}}
			res, _ := runPlan(t, ctx, pl, f, Options{KeepGoing: tt.keepGoing, Timeout: tt.timeout, Publish: rec.publish})
			if res.Status != tt.want {
				t.Errorf("build status = %s, want %s", res.Status, tt.want)
			}
			if diff := cmp.Diff(tt.statuses, statuses(pl, res)); diff != "" {
				t.Errorf("step statuses (-want +got):\n%s", diff)
			}
			if tt.events != nil {
				got := rec.byStep()
				if diff := cmp.Diff(tt.events, got); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
			}
			checkBuildEvents(t, rec, res)
		})
	}
}

// checkBuildEvents asserts one build_start first and one build_end last with the exit code.
func checkBuildEvents(t *testing.T, rec *recorder, res Result) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.evs) < 2 || rec.evs[0].Kind != events.KindBuildStart || rec.evs[len(rec.evs)-1].Kind != events.KindBuildEnd {
		t.Fatalf("build_start/build_end not first/last")
	}
	for _, e := range rec.evs[1 : len(rec.evs)-1] {
		if e.Kind == events.KindBuildStart || e.Kind == events.KindBuildEnd {
			t.Fatalf("extra %s", e.Kind)
		}
	}
	if got := rec.evs[len(rec.evs)-1].BuildEnd.ExitCode; got != res.Status.ExitCode() {
		t.Errorf("build_end exit %d, want %d", got, res.Status.ExitCode())
	}
}
