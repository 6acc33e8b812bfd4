// Package sandbox is the `sandbox` VM backend: every step runs in new mount, PID, UTS, IPC,
// cgroup and (unless Options.Network is NetworkHost) network namespaces on an overlayfs root,
// confined at least as tightly as Docker's default profile (see Confinement below), with no
// daemon: the hm binary re-executes itself (/proc/self/exe) as the sandbox's init (package
// sandboxinit), which is why main must call MaybeInit first. The backend keeps one init
// started ahead of need (Options.NoPrestart), in its namespaces with / made private, its
// cgroups joined, waiting for its step; it is started once the previous step's shell has
// exited, so that re-executing hm overlaps the engine's work between steps instead of
// competing with a step for the CPU. Close releases it.
//
// # Root filesystem and snapshots
//
// A step's root is an overlay: the lower layers are its image's layers (from the image
// store; the pseudo-image "host" is the host's root filesystem) under the committed
// snapshot layers of its builds_in chain, the upper layer is the step's own directory.
// Commit renames that upper directory into an immutable layer and records the snapshot as a
// small file naming the image and the chain of layers, so committing costs the same for one
// file or a million. A chain longer than Options.MaxChain layers is flattened at commit (its
// layers are merged into one new layer by hard links), keeping mounts well inside overlayfs'
// lower-layer limits.
//
// The init mounts the overlay, /proc, a minimal /dev, a tmpfs /tmp, /sys and the host's
// /etc/resolv.conf and /etc/hosts (read-only) inside the step's own mount namespace, then
// pivot_roots into it. Nothing is ever mounted in hm's namespace: when the step's last
// process exits the kernel unmounts everything. When the step's shell exits, the init
// SIGKILLs and reaps every process left in the PID namespace, daemons ignoring SIGTERM
// included, and reports the shell's status: Run returns then, while the init's exit tears
// the namespaces and mounts down in the background (Commit, and the deletion of the
// machine's directory after Destroy, wait for that). On timeout, cancel or Destroy the
// init is killed and the kernel kills every process left in the PID namespace. The init
// dies with hm too (PR_SET_PDEATHSIG).
//
// # Confinement
//
// A step is someone else's code running as root inside its machine (spec/semantics.md §
// Isolation). Before the step's shell starts, the init (on the one thread that forks the
// shell) loads Docker's default seccomp profile and cuts the capability sets to Docker's
// default 14 (package confine computes both); it is itself not dumpable, so the step cannot
// ptrace it or read its /proc entries. Docker's masked paths (/proc/kcore, /proc/keys, ...)
// are covered, its read-only paths (/proc/sys, /proc/sysrq-trigger, ...) and /sys are
// read-only, the step's own cgroups are mounted read-only at /sys/fs/cgroup, the host's
// resolver files are read-only binds, all of which the step, lacking CAP_SYS_ADMIN and
// refused mount(2) by seccomp, cannot undo. Devices: a cgroup v1 devices controller allows
// only the standard devices (mknod works and the node stays useless, as with Docker); where
// there is none (cgroup v2 would need a BPF program), every mount the step can write to is
// nodev and /dev is read-only instead.
//
// Nothing of hm is named inside: the init is known by its command line (sandboxinit.Arg0)
// and an anonymous memfd marker naming the state dir's tag and the cookie
// (sandboxinit.MarkerFD), readable only by what may ptrace the init; its environment holds
// nothing of hm's. On the `host` pseudo-image the state dir is hidden by an overlayfs
// whiteout in the step's upper layer (not a mount, which the mount table would name and
// root could unmount). The state dir's sandbox/ and the image store are root's alone (0700):
// the device nodes and setuid binaries steps leave in layers are out of other users' reach.
//
// The default network is a namespace of the step's own with outbound access through
// slirp4netns (a user-space TCP/IP stack, itself sandboxed): nothing changes on the host, and
// it exits with the init, whose lifeline pipe it watches. A spare init gets its network when
// it is started, ahead of need. NetworkNone leaves loopback only; NetworkHost is the host's
// namespace, an explicit opt-in.
//
// # State
//
// Everything lives under STATE/sandbox:
//
//	machines/COOKIE   a machine: upper/ (the step's writes), work/ (overlayfs' scratch),
//	                  merged/ (the mount point, only ever mounted in the step's namespace),
//	                  l/N (symlinks to the lower layers, top first, which keep the mount
//	                  options short and tell the garbage collector what the machine uses),
//	                  host/ and host-empty/ (mount points for the host image's root, when
//	                  it lies under snapshot layers)
//	layers/ID         an immutable layer: a committed upper directory
//	snaps/ID.json     a snapshot: image id and layer chain; ID is k-COOKIE (kept) or
//	                  e-COOKIE (ephemeral), COOKIE being the committing machine's
//	trash/COOKIE      something being deleted
//	lock              flock(2) serialising snapshot and layer changes across hm processes
//
// COOKIE (proc.NewCookie) names the owning hm process; the init carries it in its marker
// and step cgroups are named by it, so Reconcile can find and remove what dead hm processes
// left. Layers no snapshot and no machine uses are deleted.
package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// MaybeInit runs the sandbox init when this process was started as one, and never returns
// then; otherwise it returns at once. Call it first thing in main, and in TestMain of tests
// that run sandboxes (the test binary is what re-executes itself then):
//
//	func main() { sandbox.MaybeInit(); ... }
//
// Linking this package already makes the init take over during package initialisation
// (sandboxinit's init function), usually before the initialisers of hm's heavier
// dependencies run; the call in main guarantees it whatever the initialisation order.
func MaybeInit() { sandboxinit.Maybe() }

