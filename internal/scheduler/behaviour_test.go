package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
)

// A step is released as soon as its own predecessors end, not when a "level" ends: b (after a)
// runs while c, a root like a, is still running, and c only ends once b has run.
func TestDependencyDrivenRelease(t *testing.T) {
	pl := build(t, []step{
		{key: "a", cmd: "ok"},
		{key: "b", cmd: "signal b-ran", after: []string{"a"}},
		{key: "c", cmd: "wait b-ran"},
	})
	res, _ := runPlan(t, context.Background(), pl, newFakeVM(), Options{})
	if res.Status != BuildPassed {
		t.Fatalf("status %s: %v", res.Status, res.Steps)
	}
}

func TestParallelismBound(t *testing.T) {
	for _, par := range []int{1, 3, 4} {
		t.Run(strconv.Itoa(par), func(t *testing.T) {
			var steps []step
			for i := 0; i < par*5; i++ {
				steps = append(steps, step{key: "s" + strconv.Itoa(i), cmd: "gate"})
			}
			f := newFakeVM()
			// Every step waits until par steps wait together: the build deadlocks unless par
			// run at once, and maxRun shows it never exceeds par.
			f.gen = newGate(par)
			res, _ := runPlan(t, context.Background(), build(t, steps), f, Options{Parallelism: par})
			if res.Status != BuildPassed {
				t.Fatalf("status %s", res.Status)
			}
			if f.maxRun != par {
				t.Errorf("max concurrent = %d, want %d", f.maxRun, par)
			}
		})
	}
}

