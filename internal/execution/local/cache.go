package local

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/vm"
)

// registryCache is the scheduler's cache: registry entries whose snapshots still exist.
type registryCache struct {
	reg       *registry.Registry
	vm        vm.Backend
	slug      string
	sourceDir string            // absolute
	results   []cachekey.Result // index-aligned with the plan
	images    []string          // the chain root's image as written, index-aligned
	keys      []string          // cache keys, index-aligned ("" for an uncached step)
	children  [][]int           // builds_in children, index-aligned

	// At the first lookup (firstOnce): entries is the build's one read of its steps' entries
	// (scopes) under that lookup's base, marked used in one write in the background (touched
	// closes when it is done). At the first hit (listOnce): listed is the backend's one
	// listing of live snapshots (vm.SnapshotLister), nil when the backend has none or the
	// listing failed.
	firstOnce sync.Once
	scopes    []registry.Scope
	entries   map[registry.Scope]registry.Entry
	touched   chan struct{}
	listOnce  sync.Once
	listed    map[string]bool
	// checks stands in for listed when the backend declined to list (vm.ErrNotListed).
	checks map[string]*check
	// prefetched closes when prefetch's work is done (nil when it started none).
	prefetched chan struct{}

	stateDir   string
	unwritable error // see Backend.Unwritable: a miss cannot run

	mu    sync.Mutex
	added []registry.Entry // registered by this build, sized when it ends
}

// scope is the registry scope of q: the key, and the step's fingerprint beside backend and base.
func (c *registryCache) scope(q scheduler.CacheQuery) registry.Scope {
	s := registry.Scope{Backend: c.vm.Name(), Base: q.BaseImage, Key: q.Key}
	if q.Step < len(c.results) {
		s.Fingerprint = c.results[q.Step].Fingerprint
	}
	return s
}

func (c *registryCache) Lookup(ctx context.Context, q scheduler.CacheQuery) (scheduler.CacheResult, error) {
	s := c.scope(q)
	id := s.ID()
	c.firstOnce.Do(func() { c.first(ctx, q.BaseImage) })
	e, ok := c.entries[s] // read and marked used at the first lookup
	if !ok {
		// Under another base, or registered since the first lookup (a concurrent run).
		var err error
		if e, ok, err = c.reg.Lookup(ctx, s); err != nil {
			return scheduler.CacheResult{}, err
		}
	}
	if ok {
		exists := c.listedUnused(ctx, q, e.Snapshot)
		if !exists {
			var err error
			if exists, err = c.vm.SnapshotExists(ctx, e.Snapshot); err != nil {
				return scheduler.CacheResult{}, err
			}
		}
		if exists {
			return scheduler.CacheResult{Hit: true, Snapshot: e.Snapshot, Entry: id}, nil
		}
		if c.unwritable != nil {
			return scheduler.CacheResult{}, c.cannotRun(fmt.Sprintf("entry %s points to snapshot %s, which is gone", id, e.Snapshot))
		}
		_ = c.reg.Remove(ctx, s)
		return scheduler.CacheResult{Entry: id,
			Explain: fmt.Sprintf("entry %s points to snapshot %s, which is gone", id, e.Snapshot)}, nil
	}
	if c.unwritable != nil {
		return scheduler.CacheResult{}, c.cannotRun(c.explain(ctx, q, id))
	}
	return scheduler.CacheResult{Entry: id, Explain: c.explain(ctx, q, id)}, nil
}

// listedUnused reports whether a hit on snapshot needs no inspect of its own: the build's
// one listing has it, and no child will make a machine from it, since every builds_in child
// has an entry whose snapshot is listed too (its own hit). A snapshot removed after the
// listing is then used by nothing: the hit runs nothing and no child starts from it. Where a
// child may run, the snapshot is checked right before the hit is reported, as without the
// listing, so that a snapshot gone by then is a miss, never a child's failed create.
func (c *registryCache) listedUnused(ctx context.Context, q scheduler.CacheQuery, snapshot string) bool {
	c.listOnce.Do(func() { c.list(ctx) })
	if !c.known(ctx, snapshot) || q.Step >= len(c.children) {
		return false
	}
	for _, j := range c.children[q.Step] {
		if j >= len(c.keys) || c.keys[j] == "" {
			return false
		}
		s := registry.Scope{Backend: c.vm.Name(), Base: q.BaseImage, Key: c.keys[j]}
		if j < len(c.results) {
			s.Fingerprint = c.results[j].Fingerprint
		}
		e, ok := c.entries[s]
		if !ok { // a chain under another base than the first lookup's
			var err error
			if e, ok, err = c.reg.Peek(ctx, s); err != nil {
				return false
			}
		}
		if !ok || !c.known(ctx, e.Snapshot) {
			return false
		}
	}
	return true
}

// first runs at the build's first lookup. It reads the entries of all the build's cached
// steps under base in one query, and marks them used in one write, in the background,
// instead of a read and a write per hit (the 30 writes of a fully cached 30-step chain were
// most of the registry's share of such a run, and each appended to the WAL that the close
// then checkpoints). An entry is marked used when its build starts, before any step could
// hit it: also one whose step then does not get to look it up (an earlier step failed), which
// only keeps it a little longer under the LRU bound. The entries are the registry's as the
// build's lookups begin, as the snapshots' checks are the backend's (checkEntries); a key
// not found then is asked again at its own lookup, so an entry a concurrent run registers
// meanwhile still hits.
func (c *registryCache) first(ctx context.Context, base string) {
	for j, key := range c.keys {
		if key != "" && j < len(c.results) {
			c.scopes = append(c.scopes, registry.Scope{Backend: c.vm.Name(), Base: base, Key: key, Fingerprint: c.results[j].Fingerprint})
		}
	}
	es, err := c.reg.PeekMany(ctx, c.scopes)
	if err != nil {
		return // every lookup reads (and marks) its own entry
	}
	c.entries = es
	found := make([]registry.Scope, 0, len(es))
	for s := range es {
		found = append(found, s)
	}
	c.touched = make(chan struct{})
	go func() {
		defer close(c.touched)
		// Not the step's context: the mark is the build's. A failed mark costs only LRU
		// order, never a hit.
		bg := context.WithoutCancel(ctx)
		if c.reg.Touch(bg, found) == nil {
			_ = c.reg.Checkpoint(bg)
		}
	}()
}