// DefaultMaxChain is how many snapshot layers a chain may stack before a commit flattens
// it. Overlayfs takes up to 500 lower layers; image layers come on top of these.
const DefaultMaxChain = 100

const (
	keptPrefix      = "k-"
	ephemeralPrefix = "e-"
)

// Unavailable is the error for a host where the sandbox cannot work: an
// *errs.UnavailableError of backend "sandbox" (the front end says what to do).
func Unavailable(format string, args ...any) error {
	return &errs.UnavailableError{Backend: "sandbox", Msg: fmt.Sprintf(format, args...)}
}

// NetworkMode is a step's network.
type NetworkMode string

const (
	// NetworkPrivate (the default, also "") is a network namespace of the step's own with
	// outbound access.
	NetworkPrivate NetworkMode = "private"
	// NetworkNone is a network namespace of the step's own with only loopback up.
	NetworkNone NetworkMode = "none"
	// NetworkHost shares the host's network namespace: an explicit opt-in.
	NetworkHost NetworkMode = "host"
)

// Options tune the backend.
type Options struct {
	// Network is every step's network; "" means NetworkPrivate.
	Network NetworkMode
	// NetworkNone gives every step a network namespace of its own with only loopback up;
	// by default steps share the host's network. Deprecated: set Network to NetworkNone.
	NetworkNone bool
	// MemoryMax limits each step's memory, in bytes (cgroup memory.max); 0: no limit.
	MemoryMax int64
	// PidsMax limits each step's number of tasks (cgroup pids.max); 0: no limit.
	PidsMax int64
	// CPUs limits each step's CPU time to this many CPUs' worth per period, fractional
	// (cgroup cpu.max, or cpu.cfs_quota_us on v1); 0: no limit.
	CPUs float64
	// Unconfined runs steps without the confinement of spec § Isolation (capabilities,
	// seccomp, masked paths, device rules): for benchmarks measuring what it costs, never
	// for running pipelines. Nothing outside bench/ sets it.
	Unconfined bool
	// MaxChain is how many snapshot layers a chain may stack before a commit flattens it;
	// 0 means DefaultMaxChain.
	MaxChain int
	// NoPull makes ResolveImage fail for images not in the store instead of trying to pull
	// them from their registry.
	NoPull bool
	// NoPrestart turns off the spare init: by default the backend keeps one sandbox init
	// started ahead of need (in its namespaces, waiting for a step), so that re-executing
	// hm does not add to a step's latency. Close kills it.
	NoPrestart bool
}

