// Package vm is the boundary between hm's scheduler and the things that run steps: Docker
// containers, the daemonless namespace sandbox, the unisolated host, later microVMs. Each of
// those lives in its own package under vm/ and passes the shared conformance suite in
// vm/vmtest.
//
// # Lifecycle
//
// A step runs on one Machine, which goes through these states in order:
//
//	Create(Spec)  -> created: a root filesystem from the image or the parent's snapshot exists,
//	                 nothing runs yet (a Docker container created, not started; an overlay
//	                 prepared; a microVM restored but paused).
//	Inject(tree)  -> the workspace is overlaid onto /workspace: files are added or overwritten,
//	                 nothing is deleted. Optional; called at most once, before Run.
//	Run(out, err) -> `sh -c CMD` in /workspace with Spec.Env; blocks until the command exits or
//	                 ctx is done. Called exactly once. When ctx is done the machine's whole
//	                 process tree is killed before Run returns ctx's error.
//	Commit()      -> the filesystem as the command left it becomes an immutable snapshot whose id
//	                 is returned; only after Run returned exit code 0; at most once.
//	Destroy()     -> everything the machine holds is released (the snapshot made by Commit
//	                 survives). Always called, in any state, with a context that is not the
//	                 canceled step context.
//
// Snapshots outlive machines. A snapshot id is opaque to the caller, unique within a backend,
// and valid as Spec.Parent until RemoveSnapshot.
//
// # Idempotency
//
// Destroy and RemoveSnapshot are idempotent: a second call, or a call for something already
// gone (say, removed by reconcile), returns nil. Reconcile may run while other hm processes
// use the same state; it only touches what belongs to hm processes that no longer exist.
//
// # Thread-safety
//
// A Backend is safe for concurrent use: the scheduler creates, runs and destroys many machines
// at once and removes snapshots concurrently. A Machine is used by one goroutine at a time,
// except Destroy, which may be called concurrently with Run to abort it.
//
// # Errors
//
// Errors from a backend are infrastructure errors (daemon gone, image missing, disk full); a
// command that exits non-zero is not an error, it is an exit code. Errors wrap the errs
// sentinels (errs.ErrImageNotFound, errs.ErrUnavailable, ...) so callers can classify them.
// They say what happened, never what to do: a missing image is an *errs.ImageError (the
// reference, where it was looked for, the pull's cause), a backend that cannot work here an
// *errs.UnavailableError; the front end (internal/cli) knows its own flags and writes the fix.
package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm/artifact"
)

// Backend creates machines and owns the snapshots they commit.
type Backend interface {
	// Name is the backend's name as given to --backend ("docker", "sandbox", "host").
	Name() string

	// ResolveImage maps an image reference to the id of the exact image bytes it names now
	// (a digest or image id), making it available locally when a registry answers. The id
	// scopes cache entries, so a key never resolves to a snapshot built on another base.
	// Unknown images fail with errs.ErrImageNotFound.
	ResolveImage(ctx context.Context, ref string) (string, error)

	// Create prepares a machine; see the package doc for the lifecycle.
	Create(ctx context.Context, spec Spec) (Machine, error)

	// SnapshotExists reports whether a snapshot id still names a usable snapshot.
	SnapshotExists(ctx context.Context, id string) (bool, error)

	// RemoveSnapshot deletes a snapshot. Idempotent.
	RemoveSnapshot(ctx context.Context, id string) error

	// Reconcile removes what crashed or killed hm processes left behind: machines, mounts,
	// processes, half-written snapshots. Ephemeral snapshots of dead runs are removed too.
	// Called once at start, before any Create.
	Reconcile(ctx context.Context) error

	// PruneSnapshots removes the kept (non-ephemeral) snapshots for which keep returns false
	// and whose creating hm process is gone, and returns their ids. The registry passes
	// "is referenced by an entry": a snapshot committed but never registered (hm killed in
	// between) is deleted, while one a live hm is about to register is left alone.
	PruneSnapshots(ctx context.Context, keep func(id string) bool) ([]string, error)

	// SnapshotSize returns the bytes a snapshot occupies beyond what its parent already
	// holds (its own layer; the whole copy for backends that copy), for the cache's size cap.
	// It may walk the snapshot's files, so callers use it off the step's critical path.
	SnapshotSize(ctx context.Context, id string) (int64, error)
}

