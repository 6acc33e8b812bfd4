package scheduler

import (
	"context"

	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// waitSlot takes step i's parallelism slot (slots.go), or reports false when ctx ends first.
func (r *run) waitSlot(ctx context.Context, i int) bool { return r.gate.acquire(ctx, i) }

// slotPreparing takes a parallelism slot for a step about to run with spec's first attempt,
// and reports false when ctx ends first. When no slot is free and the backend can prepare
// machines ahead (vm.Preparer), the step's machine is prepared and given the workspace while
// it waits, so that the slot, once free, is held by the command alone (a Docker container's
// start is most of a short step). At most the parallelism's count of steps prepare, or hold a prepared
// machine while they wait for a slot, at a time (a wide fan-out does not start all its
// containers at once); the others wait for such a turn rather than for a slot, so that freed
// slots go to prepared machines. A turn is given back when its step takes a slot, so with the
// steps in slots about to run theirs, up to twice the parallelism's prepared machines exist before
// their commands start. The prepared machine is returned
// (nil when none was made); the caller owns it. When the wait ends without a slot the machine
// is destroyed here: the step never ran, nothing of it is left.
func (r *run) slotPreparing(ctx context.Context, i int, spec vm.Spec, ws *source.Tree) (vm.Machine, bool) {
	p, can := r.backend.(vm.Preparer)
	if !can {
		return nil, r.waitSlot(ctx, i)
	}
	if r.gate.tryAcquire(i) { // its turn now: nothing to win
		return nil, true
	}
	// Asking for the slot while waiting for a turn to prepare, not only after: a freed slot
	// goes to the step whose turn it is even when it has not prepared (an earlier step
	// waiting for a turn, all turns held by later ones waiting for slots, would otherwise
	// wait for ever), and a turn comes free whenever a preparing step takes its slot.
	granted := r.gate.ask(i)
	select {
	case <-granted:
		return nil, true
	case <-ctx.Done():
		r.gate.withdraw(i, granted)
		return nil, false
	case r.prep <- struct{}{}:
	}
	defer func() { <-r.prep }() // held until the slot: bounds the machines waiting
	m := r.prepare(ctx, p, attemptSpec(spec, 1), ws)
	select {
	case <-granted:
		return m, true
	case <-ctx.Done():
		r.gate.withdraw(i, granted)
	}
	if m != nil {
		r.destroyLater(m)
	}
	return nil, false
}

// prepare makes the step's machine ahead and injects the workspace. Any failure only costs
// the head start: the machine is destroyed and the step creates one in its slot as usual,
// where a lasting failure is reported.
func (r *run) prepare(ctx context.Context, p vm.Preparer, spec vm.Spec, ws *source.Tree) vm.Machine {
	m, err := p.Prepare(ctx, spec)
	if err != nil {
		return nil
	}
	if ws != nil {
		if err := m.Inject(ctx, ws); err != nil {
			r.destroyLater(m)
			return nil
		}
	}
	return m
}