// Backend is the sandbox backend. It is safe for concurrent use, also by several hm
// processes sharing one state dir.
type Backend struct {
	state string // the hm state dir, hidden inside sandboxes whose image is the host's root
	dir   string // STATE/sandbox
	store *imagestore.Store
	opts  Options
	cg    cgroups
	pool  pool
	bg    sync.WaitGroup // deletions in the background, see removeInBackground
	// ownerOf names the hm process behind vm.Owner.PID; tests replace it to fake dead owners.
	ownerOf func(pid int) (proc.Owner, error)
	busy    busyLayers
	tag     string // names the state dir in init markers (stateTag)
	slirp   string // the slirp4netns binary, "" if not installed
}

var _ vm.Backend = (*Backend)(nil)

// New returns the sandbox backend keeping its state under stateDir/sandbox and taking
// images from store. Not running as root fails with a sandbox_unavailable error; a kernel
// that refuses namespaces or overlayfs is reported by the first Run.
func New(stateDir string, store *imagestore.Store, opts Options) (*Backend, error) {
	if os.Geteuid() != 0 {
		return nil, Unavailable("the sandbox backend needs root (namespaces, overlayfs mounts); rootless sandboxes are not supported yet")
	}
	if opts.MaxChain <= 0 {
		opts.MaxChain = DefaultMaxChain
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: state dir: %w: %w", errs.ErrInfra, err)
	}
	abs, err := filepath.Abs(stateDir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: state dir: %w: %w", errs.ErrInfra, err)
	}
	b := &Backend{state: abs, dir: filepath.Join(abs, "sandbox"), store: store, opts: opts, ownerOf: ownerOf}
	b.tag = stateTag(b.dir)
	b.slirp, _ = exec.LookPath("slirp4netns")
	if b.slirp == "" && b.network() == NetworkPrivate {
		return nil, errNoSlirp
	}

	if err := b.mkdirs(); err != nil {
		return nil, err
	}
	b.cg = detectCgroups()
	return b, nil
}

func ownerOf(pid int) (proc.Owner, error) {
	if pid == 0 || pid == os.Getpid() {
		return proc.Self(), nil
	}
	return proc.OwnerOf(pid)
}

func (b *Backend) mkdirs() error {
	// Root's alone: layers and machines hold what steps made, device nodes and setuid
	// binaries included, which must be out of reach of the host's other users.
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return fmt.Errorf("sandbox: state dir: %w: %w", errs.ErrInfra, err)
	}
	if err := os.Chmod(b.dir, 0o700); err != nil {
		return fmt.Errorf("sandbox: state dir: %w: %w", errs.ErrInfra, err)
	}
	for _, d := range []string{"machines", "layers", "snaps", "trash"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o755); err != nil {
			return fmt.Errorf("sandbox: state dir: %w: %w", errs.ErrInfra, err)
		}
	}
	return nil
}

// Name implements vm.Backend.
func (b *Backend) Name() string { return "sandbox" }

// ResolveImage implements vm.Backend: the image store's id for ref, pulling ref from its
// registry when the store does not have it (unless Options.NoPull).
func (b *Backend) ResolveImage(ctx context.Context, ref string) (string, error) {
	r, err := b.store.Resolve(ctx, ref)
	if err == nil {
		return r.ID, nil
	}
	if b.opts.NoPull || !errors.Is(err, errs.ErrImageNotFound) {
		return "", err
	}
	img, perr := b.store.Pull(ctx, ref)
	if perr != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("sandbox: resolve image %q: %w", ref, ctx.Err())
		}
		return "", &errs.ImageError{Ref: ref, Backend: "sandbox", Where: errs.InStore,
			Class: errs.ErrImageNotFound, Err: perr,
			Msg: fmt.Sprintf("image %q is not in the image store and could not be pulled: %v", ref, perr)}
	}
	return img.ID, nil
}