// Spec describes a machine. Exactly one of Image and Parent is set.
type Spec struct {
	// Image is a resolved image id (from ResolveImage) for a root step.
	Image string
	// Parent is the snapshot id of the builds_in parent for a child step.
	Parent string
	// Cmd is run as `sh -c Cmd`.
	Cmd string
	// Env is the complete environment, "K=V" entries, in order; later entries win.
	Env []string
	// Owner labels everything the machine creates, for reconcile and for `docker ps` users.
	Owner Owner
	// Continuable hints that a builds_in child will likely Continue on this machine (see
	// Continuer): the step has exactly one. Backends without the ability ignore it.
	Continuable bool
	// Last hints that, as far as the scheduler knows, its run makes no machine after this
	// one (the last attempt of the last step to make one; an infrastructure failure's retry
	// is not foreseen, as with Drainer): something a backend would make to share with the
	// run's later machines would serve this one alone. Only a hint; backends may ignore it.
	Last bool
	// Sequential hints that no two machines of its run run at the same time: the plan's
	// steps form one path (each can start only after the one before it has ended), or the
	// parallelism is 1. Something a backend makes ahead for a machine beside this one would
	// go unused. Only a hint; backends may ignore it.
	Sequential bool
	// CacheDirs are persistent directories mounted at their Path for the step (hm's
	// cache_dirs): shared by every machine given the same ID, including concurrent ones,
	// kept between builds, never part of a snapshot. A machine given CacheDirs is never
	// Continued (the scheduler sees to it), nor marked Continuable.
	CacheDirs []CacheDir
}

// CacheDir is one of a machine's persistent directories (Spec.CacheDirs).
type CacheDir struct {
	Path     string // where the step sees it: absolute, clean, outside Workdir (ir validates)
	Org      string // the build's org and pipeline: with Path, what the contents belong to
	Pipeline string
}

// ID names the directory's contents across builds: a hash of org, pipeline and path, so
// that another pipeline's, or another org's on a shared agent, is another directory.
func (c CacheDir) ID() string {
	h := sha256.Sum256([]byte(c.Org + "\x00" + c.Pipeline + "\x00" + c.Path))
	return hex.EncodeToString(h[:16])
}

// Continuer is an optional ability of a Machine: its one builds_in child runs on it in place
// instead of on a fresh machine made from a committed snapshot, which spares a commit and a
// machine start where no snapshot is needed (a linear chain without cache).
//
// Continue is called after Run returned exit code 0 (and after Commit, if the parent needed a
// snapshot). It returns a machine in the created state for spec (spec.Parent and spec.Image
// are ignored) whose filesystem is exactly this machine's as its command left it, with none
// of this step's processes left running: what a machine created from a snapshot committed now
// would hold. The returned machine owns everything this one held; this machine's Destroy
// then releases nothing. When Continue fails, this machine is unchanged and still needs its
// Destroy. The scheduler type-asserts; a backend that does not implement it makes a snapshot.
type Continuer interface {
	Continue(ctx context.Context, spec Spec) (Machine, error)
}

// Preparer is an optional ability of a Backend: a machine may be made ready ahead, while its
// step waits for a parallelism slot, so that the slot is held by the command alone. The
// scheduler calls Prepare instead of Create for a step that is ready (its parent ended, the
// cache missed) but finds no free slot, with at most as many prepared machines waiting as
// there are slots, and injects the workspace into it before the slot too; Run comes once the
// step has its slot. Prepare returns a machine in the created state (the lifecycle above is
// unchanged) in which the backend did what it could without running the command: docker
// creates the container (and starts it idle when it has a network of its own, whose setup is
// most of a short step's cost). A prepared machine
// whose step never runs (fail-fast, cancel) is destroyed; a failed Prepare only costs the
// head start (the step then creates its machine in its slot as usual).
type Preparer interface {
	Prepare(ctx context.Context, spec Spec) (Machine, error)
}

// Drainer is an optional ability of a Backend: Drain says that the run makes no more
// machines as far as the scheduler can tell (every step has made the machine of its last
// possible attempt, or will make none), so what the backend keeps for the run's next machines
// can go now rather than at Close. It is a hint, never a promise: an infrastructure failure
// may still bring a retry's machine, which the backend must serve as usual, only without
// what it let go. Drain does not block.
type Drainer interface {
	Drain(run string)
}

// Reinjector is an optional ability of a Machine: after Run returned exit code 0 and before
// Commit, Reinject overlays the workspace onto /workspace again, exactly as Inject does before
// Run (files added or overwritten, nothing deleted). The scheduler calls it for an ephemeral
// snapshot that only this run's children start from, each of which would inject the same
// tree onto it: overlaying is idempotent, so such a snapshot plus a child's Inject equals the
// snapshot with the tree already overlaid, and one injection spares one per child. Never for
// a cached snapshot (a later run's source differs) nor one artifacts are read from.
type Reinjector interface {
	Reinject(ctx context.Context, ws *source.Tree) error
}

