package local

import (
	"context"

	"github.com/hmci/hm/internal/plan"
)

// localResolver is a VM backend's resolution of an image it already has, without a pull
// (docker, sandbox): what the prefetch may ask before the scheduler starts.
type localResolver interface {
	ResolveLocal(ctx context.Context, ref string) (string, error)
}

// prefetch does, in the background, what the build's first lookup would do a moment later:
// read the build's entries (first) and start checking their snapshots (list). A fully cached
// chain's hits each wait for their snapshot's check, so the checks starting while the
// scheduler starts, rather than at its first lookup, come off the build's critical path.
//
// Only where the scheduler looks up at once: a root step with a cache key, which needs no
// parent to end first. Its base is its image as the backend has it now (docker answers a
// reference it resolved moments ago, choosing the backend, from memory); a backend without a
// local resolution, or an image it does not have, leaves the work to the first lookup, as a
// lookup under another base does (first's entries are a base's). What is read and checked is
// the same as at the first lookup, a moment earlier: the entries as the build begins, and
// every hit a child starts from still inspected right before it is reported.
func (c *registryCache) prefetch(ctx context.Context, pl *plan.Plan, mapImage map[string]string) {
	r, ok := c.vm.(localResolver)
	if !ok {
		return
	}
	ref := ""
	for i, s := range pl.Steps {
		if s.Parent < 0 && i < len(c.keys) && c.keys[i] != "" {
			ref = s.Image
			break
		}
	}
	if ref == "" {
		return
	}
	if to, ok := mapImage[ref]; ok {
		ref = to
	}
	c.prefetched = make(chan struct{})
	go func() {
		defer close(c.prefetched)
		base, err := r.ResolveLocal(ctx, ref)
		if err != nil {
			return // the scheduler's resolution reports it
		}
		c.firstOnce.Do(func() { c.first(ctx, base) })
		c.listOnce.Do(func() { c.list(ctx) })
	}()
}
