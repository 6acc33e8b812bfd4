package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// fakeVM is an in-process VM backend for the scheduler's unit tests. A step's command is a
// tiny script of space-separated words:
//
//	ok | fail N | infra | print TEXT | block (until ctx done) | wait NAME (until signal NAME)
//	printenv NAME (its value, in two writes split in the middle) | infraerr TEXT (fails as
//	infra with the error TEXT)
//	signal NAME (closes NAME, then continues) | gate (see gen)
//	flaky N CODE (exits CODE, or fails as infra when CODE is "infra", on the command's
//	first N runs in this backend; then continues)
type fakeVM struct {
	mu        sync.Mutex
	created   []vm.Spec
	commits   map[string]bool // snapshot -> ephemeral
	removed   []string
	resolved  []string
	running   int
	maxRun    int
	signals   map[string]chan struct{}
	gen       *gate
	nextSnap  int
	missImage string
	slowImage string         // ResolveImage fires REF-resolving, then waits for REF-release
	runs      map[string]int // runs of each command, for flaky
}

func newFakeVM() *fakeVM {
	return &fakeVM{commits: map[string]bool{}, signals: map[string]chan struct{}{}, runs: map[string]int{}}
}

func (f *fakeVM) signal(name string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.signals[name]
	if !ok {
		ch = make(chan struct{})
		f.signals[name] = ch
	}
	return ch
}

func (f *fakeVM) Name() string { return "fake" }

var errNoImage = errors.New("no such image")

// fire closes signal name unless it is closed already.
func (f *fakeVM) fire(name string) {
	ch := f.signal(name)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (f *fakeVM) ResolveImage(ctx context.Context, ref string) (string, error) {
	f.mu.Lock()
	f.resolved = append(f.resolved, ref)
	slow := ref == f.slowImage
	f.mu.Unlock()
	if ref == f.missImage {
		return "", fmt.Errorf("%w %q", errNoImage, ref)
	}
	if slow {
		// A slow pull: says it has started, then lasts until signal REF-release.
		f.fire(ref + "-resolving")
		select {
		case <-f.signal(ref + "-release"):
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "id:" + ref, nil
}

func (f *fakeVM) Create(_ context.Context, spec vm.Spec) (vm.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, spec)
	return &fakeMachine{f: f, spec: spec}, nil
}

func (f *fakeVM) SnapshotExists(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.commits[id]
	return ok, nil
}

func (f *fakeVM) RemoveSnapshot(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	return nil
}

func (f *fakeVM) Reconcile(context.Context) error { return nil }

func (f *fakeVM) PruneSnapshots(context.Context, func(string) bool) ([]string, error) {
	return nil, nil
}

func (f *fakeVM) SnapshotSize(context.Context, string) (int64, error) { return 0, nil }

type fakeMachine struct {
	f    *fakeVM
	spec vm.Spec
}

func (m *fakeMachine) Inject(context.Context, *source.Tree) error { return nil }

func (m *fakeMachine) Run(ctx context.Context, stdout, _ io.Writer) (int, error) {
	f := m.f
	f.mu.Lock()
	f.running++
	f.runs[m.spec.Cmd]++
	run := f.runs[m.spec.Cmd]
	if f.running > f.maxRun {
		f.maxRun = f.running
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	words := strings.Fields(m.spec.Cmd)
	for len(words) > 0 {
		w := words[0]
		words = words[1:]
		arg := ""
		if len(words) > 0 && w != "ok" && w != "block" && w != "infra" && w != "gate" {
			arg, words = words[0], words[1:]
		}
		switch w {
		case "ok":
		case "fail":
			n, _ := strconv.Atoi(arg)
			return n, nil
		case "infra":
			return 0, errors.New("daemon went away")
		case "print":
			fmt.Fprintln(stdout, arg)
		case "printenv":
			v := ""
			for _, kv := range m.spec.Env {
				if k, val, _ := strings.Cut(kv, "="); k == arg {
					v = val
				}
			}
			fmt.Fprint(stdout, "val="+v[:len(v)/2])
			fmt.Fprintln(stdout, v[len(v)/2:])
		case "infraerr":
			return 0, errors.New(arg)
		case "block":
			<-ctx.Done()
			return 0, ctx.Err()
		case "wait":
			select {
			case <-f.signal(arg):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		case "signal":
			f.fire(arg)
		case "flaky":
			n, _ := strconv.Atoi(arg)
			code := words[0]
			words = words[1:]
			if run <= n {
				if code == "infra" {
					return 0, errors.New("daemon went away")
				}
				c, _ := strconv.Atoi(code)
				return c, nil
			}
		case "gate":
			if err := f.gen.wait(ctx); err != nil {
				return 0, err
			}
		}
	}
	return 0, nil
}

func (m *fakeMachine) Commit(_ context.Context, ephemeral bool) (string, error) {
	f := m.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextSnap++
	id := fmt.Sprintf("snap%d", f.nextSnap)
	f.commits[id] = ephemeral
	return id, nil
}

func (m *fakeMachine) Destroy(context.Context) error { return nil }

// gate releases waiters in generations of exactly n: a step passes only once n steps wait
// together, so a scheduler that runs fewer than n at once deadlocks the test.
type gate struct {
	mu      sync.Mutex
	n       int
	waiting int
	ch      chan struct{}
}

func newGate(n int) *gate { return &gate{n: n, ch: make(chan struct{})} }

func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	g.waiting++
	ch := g.ch
	if g.waiting == g.n {
		close(g.ch)
		g.ch = make(chan struct{})
		g.waiting = 0
	}
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fakeCache is an in-memory Cache.
type fakeCache struct {
	mu         sync.Mutex
	entries    map[string]string
	lookups    int
	registered []string
	// preempt, when set, is registered by "another run" before ours.
	preempt map[string]string
	// missErr, when set, is Lookup's error on a miss.
	missErr error
}

func (c *fakeCache) Lookup(_ context.Context, q CacheQuery) (CacheResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups++
	s, ok := c.entries[q.BaseImage+"/"+q.Key]
	if !ok && c.missErr != nil {
		return CacheResult{}, c.missErr
	}
	return CacheResult{Hit: ok, Snapshot: s, Entry: "id-" + q.Key, Explain: "no entry"}, nil
}

func (c *fakeCache) Register(_ context.Context, q CacheQuery, snap string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := q.BaseImage + "/" + q.Key
	if p, ok := c.preempt[k]; ok {
		c.entries[k] = p
		return p, nil
	}
	c.entries[k] = snap
	c.registered = append(c.registered, q.StepKey)
	return snap, nil
}