// SnapshotLister is an optional ability of a Backend: one call lists the live kept snapshots
// (those PruneSnapshots considers), so that checking many cache entries at start costs one
// round trip instead of one SnapshotExists each. An id it does not list may still exist
// (another state dir's snapshot); callers ask SnapshotExists for those.
//
// ListSnapshots may decline with ErrNotListed instead: the backend has no listing at hand and
// knows, from records of its own, that no hm process died holding anything since its last
// full reconcile. Housekeeping that compares the registry with the listing (dropping entries
// of vanished snapshots, pruning unregistered ones) then waits for the next full reconcile;
// a caller that needs existence checks them one by one.
type SnapshotLister interface {
	ListSnapshots(ctx context.Context) ([]string, error)
}

// ArtifactCopier is an optional ability of a Backend: it copies the files under /workspace
// of a snapshot that patterns (clean, relative to /workspace, as ir validated them) match
// into dst, reading only what may match (never the whole snapshot), through an
// artifact.Collector so that every backend refuses symlinks and bounds sizes alike. The
// scheduler commits a step with artifacts (an ephemeral snapshot when nothing else needs
// one) and copies from that, and from the cached snapshot on a cache hit. Owner labels
// anything the copy creates meanwhile (docker's temporary container), for reconcile.
type ArtifactCopier interface {
	CopyArtifacts(ctx context.Context, snapshot string, owner Owner, patterns []string, dst *os.Root) (artifact.Result, error)
}

// ErrNotListed is what SnapshotLister.ListSnapshots returns when it declines to list.
var ErrNotListed = errors.New("snapshots not listed: nothing to reconcile")

// CacheDirVolumes is an optional ability of a Backend that keeps cache directories
// (Spec.CacheDirs) outside the state dir, as docker's volumes; the others' are directories
// of the state dir that package cachedir sizes and removes itself.
type CacheDirVolumes interface {
	// CacheDirSizes returns the bytes held by each cache directory it keeps, by ID.
	CacheDirSizes(ctx context.Context) (map[string]int64, error)
	// RemoveCacheDir deletes the cache directory ID. Idempotent; an error for one in use.
	RemoveCacheDir(ctx context.Context, id string) error
}

// Owner identifies the hm run and step a machine or snapshot belongs to.
type Owner struct {
	RunID   string
	StepKey string
	// PID is the process id of the hm process that owns the run; reconcile removes what
	// belongs to PIDs that are gone.
	PID int
}

// Machine is one step's execution environment; see the package doc for its lifecycle.
type Machine interface {
	// Inject overlays the workspace onto /workspace.
	Inject(ctx context.Context, ws *source.Tree) error

	// Run runs the command, streaming its stdout and stderr as they are produced, and returns
	// its exit code. A non-nil error means the command could not be run or was aborted
	// (ctx done); the exit code is then meaningless.
	Run(ctx context.Context, stdout, stderr io.Writer) (exitCode int, err error)

	// Commit snapshots the machine's filesystem and returns the snapshot id. An ephemeral
	// snapshot is only needed until the run ends; reconcile removes it if the run dies.
	Commit(ctx context.Context, ephemeral bool) (string, error)

	// Destroy releases the machine. Idempotent; safe in any state.
	Destroy(ctx context.Context) error
}

// BaseEnv is the environment every step starts from, before the node env and -e flags.
var BaseEnv = []string{
	"HOME=/root",
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}

// Workdir is where the workspace lives inside every machine.
const Workdir = "/workspace"

// Lifecycle records where a Machine stands in the lifecycle above, so that every backend
// enforces it alike. Machines embed it and guard it with their own mutex.
type Lifecycle struct {
	Ran       bool // Run returned an exit code
	Exit      int
	Committed bool
	Destroyed bool // Destroy was called: Run must not start, a running Run is aborted
}

// CommitAllowed returns why Commit may not run now (wrapping errs.ErrInfra), or nil: only
// after Run returned exit code 0, at most once, never after Destroy.
func (l *Lifecycle) CommitAllowed() error {
	switch {
	case l.Destroyed:
		return fmt.Errorf("%w: machine destroyed", errs.ErrInfra)
	case l.Committed:
		return fmt.Errorf("%w: already committed", errs.ErrInfra)
	case !l.Ran || l.Exit != 0:
		return fmt.Errorf("%w: the step did not run to exit code 0", errs.ErrInfra)
	}
	return nil
}

// RunAborted is the error Run returns when ctx ended the step: ctx's error, with the cancel
// cause (a step or pipeline timeout) when there is one, so the scheduler can tell them apart.
func RunAborted(ctx context.Context, backend string) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%s: run aborted: %w (%w)", backend, err, cause)
	}
	return fmt.Errorf("%s: run aborted: %w", backend, err)
}