func TestContinueOnFailureBarrier(t *testing.T) {
	// The flat form of the shared wait-barrier fixture, plus a step after a plain barrier.
	p, err := ir.Parse([]byte(`{"version":"0","default_image":"busybox","steps":[
		{"type":"command","key":"compile","cmd":"ok"},
		{"type":"command","key":"unit","cmd":"ok","builds_in":"compile"},
		{"type":"command","key":"flaky","cmd":"fail 1","builds_in":"compile"},
		{"type":"wait","continue_on_failure":true},
		{"type":"command","key":"notify","cmd":"ok"},
		{"type":"wait"},
		{"type":"command","key":"after-notify","cmd":"ok"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, keepGoing := range []bool{false, true} {
		pl := plan.New(p)
		res, rec := runPlan(t, context.Background(), pl, newFakeVM(), Options{KeepGoing: keepGoing, Parallelism: 1})
		want := map[string]Status{"compile": Passed, "flaky": Failed, "notify": Passed, "after-notify": Passed}
		got := statuses(pl, res)
		delete(got, "unit") // fail-fast may cancel or skip it depending on order; covered elsewhere
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("keepGoing=%v (-want +got):\n%s", keepGoing, diff)
		}
		if res.Status != BuildFailed {
			t.Errorf("keepGoing=%v: build %s, want failed", keepGoing, res.Status)
		}
		if res.Err != nil {
			t.Errorf("keepGoing=%v: Result.Err = %v; a step's exit code is not an infrastructure error", keepGoing, res.Err)
		}
		checkBuildEvents(t, rec, res)
	}
}

func TestUserCancel(t *testing.T) {
	pl := build(t, []step{
		{key: "run", cmd: "signal started block"},
		{key: "next", cmd: "ok", parent: "run"},
		{key: "barrier-like", cmd: "ok", after: []string{"run"}},
	})
	f := newFakeVM()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-f.signal("started")
		cancel()
	}()
	res, rec := runPlan(t, ctx, pl, f, Options{})
	if res.Status != BuildCanceled || res.Status.ExitCode() != 130 {
		t.Errorf("status %s (exit %d), want canceled/130", res.Status, res.Status.ExitCode())
	}
	want := map[string]Status{"run": Canceled, "next": Skipped, "barrier-like": Skipped}
	if diff := cmp.Diff(want, statuses(pl, res)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	checkBuildEvents(t, rec, res)
}

func TestCache(t *testing.T) {
	steps := []step{
		{key: "root", cmd: "ok", cache: true},
		{key: "mid", cmd: "ok", parent: "root", cache: true},
		{key: "leaf1", cmd: "ok", parent: "mid"},
		{key: "leaf2", cmd: "fail 2", parent: "mid"},
	}
	t.Run("miss then hit", func(t *testing.T) {
		c := &fakeCache{entries: map[string]string{}}
		f := newFakeVM()
		opts := Options{Keys: keysFor(steps), Cache: c, KeepGoing: true}
		res, _ := runPlan(t, context.Background(), build(t, steps), f, opts)
		if res.Status != BuildFailed {
			t.Fatalf("status %s", res.Status)
		}
		if diff := cmp.Diff([]string{"mid", "root"}, sorted(c.registered)); diff != "" {
			t.Errorf("registered (-want +got):\n%s", diff)
		}
		// Only cached steps commit; leaves (uncached, no children) and failures commit nothing.
		if len(f.commits) != 2 {
			t.Errorf("commits = %v, want 2 cached", f.commits)
		}
		if len(f.removed) != 0 {
			t.Errorf("cached snapshots removed: %v", f.removed)
		}

		f2 := newFakeVM()
		pl := build(t, steps)
		res, rec := runPlan(t, context.Background(), pl, f2, opts)
		want := map[string]Status{"root": CacheHit, "mid": CacheHit, "leaf1": Passed, "leaf2": Failed}
		if diff := cmp.Diff(want, statuses(pl, res)); diff != "" {
			t.Errorf("second run (-want +got):\n%s", diff)
		}
		if len(f2.created) != 2 {
			t.Errorf("second run created %d machines, want 2 (the leaves)", len(f2.created))
		}
		for _, s := range f2.created {
			if s.Parent != c.entries["id:img/key-mid"] {
				t.Errorf("leaf started from %q, want mid's cached snapshot", s.Parent)
			}
		}
		ev := rec.byStep()
		if diff := cmp.Diff([]string{"step_queued", "step_cache_hit", "step_end:0"}, ev["root"]); diff != "" {
			t.Errorf("cache hit events (-want +got):\n%s", diff)
		}
	})
	t.Run("a cache that cannot keep results fails a miss unrun, a hit still hits", func(t *testing.T) {
		c := &fakeCache{entries: map[string]string{"id:img/key-root": "snap-root"},
			missErr: fmt.Errorf("state dir full: %w", errs.ErrUnavailable)}
		f := newFakeVM()
		pl := build(t, steps[:2])
		res, _ := runPlan(t, context.Background(), pl, f, Options{Keys: keysFor(steps[:2]), Cache: c})
		want := map[string]Status{"root": CacheHit, "mid": Failed}
		if diff := cmp.Diff(want, statuses(pl, res)); diff != "" {
			t.Errorf("statuses (-want +got):\n%s", diff)
		}
		if len(f.created) != 0 {
			t.Errorf("created %d machines, want none: the missed step must not run", len(f.created))
		}
		if !errors.Is(res.Err, errs.ErrUnavailable) {
			t.Errorf("build error %v, want the cache's", res.Err)
		}
	})
	t.Run("warnings on a run, the entry id on a hit", func(t *testing.T) {
		c := &fakeCache{entries: map[string]string{}}
		warn := [][]string{{`cache on_change path "go.summ" matches nothing`}}
		opts := Options{Keys: keysFor(steps[:1]), Cache: c, Warnings: warn}
		lines := func(rec *recorder) []string {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var out []string
			for _, e := range rec.evs {
				if e.StepLog != nil {
					out = append(out, e.StepLog.Line)
				}
			}
			return out
		}
		hitEntry := func(rec *recorder) string {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, e := range rec.evs {
				if e.StepCacheHit != nil && e.StepCacheHit.Entry != nil {
					return *e.StepCacheHit.Entry
				}
			}
			return ""
		}
		_, rec := runPlan(t, context.Background(), build(t, steps[:1]), newFakeVM(), opts)
		want := []string{"hm: cache miss: no entry", `hm: warning: cache on_change path "go.summ" matches nothing`}
		if diff := cmp.Diff(want, lines(rec)[:2]); diff != "" {
			t.Errorf("first run's log (-want +got):\n%s", diff)
		}
		_, rec = runPlan(t, context.Background(), build(t, steps[:1]), newFakeVM(), opts)
		if got := lines(rec); len(got) != 0 {
			t.Errorf("a hit logged %q", got)
		}
		if got := hitEntry(rec); got != "id-key-root" {
			t.Errorf("step_cache_hit entry %q, want the cache's id", got)
		}
	})
	t.Run("no-cache runs everything and registers nothing", func(t *testing.T) {
		c := &fakeCache{entries: map[string]string{"id:img/key-root": "old"}}
		f := newFakeVM()
		res, _ := runPlan(t, context.Background(), build(t, steps), f, Options{Keys: keysFor(steps), Cache: c, NoCache: true, KeepGoing: true})
		if c.lookups != 0 || len(c.registered) != 0 {
			t.Errorf("lookups %d, registered %v", c.lookups, c.registered)
		}
		if len(f.created) != 4 {
			t.Errorf("created %d machines, want 4", len(f.created))
		}
		// root and mid have children: ephemeral snapshots, all removed by the end.
		if diff := cmp.Diff(ephemeral(f), sorted(f.removed)); diff != "" || len(f.removed) != 2 {
			t.Errorf("ephemeral snapshots not removed (-committed +removed):\n%s", diff)
		}
		if res.Status != BuildFailed {
			t.Errorf("status %s", res.Status)
		}
	})
	t.Run("concurrent registration keeps the winner", func(t *testing.T) {
		c := &fakeCache{entries: map[string]string{}, preempt: map[string]string{"id:img/key-root": "theirs"}}
		f := newFakeVM()
		pl := build(t, steps[:3])
		runPlan(t, context.Background(), pl, f, Options{Keys: keysFor(steps[:3]), Cache: c})
		if f.created[1].Parent != "theirs" {
			t.Errorf("child started from %q, want the winner's snapshot", f.created[1].Parent)
		}
		if diff := cmp.Diff([]string{"snap1"}, f.removed); diff != "" {
			t.Errorf("own duplicate not removed (-want +got):\n%s", diff)
		}
	})
}

func TestImages(t *testing.T) {
	p := &ir.Pipeline{Version: "0", DefaultImage: "debian", Nodes: []ir.Node{
		{Step: ir.Step{Key: "a", Cmd: "ok"}}, {Step: ir.Step{Key: "b", Cmd: "ok", Image: "missing"}},
		{Step: ir.Step{Key: "c", Cmd: "ok"}},
	}}
	pl := plan.New(p)
	f := newFakeVM()
	f.missImage = "missing"
	res, rec := runPlan(t, context.Background(), pl, f, Options{MapImage: map[string]string{"debian": "busybox"}, KeepGoing: true})
	if diff := cmp.Diff([]string{"busybox", "missing"}, sorted(f.resolved)); diff != "" {
		t.Errorf("resolved (-want +got):\n%s", diff)
	}
	if res.Steps[1] != Failed || res.Status != BuildFailed {
		t.Errorf("missing image: step %s build %s", res.Steps[1], res.Status)
	}
	if !errors.Is(res.Err, errNoImage) {
		t.Errorf("Result.Err = %v, want the backend's error for the missing image", res.Err)
	}
	var msg string
	var images []string
	for _, e := range rec.evs {
		if e.ChainFailed != nil {
			msg = e.ChainFailed.Message
		}
		if e.StepStart != nil && e.StepStart.Image != nil {
			images = append(images, *e.StepStart.Image)
		}
	}
	if want := `step 'b' could not run: no such image "missing"`; msg != want {
		t.Errorf("chain_failed message %q, want %q", msg, want)
	}
	if diff := cmp.Diff([]string{"busybox", "busybox", "missing"}, sorted(images)); diff != "" {
		t.Errorf("step_start images, want the mapped busybox (-want +got):\n%s", diff)
	}
}

// Fail-fast cancels a step while its image is being resolved; a step behind a
// continue_on_failure barrier with the same image must still get the image: the resolution
// belongs to no one step, and a cancellation is not cached as the image's result.
func TestImageResolveOutlivesCanceledStep(t *testing.T) {
	p, err := ir.Parse([]byte(`{"version":"0","default_image":"busybox","steps":[
		{"type":"command","key":"victim","cmd":"ok","image":"slow"},
		{"type":"command","key":"breaker","cmd":"wait slow-resolving fail 1"},
		{"type":"wait","continue_on_failure":true},
		{"type":"command","key":"same-image","cmd":"ok","image":"slow"},
		{"type":"command","key":"release","cmd":"signal slow-release"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pl := plan.New(p)
	f := newFakeVM()
	f.slowImage = "slow"
	res, rec := runPlan(t, context.Background(), pl, f, Options{})
	want := map[string]Status{"victim": Skipped, "breaker": Failed, "same-image": Passed, "release": Passed}
	if diff := cmp.Diff(want, statuses(pl, res)); diff != "" {
		t.Errorf("statuses (-want +got):\n%s\nevents: %v", diff, rec.byStep())
	}
	checkBuildEvents(t, rec, res)
}

// Events of one step keep their order even with many steps logging concurrently.
func TestLogOrderPerStep(t *testing.T) {
	var steps []step
	for i := 0; i < 8; i++ {
		cmd := ""
		for j := 0; j < 200; j++ {
			cmd += "print " + strconv.Itoa(j) + " "
		}
		steps = append(steps, step{key: "s" + strconv.Itoa(i), cmd: cmd})
	}
	pl := build(t, steps)
	q := events.NewQueue()
	done := make(chan map[string][]string)
	go func() {
		ids := map[string]string{}
		lines := map[string][]string{}
		for e := range q.C() {
			if e.StepQueued != nil {
				ids[e.StepQueued.StepID] = e.StepQueued.Key
			}
			if e.StepLog != nil {
				k := ids[e.StepLog.StepID]
				lines[k] = append(lines[k], e.StepLog.Line)
			}
		}
		done <- lines
	}()
	guard(t, func() Result {
		return Run(context.Background(), pl, newFakeVM(), Options{Publish: q.Publish, Parallelism: 8})
	})
	q.Close()
	lines := <-done
	var want []string
	for j := 0; j < 200; j++ {
		want = append(want, strconv.Itoa(j))
	}
	for _, s := range steps {
		if diff := cmp.Diff(want, lines[s.key]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.key, diff)
		}
	}
}

func ephemeral(f *fakeVM) []string {
	var out []string
	for id, eph := range f.commits {
		if eph {
			out = append(out, id)
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
