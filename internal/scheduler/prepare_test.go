package scheduler

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// prepVM is the fake backend with the vm.Preparer ability. It accounts for every machine
// (made, injected, run, destroyed) so the tests can check that preparing ahead never runs a
// command outside a slot, never leaves a machine behind and gives the step exactly what
// Create would have. Prepare fires signal "prepared".
type prepVM struct {
	*fakeVM
	failPrepare  bool
	failReinject bool // children then inject as usual

	mu       sync.Mutex
	machines []*prepMachine
	waiting  int // prepared machines not yet run
	maxWait  int
}

type prepMachine struct {
	*fakeMachine
	p                  *prepVM
	prepared           bool
	injects, reinjects int
	ran, destroyed     bool
}

func newPrepVM() *prepVM { return &prepVM{fakeVM: newFakeVM()} }

func (p *prepVM) Create(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	m, _ := p.fakeVM.Create(ctx, spec)
	return p.track(m.(*fakeMachine), false), nil
}

func (p *prepVM) Prepare(_ context.Context, spec vm.Spec) (vm.Machine, error) {
	defer p.fire("prepared")
	if p.failPrepare {
		return nil, errors.New("daemon busy")
	}
	return p.track(&fakeMachine{f: p.fakeVM, spec: spec}, true), nil
}

func (p *prepVM) track(fm *fakeMachine, prepared bool) *prepMachine {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := &prepMachine{fakeMachine: fm, p: p, prepared: prepared}
	p.machines = append(p.machines, m)
	if prepared {
		p.waiting++
		p.maxWait = max(p.maxWait, p.waiting)
	}
	return m
}

func (m *prepMachine) Inject(context.Context, *source.Tree) error {
	m.p.mu.Lock()
	m.injects++
	m.p.mu.Unlock()
	return nil
}

func (m *prepMachine) Reinject(context.Context, *source.Tree) error {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	if !m.ran || m.p.failReinject {
		return errors.New("reinject before Run, or failing")
	}
	m.reinjects++
	return nil
}

func (m *prepMachine) Run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	m.p.mu.Lock()
	m.ran = true
	if m.prepared {
		m.p.waiting--
	}
	m.p.mu.Unlock()
	return m.fakeMachine.Run(ctx, stdout, stderr)
}

func (m *prepMachine) Destroy(context.Context) error {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	if m.prepared && !m.ran && !m.destroyed {
		m.p.waiting--
	}
	m.destroyed = true
	return nil
}

// fanout is a root and n leaves building in it, each leaf running cmd.
func fanout(n int, cmd string) []step {
	steps := []step{{key: "root", cmd: "ok"}}
	for i := range n {
		steps = append(steps, step{key: "leaf" + strconv.Itoa(i), cmd: cmd, parent: "root"})
	}
	return steps
}

func runPrep(t *testing.T, ctx context.Context, steps []step, p *prepVM, par int) Result {
	t.Helper()
	return runPrepOpts(t, ctx, steps, p, Options{Parallelism: par})
}

func runPrepOpts(t *testing.T, ctx context.Context, steps []step, p *prepVM, opts Options) Result {
	t.Helper()
	pl := build(t, steps)
	rec := &recorder{}
	opts.Publish, opts.Workspace = rec.publish, &source.Tree{}
	return guard(t, func() Result { return Run(ctx, pl, p, opts) })
}

// Leaves waiting for the one slot get their machines prepared (and the workspace injected)
// meanwhile, from the root's snapshot with attempt 1's spec; the slot still bounds the
// commands, at most one prepared machine waits per slot, and every machine is gone at the end.
func TestPrepareWhileWaiting(t *testing.T) {
	p := newPrepVM()
	p.failReinject = true // every machine is injected
	// The first leaf to run holds the slot until another has been prepared.
	res := runPrep(t, context.Background(), fanout(4, "wait prepared"), p, 1)
	if res.Status != BuildPassed {
		t.Fatalf("status %s: %v", res.Status, res.Steps)
	}
	if p.maxRun != 1 {
		t.Errorf("max concurrent commands = %d, want 1", p.maxRun)
	}
	if p.maxWait > 1 {
		t.Errorf("%d prepared machines waited at once, want at most 1 (the parallelism)", p.maxWait)
	}
	var prepared, created int
	for _, m := range p.machines {
		if m.prepared {
			prepared++
			if m.spec.Parent == "" || !slices.Contains(m.spec.Env, "HM_ATTEMPT=1") || m.spec.Cmd != "wait prepared" {
				t.Errorf("prepared spec %+v: want the leaf's command from the root's snapshot, attempt 1", m.spec)
			}
		} else {
			created++
		}
		if !m.ran || !m.destroyed || m.injects != 1 {
			t.Errorf("machine %+v: want run, destroyed, injected once", *m)
		}
	}
	if prepared == 0 || prepared+created != 5 {
		t.Errorf("%d prepared and %d created machines, want at least 1 prepared and 5 in all", prepared, created)
	}
}