// list runs at the build's first hit: the backend's listing of live snapshots, or, when the
// backend declines to list, the checks of the entries' snapshots.
func (c *registryCache) list(ctx context.Context) {
	l, ok := c.vm.(vm.SnapshotLister)
	if !ok {
		return
	}
	ids, err := l.ListSnapshots(ctx)
	if errors.Is(err, vm.ErrNotListed) {
		c.checks = c.checkEntries(ctx)
		return
	}
	if err != nil {
		return // every hit asks SnapshotExists
	}
	c.listed = make(map[string]bool, len(ids))
	for _, id := range ids {
		c.listed[id] = true
	}
}

// wait returns once the first lookup's mark of the entries used is written: before the
// registry closes, and before eviction, which orders by that mark.
func (c *registryCache) wait() {
	if c.prefetched != nil {
		<-c.prefetched
	}
	if c.touched != nil {
		<-c.touched
	}
}

// known reports whether the build's listing, or its check (checkEntries), found snapshot;
// a check still under way is waited for.
func (c *registryCache) known(ctx context.Context, snapshot string) bool {
	if c.checks == nil {
		return c.listed[snapshot]
	}
	ch := c.checks[snapshot]
	if ch == nil {
		return false
	}
	select {
	case <-ch.done:
		return ch.found
	case <-ctx.Done():
		return false
	}
}

// check is one snapshot's existence, asked in the background; found is set before done closes.
type check struct {
	done  chan struct{}
	found bool
}

// checkEntries stands in for a listing the backend declined (vm.ErrNotListed): the snapshots
// of the entries read at the first lookup (under its base) are asked of the backend all at
// once, in the background, rather than one round trip per hit in turn down a chain; each
// hit waits for its own answer only, so the hits run while later answers come in. Entries
// under another base (a chain of another root image) are asked at their lookup, as without
// a listing.
func (c *registryCache) checkEntries(ctx context.Context) map[string]*check {
	checks := map[string]*check{}
	var snaps []string
	for _, s := range c.scopes { // in step order
		if e, ok := c.entries[s]; ok && checks[e.Snapshot] == nil {
			checks[e.Snapshot] = &check{done: make(chan struct{})}
			snaps = append(snaps, e.Snapshot)
		}
	}
	// Not the step's context: a step canceled meanwhile must not turn the others' answers
	// into misses. The work is bounded by the build's steps.
	bg := context.WithoutCancel(ctx)
	go func() {
		slots := make(chan struct{}, 4) // more measured no faster: the daemon is the bound
		for _, id := range snaps {      // in step order: the first hits are answered first
			slots <- struct{}{}
			ch := checks[id]
			go func() {
				defer func() { <-slots }()
				// An error counts as not found here: the hit asks again.
				ok, err := c.vm.SnapshotExists(bg, id)
				ch.found = err == nil && ok
				close(ch.done)
			}()
		}
	}()
	return checks
}

// cannotRun is a miss on an unwritable state dir: the step would have to run, and nothing
// could keep what it makes.
func (c *registryCache) cannotRun(why string) error {
	return &errs.StateDirError{Dir: c.stateDir, Err: fmt.Errorf("a step must run (cache miss: %s): %w", why, c.unwritable)}
}

// explain says what differs from the last entry registered for the same pipeline and step:
// the cached snapshot the user expected to get.
func (c *registryCache) explain(ctx context.Context, q scheduler.CacheQuery, id string) string {
	msg := fmt.Sprintf("no entry %s", id)
	last, ok, err := c.reg.LastFor(ctx, c.vm.Name(), c.sourceDir, c.slug, q.StepKey)
	if err != nil || !ok {
		return msg + " (first run of this step)"
	}
	var diffs []string
	if last.Base != q.BaseImage {
		diffs = append(diffs, fmt.Sprintf("root image changed: %s → %s", short(last.Base), short(q.BaseImage)))
	}
	if q.Step < len(c.results) {
		diffs = append(diffs, cachekey.Diff(last.Inputs, c.results[q.Step].Inputs)...)
	}
	if len(diffs) == 0 {
		return msg
	}
	return msg + ": " + strings.Join(diffs, "; ")
}

func (c *registryCache) Register(ctx context.Context, q scheduler.CacheQuery, snapshot string) (string, error) {
	s := c.scope(q)
	e := registry.Entry{
		Backend: s.Backend, Base: s.Base, Key: s.Key, Fingerprint: s.Fingerprint, Snapshot: snapshot,
		Pipeline: c.slug, StepKey: q.StepKey, SourceDir: c.sourceDir,
	}
	if q.Step < len(c.results) {
		e.Inputs = c.results[q.Step].Inputs
	}
	if q.Step < len(c.images) {
		e.Image = c.images[q.Step]
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
		_ = c.reg.SetSize(ctx, e.Scope(), n)
	}
}

func short(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
