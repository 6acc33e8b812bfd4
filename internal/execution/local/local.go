// Package local is the execution backend that runs prepared builds (package prepare) on this
// machine: it reconciles leftovers of crashed runs and runs the scheduler over a VM backend,
// with the snapshot registry as its cache and the build's walked source tree as every
// executing step's workspace.
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/vm"
)

// DefaultMaxEntries is the registry's LRU bound per backend when the config sets none.
const DefaultMaxEntries = 256

// Backend runs builds locally on VM.
type Backend struct {
	VM       vm.Backend
	StateDir string
	// MaxEntries and MaxBytes bound the cache per backend (LRU); 0 = default / unlimited.
	MaxEntries int
	MaxBytes   int64
	// Unwritable, when set, is why the state dir cannot be written (full, read-only): the
	// build then uses the registry read-only, so that a build whose steps are all cached
	// still runs, and a step that would have to run fails with an *errs.StateDirError
	// instead (nothing could keep its result).
	Unwritable error

	reconcileOnce sync.Once
	reconcileErr  error
}

var _ execution.Backend = (*Backend)(nil)

// RegistryPath is where the snapshot registry of a state dir lives.
func RegistryPath(stateDir string) string { return filepath.Join(stateDir, "registry.db") }

// Start runs a prepared build on VM. It overlays the Build's walked tree directly: a local
// build never packs an archive.
func (b *Backend) Start(ctx context.Context, req execution.Request) (execution.Handle, error) {
	pb := req.Build
	pl := pb.Plan
	if err := checkRunners(pl, b.VM.Name()); err != nil {
		return nil, err
	}
	if err := b.reconcile(ctx); err != nil {
		return nil, err
	}
	var reg *registry.Registry
	var cache *registryCache
	var schedCache scheduler.Cache // a typed nil would not disable caching
	if b.Unwritable != nil && (!allKeyed(pb.Keys()) || pb.Options.NoCache) {
		return nil, &errs.StateDirError{Dir: b.StateDir, Err: b.Unwritable}
	}
	if pb.Cached() {
		var err error
		open := registry.Open
		if b.Unwritable != nil {
			open = registry.OpenReadOnly
		}
		if reg, err = open(ctx, RegistryPath(b.StateDir)); err != nil {
			return nil, err
		}
		cache = &registryCache{reg: reg, vm: b.VM, slug: pb.Slug, sourceDir: pb.Source.Dir,
			results: pb.Steps, images: rootImages(pl), keys: pb.Keys(), children: children(pl), stateDir: b.StateDir, unwritable: b.Unwritable}
		schedCache = cache
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if cache != nil && !pb.Options.NoCache {
		cache.prefetch(runCtx, pl, pb.Options.MapImage)
	}
	h := &handle{q: events.NewQueue(), cancel: cancel, done: make(chan struct{})}
	opts := pb.Options
	runID := uuid.NewString()
	artifacts := ""
	if req.ArtifactsDir != "" {
		artifacts = filepath.Join(req.ArtifactsDir, runID)
	}
	go func() {
		defer close(h.done)
		defer cancel()
		res := scheduler.Run(runCtx, pl, b.VM, scheduler.Options{
			RunID:       runID,
			Parallelism: opts.Parallelism,
			KeepGoing:   opts.KeepGoing,
			NoCache:     opts.NoCache,
			Timeout:     opts.Timeout,
			ExtraEnv:    opts.Env,
			Secrets:     opts.Secrets,
			MapImage:    opts.MapImage,
			Keys:        pb.Keys(),
			Warnings:    pb.Warnings(),
			CacheScope:  vm.CacheDir{Org: pb.Org, Pipeline: pb.Slug},
			Cache:       schedCache,
			Workspace:   pb.Source.Tree,
			Publish:     h.q.Publish,
			// Written as the steps pass: .hm/artifacts/BUILD/ of the source directory.
			ArtifactsDir: artifacts,
		})
		h.out = execution.Outcome{ExitCode: res.Status.ExitCode(), Err: res.Err}
		if reg != nil {
			cache.wait()
			cctx := context.WithoutCancel(ctx)
			if b.Unwritable == nil {
				cache.sizeAdded(cctx)
				b.evict(cctx, reg)
			}
			reg.Close()
		}
		h.q.Close()
	}()
	return h, nil
}

// checkRunners refuses a build with a step whose runner is not the VM backend's: every step
// of a local build runs on that one backend, and running a step somewhere it did not ask for
// would ignore its selection silently. runner_args go unused: no local backend takes any.
func checkRunners(pl *plan.Plan, backend string) error {
	for _, s := range pl.Steps {
		if s.Runner != "" && s.Runner != "default" && s.Runner != backend {
			return &errs.RunnerError{Step: s.Key, Runner: s.Runner, Backend: backend}
		}
	}
	return nil
}

// rootImages is, per step, the image of its chain's root as written (for hm cache ls).
func rootImages(pl *plan.Plan) []string {
	out := make([]string, len(pl.Steps))
	for i := range pl.Steps {
		r := i
		for pl.Steps[r].Parent >= 0 {
			r = pl.Steps[r].Parent
		}
		out[i] = pl.Steps[r].Image
	}
	return out
}

// children is, per step, its builds_in children.
func children(pl *plan.Plan) [][]int {
	out := make([][]int, len(pl.Steps))
	for i := range pl.Steps {
		out[i] = pl.Steps[i].Children
	}
	return out
}

// allKeyed reports whether every step has a cache key (could be a hit).
func allKeyed(keys []string) bool {
	for _, k := range keys {
		if k == "" {
			return false
		}
	}
	return true
}

// reconcile cleans what crashed runs left, once per process: the backend's leftovers, registry
// entries whose snapshot is gone, and kept snapshots no entry references.
func (b *Backend) reconcile(ctx context.Context) error {
	b.reconcileOnce.Do(func() {
		b.reconcileErr = b.doReconcile(ctx)
	})
	return b.reconcileErr
}

func (b *Backend) doReconcile(ctx context.Context) error {
	if b.Unwritable != nil {
		// Cleaning up writes; it waits for a build that can.
		return nil
	}
	if err := b.VM.Reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile %s backend: %w", b.VM.Name(), err)
	}
	listed := map[string]bool{}
	if l, ok := b.VM.(vm.SnapshotLister); ok {
		ids, err := l.ListSnapshots(ctx)
		if errors.Is(err, vm.ErrNotListed) {
			// Nothing crashed since the backend's last full reconcile: comparing the
			// registry with the backend's snapshots waits for the next one.
			return nil
		}
		if err != nil {
			return fmt.Errorf("reconcile %s snapshots: %w", b.VM.Name(), err)
		}
		for _, id := range ids {
			listed[id] = true
		}
	}
	referenced := map[string]bool{}
	if _, err := os.Stat(RegistryPath(b.StateDir)); err == nil {
		reg, err := registry.Open(ctx, RegistryPath(b.StateDir))
		if err != nil {
			return err
		}
		defer reg.Close()
		if _, err := reg.DropMissing(ctx, b.VM.Name(), func(id string) (bool, error) {
			if listed[id] {
				return true, nil // one listing instead of an inspect per entry
			}
			return b.VM.SnapshotExists(ctx, id)
		}); err != nil {
			return err
		}
		if referenced, err = reg.Referenced(ctx, b.VM.Name()); err != nil {
			return err
		}
	}
	if _, err := b.VM.PruneSnapshots(ctx, func(id string) bool { return referenced[id] }); err != nil {
		return fmt.Errorf("reconcile %s snapshots: %w", b.VM.Name(), err)
	}
	return nil
}

// evict applies the LRU bound after a build; evicted snapshots are deleted.
func (b *Backend) evict(ctx context.Context, reg *registry.Registry) {
	max := b.MaxEntries
	if max <= 0 {
		max = DefaultMaxEntries
	}
	evicted, err := reg.Evict(ctx, b.VM.Name(), max, b.MaxBytes)
	if err != nil {
		return
	}
	for _, e := range evicted {
		_ = b.VM.RemoveSnapshot(ctx, e.Snapshot)
	}
}

type handle struct {
	q      *events.Queue
	cancel context.CancelFunc
	done   chan struct{}
	out    execution.Outcome
}

func (h *handle) Events() <-chan events.Event { return h.q.C() }
func (h *handle) Cancel()                     { h.cancel() }
func (h *handle) Wait() execution.Outcome {
	<-h.done
	return h.out
}