// ResolveLocal is ResolveImage without the pull: the id of the image the store holds now, or
// an *errs.ImageError (errs.ErrImageNotFound). --backend auto asks it of every candidate
// before it pulls anything.
func (b *Backend) ResolveLocal(ctx context.Context, ref string) (string, error) {
	r, err := b.store.Resolve(ctx, ref)
	if err != nil {
		return "", err
	}
	return r.ID, nil
}

// Create implements vm.Backend: it prepares the machine's directory; nothing is mounted
// until Run.
func (b *Backend) Create(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	if (spec.Image == "") == (spec.Parent == "") {
		return nil, fmt.Errorf("sandbox: create: %w: exactly one of Image and Parent must be set", errs.ErrInfra)
	}
	owner, err := b.ownerOf(spec.Owner.PID)
	if err != nil {
		return nil, fmt.Errorf("sandbox: create: %w: owner process %d: %v", errs.ErrInfra, spec.Owner.PID, err)
	}
	if err := b.mkdirs(); err != nil {
		return nil, err
	}
	cookie := proc.NewCookie(owner)
	m := &machine{b: b, spec: spec, cookie: cookie, owner: owner, dir: filepath.Join(b.dir, "machines", cookie)}
	if spec.Parent == "" {
		img, err := b.store.Resolve(ctx, spec.Image)
		if err != nil {
			return nil, err
		}
		m.image = img.ID
		if err := m.prepare(reversed(img.Dirs)); err != nil {
			return nil, err
		}
		return m, nil
	}
	// The parent's layers must not be collected between reading its record and the
	// machine's l/ links naming them.
	unlock, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	snap, err := b.readSnap(spec.Parent)
	if err != nil {
		return nil, fmt.Errorf("sandbox: create from snapshot %s: %w", spec.Parent, err)
	}
	img, err := b.store.Resolve(ctx, snap.Image)
	if err != nil {
		return nil, fmt.Errorf("sandbox: create from snapshot %s: %w", spec.Parent, err)
	}
	lowers := make([]string, 0, len(snap.Layers)+len(img.Dirs))
	for _, l := range snap.Layers {
		lowers = append(lowers, b.layerDir(l))
	}
	for _, d := range lowers {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("sandbox: create from snapshot %s: %w: layer missing: %v", spec.Parent, errs.ErrInfra, err)
		}
	}
	m.image, m.chain = snap.Image, snap.Layers
	if err := m.prepare(append(lowers, reversed(img.Dirs)...)); err != nil {
		return nil, err
	}
	return m, nil
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// prepare makes the machine's directory with its lower-layer links, top first.
func (m *machine) prepare(lowers []string) error {
	fail := func(err error) error {
		_ = m.b.discard(m.dir)
		return fmt.Errorf("sandbox: create: %w: %w", errs.ErrInfra, err)
	}
	if err := os.Mkdir(m.dir, 0o700); err != nil {
		return fail(err)
	}
	for _, d := range []string{"upper", "work", "merged", "l"} {
		if err := os.Mkdir(filepath.Join(m.dir, d), 0o755); err != nil {
			return fail(err)
		}
	}
	for i, d := range lowers {
		if err := os.Symlink(d, filepath.Join(m.dir, "l", strconv.Itoa(i))); err != nil {
			return fail(err)
		}
	}
	m.lowers = len(lowers)
	m.hostRoot = slices.Contains(lowers, "/")
	if m.hostRoot {
		if err := whiteOut(filepath.Join(m.dir, "upper"), m.b.state); err != nil {
			return fail(err)
		}
	}
	return nil
}

// snapPath maps a snapshot id to its record; false for anything this backend never made.
func (b *Backend) snapPath(id string) (string, bool) {
	if len(id) <= 2 || (!strings.HasPrefix(id, keptPrefix) && !strings.HasPrefix(id, ephemeralPrefix)) ||
		strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id[2:], ".") {
		return "", false
	}
	return filepath.Join(b.dir, "snaps", id+".json"), true
}

func (b *Backend) layerDir(id string) string { return filepath.Join(b.dir, "layers", id) }

