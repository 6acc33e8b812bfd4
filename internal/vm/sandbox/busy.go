package sandbox

import (
	"context"
	"fmt"
	"sync"
)

// busyLayers are layers committed while the init that ran their step may still be exiting:
// Run returns as soon as the step's processes are gone, and the init's exit, which unmounts
// the step's overlay, goes on in the background (for a few milliseconds; longer after a
// step that wrote many files). Overlayfs must not find a lower layer still in use as
// another mount's upper directory (kernel warnings of undefined behaviour; EBUSY with
// index=on), so a step on such a layer waits for that init. Nothing else waits: Commit
// stays a rename, and a step's teardown overlaps whatever comes next.
type busyLayers struct {
	mu sync.Mutex
	m  map[string]<-chan struct{} // layer id: closed once its init is gone
	// waiting, when set (by tests), is called when a Run is about to wait for a layer.
	waiting func(layer string)
}

// markBusy records that layer stays in use until gone is closed (nil: it is not in use).
func (b *Backend) markBusy(layer string, gone <-chan struct{}) {
	if gone == nil {
		return
	}
	select {
	case <-gone:
		return
	default:
	}
	b.busy.mu.Lock()
	defer b.busy.mu.Unlock()
	if b.busy.m == nil {
		b.busy.m = map[string]<-chan struct{}{}
	}
	for l, c := range b.busy.m { // keep the map small
		select {
		case <-c:
			delete(b.busy.m, l)
		default:
		}
	}
	b.busy.m[layer] = gone
}

// waitBusy waits until none of layers is in use by an exiting init of this backend.
func (b *Backend) waitBusy(ctx context.Context, layers []string) error {
	for _, l := range layers {
		b.busy.mu.Lock()
		gone, waiting := b.busy.m[l], b.busy.waiting
		b.busy.mu.Unlock()
		if gone == nil {
			continue
		}
		if waiting != nil {
			waiting(l)
		}
		select {
		case <-gone:
		case <-ctx.Done():
			return fmt.Errorf("sandbox: run aborted: %w", ctx.Err())
		}
	}
	return nil
}
