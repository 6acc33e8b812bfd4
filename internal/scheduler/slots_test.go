package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// With one slot, steps released together start in plan order, whichever gets ready to run
// first: "first" resolves its image slowly, "second" asks for the slot meanwhile and waits
// for it. (Before the gate, second took the free slot and started first: a local and a
// remote build of one plan could run their steps in different orders and fail fast in
// different places.)
func TestSlotsInPlanOrder(t *testing.T) {
	steps := []step{{key: "first", cmd: "ok"}, {key: "second", cmd: "ok"}, {key: "third", cmd: "ok"}}
	pl := build(t, steps)
	pl.Steps[0].Image = "slow"
	f := newFakeVM()
	f.slowImage = "slow"
	rec := &recorder{}
	r := newRun(pl, f, Options{Parallelism: 1, Publish: rec.publish})
	go func() {
		<-f.signal("slow-resolving")
		// second and third ask for the slot while first still resolves: they wait.
		for !r.gate.isWaiting(1) || !r.gate.isWaiting(2) {
			time.Sleep(time.Millisecond)
		}
		f.fire("slow-release")
	}()
	res := guard(t, func() Result { return r.run(context.Background()) })
	if res.Status != BuildPassed {
		t.Fatalf("status %s", res.Status)
	}
	var order []string
	keys := map[string]string{}
	for _, e := range rec.evs {
		switch {
		case e.StepQueued != nil:
			keys[e.StepQueued.StepID] = e.StepQueued.Key
		case e.StepStart != nil:
			order = append(order, keys[e.StepStart.StepID])
		}
	}
	if d := cmp.Diff([]string{"first", "second", "third"}, order); d != "" {
		t.Errorf("start order (-want +got):\n%s", d)
	}
}

// The gate's own rules: a later step never overtakes an earlier contender, slots beyond the
// earlier ones' are not held back, a contender that leaves lets the next go, and a wait that
// ends gives a slot granted meanwhile back.
func TestSlotGate(t *testing.T) {
	g := newSlotGate(2)
	for i := range 4 {
		g.expect(i)
	}
	if !g.tryAcquire(1) { // two free, one earlier contender (0): one left for 1
		t.Fatal("step 1 refused with a slot to spare")
	}
	if g.tryAcquire(3) { // one free, 0 and 2 before it
		t.Fatal("step 3 overtook steps 0 and 2")
	}
	three := g.ask(3)
	two := g.ask(2) // one free, 0 before it: waits
	select {
	case <-two:
		t.Fatal("step 2 took the slot step 0 comes first for")
	default:
	}
	g.leave(0) // a cache hit: 2 goes
	<-two
	g.release() // 1 done: 3 goes
	<-three
	ctx, cancel := context.WithCancel(context.Background())
	g.expect(4)
	cancel()
	if g.acquire(ctx, 4) {
		t.Fatal("a canceled wait acquired with no slot free")
	}
	g.release()
	g.release()
	g.mu.Lock()
	free, contenders := g.free, len(g.pending)
	g.mu.Unlock()
	if free != 2 || contenders != 0 {
		t.Errorf("after everything: %d free, %d contending; want 2, 0", free, contenders)
	}
}

// isWaiting reports whether step i waits for a slot.
func (g *slotGate) isWaiting(i int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.waiting[i]
	return ok
}
