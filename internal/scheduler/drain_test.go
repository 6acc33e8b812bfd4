package scheduler

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/vm"
)

// drainVM is fakeVM with vm.Drainer: it records, at each Drain, how many machines had been
// created by then.
type drainVM struct {
	*fakeVM
	mu     sync.Mutex
	drains []int // machines created at each Drain
	runs   []string
}

func (d *drainVM) Drain(run string) {
	d.fakeVM.mu.Lock()
	n := len(d.fakeVM.created)
	d.fakeVM.mu.Unlock()
	d.mu.Lock()
	d.drains = append(d.drains, n)
	d.runs = append(d.runs, run)
	d.mu.Unlock()
}

var _ vm.Drainer = (*drainVM)(nil)

// The backend is told once that the run makes no more machines, and only once every step
// has made the machine of its last possible attempt, or ended without one.
func TestDrainAfterLastMachine(t *testing.T) {
	cases := []struct {
		name     string
		steps    []step
		par      int
		machines int // created in all
	}{
		{name: "fan-out, one slot", steps: fanout(3, "ok"), par: 1, machines: 4},
		{name: "fan-out, wide", steps: fanout(5, "ok"), par: 8, machines: 6},
		// The retried step's second machine comes after its first: no Drain in between.
		{name: "retry", steps: []step{{key: "a", cmd: "ok"}, {key: "b", cmd: "flaky 1 1", retry: &ir.Retry{Limit: 1}, after: []string{"a"}}},
			par: 1, machines: 3},
		// The leaves never make one: the root's failure skips them.
		{name: "skipped", steps: append([]step{{key: "root", cmd: "fail 1"}}, fanout(2, "ok")[1:]...), par: 2, machines: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &drainVM{fakeVM: newFakeVM()}
			pl := build(t, c.steps)
			res := guard(t, func() Result {
				return Run(context.Background(), pl, d, Options{Parallelism: c.par, RunID: "run-1", Publish: (&recorder{}).publish})
			})
			if got := len(d.created); got != c.machines {
				t.Fatalf("%d machines created, want %d (status %s)", got, c.machines, res.Status)
			}
			if len(d.drains) != 1 || d.drains[0] != c.machines || d.runs[0] != "run-1" {
				t.Errorf("Drain calls (machines created at each) %v for runs %v, want one after all %d, for run-1", d.drains, d.runs, c.machines)
			}
		})
	}
}

// runPassing runs steps on a fresh fakeVM at parallelism par and fails the test unless the
// build passes.
func runPassing(t *testing.T, steps []step, par int) *fakeVM {
	t.Helper()
	f := newFakeVM()
	res, _ := runPlan(t, context.Background(), build(t, steps), f, Options{Parallelism: par, RunID: "run-1"})
	if res.Status != BuildPassed {
		t.Fatalf("status %s", res.Status)
	}
	return f
}

// vm.Spec.Last marks the machine the run makes last, as far as the scheduler knows: only
// once every other step has made its last machine, never a machine that a retry may follow.
func TestLastMachineHint(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
		par   int
		want  map[string][]bool // each step's machines, in creation order
	}{
		{name: "one step", steps: []step{{key: "a", cmd: "ok"}}, par: 1, want: map[string][]bool{"a": {true}}},
		{name: "in sequence", steps: []step{{key: "a", cmd: "ok"}, {key: "b", cmd: "ok", after: []string{"a"}}, {key: "c", cmd: "ok", after: []string{"b"}}},
			par: 2, want: map[string][]bool{"a": {false}, "b": {false}, "c": {true}}},
		{name: "fan-out, one slot", steps: fanout(2, "ok"), par: 1,
			want: map[string][]bool{"root": {false}, "leaf0": {false}, "leaf1": {true}}},
		// Both attempts of a step that may retry come last; only its final one is marked.
		{name: "retry", steps: []step{{key: "a", cmd: "ok"}, {key: "b", cmd: "flaky 1 1", retry: &ir.Retry{Limit: 1}, after: []string{"a"}}},
			par: 1, want: map[string][]bool{"a": {false}, "b": {false, true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := runPassing(t, c.steps, c.par)
			got := map[string][]bool{}
			for _, s := range f.created {
				got[s.Owner.StepKey] = append(got[s.Owner.StepKey], s.Last)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("Last per step's machines (-want +got):\n%s", diff)
			}
		})
	}
}

// vm.Spec.Sequential says that no two of the run's steps can run at once: its plan is one
// path, or the parallelism is 1.
func TestSequentialHint(t *testing.T) {
	seq := []step{{key: "a", cmd: "ok"}, {key: "b", cmd: "ok", after: []string{"a"}}, {key: "c", cmd: "ok", parent: "b"}}
	diamond := []step{{key: "a", cmd: "ok"}, {key: "b", cmd: "ok", parent: "a"}, {key: "c", cmd: "ok", after: []string{"a"}},
		{key: "d", cmd: "ok", after: []string{"b", "c"}}}
	cases := []struct {
		name  string
		steps []step
		par   int
		want  bool
	}{
		{"one step", []step{{key: "a", cmd: "ok"}}, 2, true},
		{"a path of both edge kinds", seq, 2, true},
		{"fan-out", fanout(2, "ok"), 2, false},
		{"fan-out, one slot", fanout(2, "ok"), 1, true},
		{"two roots", []step{{key: "a", cmd: "ok"}, {key: "b", cmd: "ok"}}, 2, false},
		{"diamond", diamond, 2, false},
		// The path's edges are there, and one more that adds no concurrency.
		{"path with a shortcut", append(seq[:2:2], step{key: "c", cmd: "ok", after: []string{"a", "b"}}), 2, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := runPassing(t, c.steps, c.par)
			if len(f.created) != len(c.steps) {
				t.Fatalf("%d machines, want %d", len(f.created), len(c.steps))
			}
			for _, s := range f.created {
				if s.Sequential != c.want {
					t.Errorf("step %s's machine: Sequential %v, want %v", s.Owner.StepKey, s.Sequential, c.want)
				}
			}
		})
	}
}