// A prepared machine whose step never gets to run (the build is canceled while it waits) is
// destroyed without running.
func TestPreparedMachineOfCanceledStep(t *testing.T) {
	p := newPrepVM()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-p.signal("prepared")
		cancel()
	}()
	res := runPrep(t, ctx, fanout(3, "block"), p, 1)
	if res.Status != BuildCanceled {
		t.Fatalf("status %s: %v", res.Status, res.Steps)
	}
	n := 0
	for _, m := range p.machines {
		if !m.destroyed {
			t.Errorf("machine %+v left", *m)
		}
		if m.prepared {
			n++
			if m.ran {
				t.Errorf("prepared machine ran after the cancel: %+v", *m)
			}
		}
	}
	if n == 0 {
		t.Error("no machine was prepared")
	}
}

// A failed Prepare only costs the head start: the step creates its machine in its slot.
func TestPrepareFails(t *testing.T) {
	p := newPrepVM()
	p.failPrepare = true
	res := runPrep(t, context.Background(), fanout(3, "wait prepared"), p, 1)
	if res.Status != BuildPassed {
		t.Fatalf("status %s: %v", res.Status, res.Steps)
	}
	if len(p.machines) != 4 {
		t.Errorf("%d machines, want 4 (all created)", len(p.machines))
	}
	for _, m := range p.machines {
		if m.prepared || !m.ran || !m.destroyed {
			t.Errorf("machine %+v: want created, run, destroyed", *m)
		}
	}
}

// Preparing ahead never lets more than the parallelism run at once, nor stalls the build
// below it (the gate deadlocks unless par steps run together).
func TestParallelismBoundPreparing(t *testing.T) {
	for _, par := range []int{1, 3} {
		t.Run(strconv.Itoa(par), func(t *testing.T) {
			p := newPrepVM()
			p.gen = newGate(par)
			var steps []step
			for i := range par * 5 {
				steps = append(steps, step{key: "s" + strconv.Itoa(i), cmd: "gate"})
			}
			res := runPrep(t, context.Background(), steps, p, par)
			if res.Status != BuildPassed {
				t.Fatalf("status %s", res.Status)
			}
			if p.maxRun != par {
				t.Errorf("max concurrent = %d, want %d", p.maxRun, par)
			}
			// Prepared, not yet run: at most par waiting for a slot (their turns) plus
			// par that took one and are about to run (slotPreparing's doc). Without the
			// turns, the 5·par steps of a round would all prepare while par run.
			if p.maxWait > 2*par {
				t.Errorf("%d prepared machines waited at once, want at most %d", p.maxWait, 2*par)
			}
		})
	}
}

// A fork point's ephemeral snapshot gets the workspace overlaid once after its command
// (vm.Reinjector), and its children inject nothing; a cached fork point's snapshot is left as
// the step made it (a later run's source differs), and its children inject as usual.
func TestReinjectAtForkPoint(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		cached                     bool
		rootReinjects, leafInjects int
	}{
		{"ephemeral", false, 1, 0},
		{"cached", true, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPrepVM()
			steps := fanout(3, "ok")
			steps[0].cache = tc.cached
			opts := Options{Parallelism: 4}
			if tc.cached {
				opts.Keys, opts.Cache = keysFor(steps), &fakeCache{entries: map[string]string{}}
			}
			if res := runPrepOpts(t, context.Background(), steps, p, opts); res.Status != BuildPassed {
				t.Fatalf("status %s: %v", res.Status, res.Steps)
			}
			for _, m := range p.machines {
				switch {
				case m.spec.Cmd != "ok":
				case m.spec.Parent == "":
					if m.injects != 1 || m.reinjects != tc.rootReinjects {
						t.Errorf("root: %d injects, %d reinjects, want 1 and %d", m.injects, m.reinjects, tc.rootReinjects)
					}
				case m.injects != tc.leafInjects || m.reinjects != 0:
					t.Errorf("leaf: %d injects, %d reinjects, want %d and 0", m.injects, m.reinjects, tc.leafInjects)
				}
			}
		})
	}
}