// SnapshotExists implements vm.Backend: the record exists and so do all its layers, the
// image's included.
func (b *Backend) SnapshotExists(ctx context.Context, id string) (bool, error) {
	snap, err := b.readSnap(id)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, l := range snap.Layers {
		if _, err := os.Stat(b.layerDir(l)); err != nil {
			return false, nil
		}
	}
	if _, err := b.store.Resolve(ctx, snap.Image); err != nil {
		if errors.Is(err, errs.ErrImageNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// RemoveSnapshot implements vm.Backend. Idempotent. The snapshot's layers go once no other
// snapshot and no machine uses them.
func (b *Backend) RemoveSnapshot(ctx context.Context, id string) error {
	p, ok := b.snapPath(id)
	if !ok {
		return fmt.Errorf("sandbox: remove snapshot: %w: %q is not a sandbox snapshot id", errs.ErrInfra, id)
	}
	unlock, err := b.lock()
	if err != nil {
		return err
	}
	err = os.Remove(p)
	var trash []string
	if err == nil {
		trash, err = b.collect()
	} else if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	unlock()
	err = errors.Join(err, removeAll(trash...))
	if err != nil {
		return fmt.Errorf("sandbox: remove snapshot %s: %w: %w", id, errs.ErrInfra, err)
	}
	return nil
}

// PruneSnapshots implements vm.Backend: kept snapshots are named after the cookie of the
// machine that committed them, which names its hm process.
func (b *Backend) PruneSnapshots(ctx context.Context, keep func(id string) bool) ([]string, error) {
	names, err := statedir.List(filepath.Join(b.dir, "snaps"))
	if err != nil {
		return nil, fmt.Errorf("sandbox: prune snapshots: %w: %w", errs.ErrInfra, err)
	}
	var removed []string
	for _, n := range names {
		id, ok := strings.CutSuffix(n, ".json")
		if !ok {
			continue
		}
		cookie, kept := strings.CutPrefix(id, keptPrefix)
		if !kept || keep(id) {
			continue
		}
		if o, ok := proc.CookieOwner(cookie); ok && o.Alive() {
			continue
		}
		if err := b.RemoveSnapshot(ctx, id); err != nil {
			return removed, err
		}
		removed = append(removed, id)
	}
	return removed, nil
}

// lock takes the backend's lock (flock on STATE/sandbox/lock): it serialises the changes of
// snapshot records and layers with the garbage collector, between goroutines (each call
// opens its own file description) and between hm processes.
func (b *Backend) lock() (unlock func(), err error) {
	return statedir.Lock(filepath.Join(b.dir, "lock"))
}

// toTrash renames p into trash/, which is atomic, so that p stops looking valid at once and
// a crash mid-delete leaves only trash for reconcile. It returns the trash path, "" when p
// did not exist.
func (b *Backend) toTrash(p string) (string, error) {
	t := filepath.Join(b.dir, "trash", proc.NewCookie(proc.Self()))
	if err := os.Rename(p, t); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return t, nil
}

// discard deletes directory p through the trash. Absent p is not an error.
func (b *Backend) discard(p string) error {
	t, err := b.toTrash(p)
	if err != nil || t == "" {
		return err
	}
	return removeAll(t)
}

// removeInBackground deletes trash path t (nothing for "") without making the caller
// wait, once after is closed (nil: at once): a machine's files wait for its init to be
// gone with its mounts. A failure leaves t to the next reconcile, as a crash would.
func (b *Backend) removeInBackground(t string, after <-chan struct{}) {
	if t == "" {
		return
	}
	b.bg.Go(func() {
		if after != nil {
			<-after
		}
		_ = os.RemoveAll(t)
	})
}

// waitBackground waits for the deletions in the background started so far.
func (b *Backend) waitBackground() { b.bg.Wait() }

// removeAll removes each path, joining the errors.
func removeAll(paths ...string) error {
	var errList []error
	for _, p := range paths {
		if p != "" {
			errList = append(errList, statedir.RemoveAll(p))
		}
	}
	return errors.Join(errList...)
}

func randomHex() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return hex.EncodeToString(b[:])
}
