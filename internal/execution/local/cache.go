package local

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/vm"
)

// registryCache is the scheduler's cache: registry entries whose snapshots still exist.
type registryCache struct {
	reg    *registry.Registry
	vm     vm.Backend
	slug   string
	inputs []cachekey.Inputs

	mu    sync.Mutex
	added []registry.Entry // registered by this build, sized when it ends
}

func (c *registryCache) Lookup(ctx context.Context, q scheduler.CacheQuery) (string, bool, string, error) {
	e, ok, err := c.reg.Lookup(ctx, c.vm.Name(), q.BaseImage, q.Key)
	if err != nil {
		return "", false, "", err
	}
	if ok {
		exists, err := c.vm.SnapshotExists(ctx, e.Snapshot)
		if err != nil {
			return "", false, "", err
		}
		if exists {
			return e.Snapshot, true, "", nil
		}
		_ = c.reg.Remove(ctx, c.vm.Name(), q.BaseImage, q.Key)
		return "", false, fmt.Sprintf("the entry for key %s points to snapshot %s, which is gone", short(q.Key), e.Snapshot), nil
	}
	return "", false, c.explain(ctx, q), nil
}

// explain says what differs from the last entry registered for the same pipeline and step.
func (c *registryCache) explain(ctx context.Context, q scheduler.CacheQuery) string {
	msg := fmt.Sprintf("no entry for key %s", short(q.Key))
	last, ok, err := c.reg.LastFor(ctx, c.vm.Name(), c.slug, q.StepKey)
	if err != nil || !ok {
		return msg + " (first run of this step)"
	}
	var diffs []string
	if last.Base != q.BaseImage {
		diffs = append(diffs, fmt.Sprintf("root image changed: %s → %s", short(last.Base), short(q.BaseImage)))
	}
	if q.Step < len(c.inputs) {
		diffs = append(diffs, cachekey.Diff(last.Inputs, c.inputs[q.Step])...)
	}
	if len(diffs) == 0 {
		return msg
	}
	return msg + ": " + strings.Join(diffs, "; ")
}

func (c *registryCache) Register(ctx context.Context, q scheduler.CacheQuery, snapshot string) (string, error) {
	e := registry.Entry{
		Backend: c.vm.Name(), Base: q.BaseImage, Key: q.Key, Snapshot: snapshot,
		Pipeline: c.slug, StepKey: q.StepKey,
	}
	if q.Step < len(c.inputs) {
		e.Inputs = c.inputs[q.Step]
	}
	w, err := c.reg.Register(ctx, e)
	if err != nil {
		return "", err
	}
	if w.Snapshot == snapshot {
		c.mu.Lock()
		c.added = append(c.added, e)
		c.mu.Unlock()
	}
	return w.Snapshot, nil
}

// sizeAdded records the sizes of the snapshots this build registered, for the cache's size
// cap and `hm cache ls`. It runs when the build has ended: sizing may walk every file.
func (c *registryCache) sizeAdded(ctx context.Context) {
	c.mu.Lock()
	added := c.added
	c.added = nil
	c.mu.Unlock()
	for _, e := range added {
		n, err := c.vm.SnapshotSize(ctx, e.Snapshot)
		if err != nil {
			continue // unknown size: the entry just does not count towards the cap
		}
		_ = c.reg.SetSize(ctx, e.Backend, e.Base, e.Key, n)
	}
}

func short(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
