package scheduler

import (
	"context"
	"slices"
	"sync"
)

// slotGate is the parallelism bound: n slots, handed out in plan order among the steps that
// contend for one, so that which ready step runs next never depends on goroutine timing (a
// local and a remote build of one plan start their steps in the same order, and so fail fast
// in the same place).
//
// A step contends from its release (expect, by the loop, before its worker starts) until it
// holds a slot or will not ask for one (leave: a cache hit, a step that ended before it ran).
// A slot goes to a waiting step only when enough are free for every contender before it in
// the plan, waiting or still preparing to ask (looking up its cache entry, resolving its
// image), each counted as taking one: a later step never overtakes an earlier one, and slots
// beyond the earlier ones' are not held back.
type slotGate struct {
	mu      sync.Mutex
	free    int
	pending map[int]bool          // released steps that may still ask
	waiting map[int]chan struct{} // steps asking; closed when granted
}

func newSlotGate(n int) *slotGate {
	return &slotGate{free: n, pending: map[int]bool{}, waiting: map[int]chan struct{}{}}
}

// expect makes step i a contender: called by the loop before i's worker starts.
func (g *slotGate) expect(i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending[i] = true
}

// leave says step i will not ask for a slot (any more); a no-op once it holds one.
func (g *slotGate) leave(i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[i] {
		delete(g.pending, i)
		delete(g.waiting, i)
		g.grantLocked()
	}
}

// tryAcquire takes a slot for step i if its turn is now, else reports false (i still
// contends).
func (g *slotGate) tryAcquire(i int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.takeLocked(i)
}

// acquire waits for step i's slot, or reports false when ctx ends first (i then no longer
// contends).
func (g *slotGate) acquire(ctx context.Context, i int) bool {
	granted := g.ask(i)
	select {
	case <-granted:
		return true
	case <-ctx.Done():
		g.withdraw(i, granted)
		return false
	}
}

// ask makes step i wait for its slot and returns the channel closed when it is granted
// (at once when its turn is now): a step can wait for it and for something else at once.
func (g *slotGate) ask(i int) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := make(chan struct{})
	if g.takeLocked(i) {
		close(ch)
		return ch
	}
	g.pending[i] = true
	g.waiting[i] = ch
	return ch
}

// withdraw ends step i's wait: it no longer contends, and a slot granted meanwhile is
// given back.
func (g *slotGate) withdraw(i int, granted <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-granted:
		g.free++
	default:
		delete(g.waiting, i)
		delete(g.pending, i)
	}
	g.grantLocked()
}

// release frees a slot (the loop, once it recorded the holder's completion).
func (g *slotGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.free++
	g.grantLocked()
}

// before is how many contenders come before step i in the plan.
func (g *slotGate) beforeLocked(i int) int {
	n := 0
	for j := range g.pending {
		if j < i {
			n++
		}
	}
	return n
}

// takeLocked grants step i a slot when one is free beyond those of the contenders before it.
func (g *slotGate) takeLocked(i int) bool {
	if g.free-g.beforeLocked(i) <= 0 {
		return false
	}
	g.free--
	delete(g.pending, i)
	return true
}

// grantLocked hands free slots to waiting steps in plan order, each counting the contenders
// before it.
func (g *slotGate) grantLocked() {
	if g.free == 0 || len(g.waiting) == 0 {
		return
	}
	order := make([]int, 0, len(g.pending))
	for j := range g.pending {
		order = append(order, j)
	}
	slices.Sort(order)
	avail := g.free
	for _, j := range order {
		if avail == 0 {
			return
		}
		avail--
		if ch, ok := g.waiting[j]; ok {
			g.free--
			delete(g.waiting, j)
			delete(g.pending, j)
			close(ch)
		}
	}
}
