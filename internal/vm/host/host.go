// Package host is the `host` VM backend: every step runs `sh -c CMD` directly on the host,
// as the hm user, in its own work directory under the state dir.
//
// No isolation; only the workspace directory is snapshotted. The step sees and can change the
// whole host; what it writes outside its work directory (/opt, $HOME, /tmp) is neither
// snapshotted nor undone. The work directory stands in for /workspace: it is the command's
// working directory, but its path is not /workspace.
//
// # State
//
// Everything lives under STATE/host:
//
//	work/COOKIE    a machine's work directory; COOKIE (proc.NewCookie) names the owning hm
//	               process and marks the step's processes (HM_STEP_COOKIE)
//	snap/k-RANDOM  a kept (cached) snapshot
//	snap/e-COOKIE  an ephemeral snapshot, recognisable as its owner's
//	trash/COOKIE   something being deleted
//
// Commit renames the work directory into snap/, so a snapshot appears whole or not at all;
// deletion renames into trash/ first, so a crash mid-delete leaves nothing that looks valid.
// Reconcile removes work directories, ephemeral snapshots and trash of owners that are gone,
// and kills the processes carrying their cookies.
package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/vm"
)

// ImageID is what ResolveImage returns for every reference: the host has one "image".
const ImageID = "host"

const (
	keptPrefix      = "k-"
	ephemeralPrefix = "e-"
)

// Backend is the host backend. It is safe for concurrent use, also by several hm processes
// sharing one state dir.
type Backend struct {
	dir string
	// ownerOf names the hm process behind vm.Owner.PID; tests replace it to fake dead owners.
	ownerOf func(pid int) (proc.Owner, error)
}

var _ vm.Backend = (*Backend)(nil)

// New returns the host backend keeping its state under stateDir/host.
func New(stateDir string) *Backend {
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs // the work directory becomes the command's cwd
	}
	return &Backend{dir: filepath.Join(stateDir, "host"), ownerOf: ownerOf}
}

func ownerOf(pid int) (proc.Owner, error) {
	if pid == 0 || pid == os.Getpid() {
		return proc.Self(), nil
	}
	return proc.OwnerOf(pid)
}

// Name implements vm.Backend.
func (b *Backend) Name() string { return "host" }

// ResolveImage implements vm.Backend: the image is ignored, every reference names the host.
func (b *Backend) ResolveImage(ctx context.Context, ref string) (string, error) {
	return ImageID, nil
}

// Create implements vm.Backend. A root step gets an empty work directory; a child gets a
// copy of its parent's snapshot.
func (b *Backend) Create(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	if (spec.Image == "") == (spec.Parent == "") {
		return nil, fmt.Errorf("host: create: %w: exactly one of Image and Parent must be set", errs.ErrInfra)
	}
	owner, err := b.ownerOf(spec.Owner.PID)
	if err != nil {
		return nil, fmt.Errorf("host: create: %w: owner process %d: %v", errs.ErrInfra, spec.Owner.PID, err)
	}
	if err := b.mkdirs(); err != nil {
		return nil, err
	}
	cookie := proc.NewCookie(owner)
	m := &machine{spec: spec, cookie: cookie, work: filepath.Join(b.dir, "work", cookie), b: b}
	if spec.Parent == "" {
		if err := os.Mkdir(m.work, 0o755); err != nil {
			return nil, fmt.Errorf("host: create: %w: %w", errs.ErrInfra, err)
		}
		return m, nil
	}
	src, ok := b.snapPath(spec.Parent)
	if !ok {
		return nil, fmt.Errorf("host: create: %w: %q is not a host snapshot id", errs.ErrInfra, spec.Parent)
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, fmt.Errorf("host: create: %w: snapshot %s: %v", errs.ErrInfra, spec.Parent, err)
	}
	if err := copyTree(ctx, src, m.work); err != nil {
		// The half-copied directory is this live process's: delete it now.
		_ = b.discard(m.work)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("host: create from snapshot %s: %w", spec.Parent, err)
		}
		return nil, fmt.Errorf("host: create from snapshot %s: %w: %w", spec.Parent, errs.ErrInfra, err)
	}
	return m, nil
}

func (b *Backend) mkdirs() error {
	for _, d := range []string{"work", "snap", "trash"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o755); err != nil {
			return fmt.Errorf("host: state dir: %w: %w", errs.ErrInfra, err)
		}
	}
	return nil
}

// snapPath maps a snapshot id to its directory; false for anything this backend never made.
func (b *Backend) snapPath(id string) (string, bool) {
	if len(id) <= 2 || (!strings.HasPrefix(id, keptPrefix) && !strings.HasPrefix(id, ephemeralPrefix)) ||
		strings.ContainsAny(id, "/\x00") {
		return "", false
	}
	return filepath.Join(b.dir, "snap", id), true
}

// SnapshotExists implements vm.Backend.
func (b *Backend) SnapshotExists(ctx context.Context, id string) (bool, error) {
	p, ok := b.snapPath(id)
	if !ok {
		return false, nil
	}
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("host: snapshot %s: %w: %w", id, errs.ErrInfra, err)
	}
	return fi.IsDir(), nil
}

// RemoveSnapshot implements vm.Backend. Idempotent.
func (b *Backend) RemoveSnapshot(ctx context.Context, id string) error {
	p, ok := b.snapPath(id)
	if !ok {
		return fmt.Errorf("host: remove snapshot: %w: %q is not a host snapshot id", errs.ErrInfra, id)
	}
	if err := b.discard(p); err != nil {
		return fmt.Errorf("host: remove snapshot %s: %w: %w", id, errs.ErrInfra, err)
	}
	return nil
}

// discard deletes directory p: renamed into trash first, which is atomic, so that p stops
// looking valid at once and a crash mid-delete leaves only trash for reconcile. Absent p is
// not an error.
func (b *Backend) discard(p string) error {
	if err := os.MkdirAll(filepath.Join(b.dir, "trash"), 0o755); err != nil {
		return err
	}
	t := filepath.Join(b.dir, "trash", proc.NewCookie(proc.Self()))
	if err := os.Rename(p, t); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return statedir.RemoveAll(t)
}

// Reconcile implements vm.Backend: it kills the processes of dead hm processes' steps of this
// state dir and removes their work directories, their ephemeral snapshots and their trash.
// What live owners hold is left alone.
func (b *Backend) Reconcile(ctx context.Context) error {
	// Only steps of this state dir: another state dir's hm (another user, a test suite)
	// judges its own, and a step's work directory exists for as long as it can run.
	for c := range proc.Cookies() {
		if o, ok := proc.CookieOwner(c); ok && !o.Alive() && exists(filepath.Join(b.dir, "work", c)) {
			proc.KillCookie(c)
		}
	}
	var errList []error
	dead := func(cookie string) bool {
		o, ok := proc.CookieOwner(cookie)
		return ok && !o.Alive()
	}
	for _, d := range []struct {
		sub   string
		owned func(name string) (cookie string, ok bool)
	}{
		{"work", func(n string) (string, bool) { return n, true }},
		{"snap", func(n string) (string, bool) { return strings.CutPrefix(n, ephemeralPrefix) }},
		{"trash", func(n string) (string, bool) { return n, true }},
	} {
		names, err := statedir.List(filepath.Join(b.dir, d.sub))
		if err != nil {
			errList = append(errList, err)
			continue
		}
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("host: reconcile: %w", err)
			}
			cookie, ok := d.owned(n)
			if !ok || !dead(cookie) {
				continue
			}
			p := filepath.Join(b.dir, d.sub, n)
			if d.sub == "trash" {
				err = statedir.RemoveAll(p)
			} else {
				proc.KillCookie(cookie)
				err = b.discard(p)
			}
			if err != nil {
				errList = append(errList, err)
			}
		}
	}
	if err := errors.Join(errList...); err != nil {
		return fmt.Errorf("host: reconcile: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// SnapshotSize implements vm.Backend: a host snapshot is a whole copy of its directory.
func (b *Backend) SnapshotSize(ctx context.Context, id string) (int64, error) {
	p, ok := b.snapPath(id)
	if !ok {
		return 0, fmt.Errorf("host: snapshot size: %w: %q is not a host snapshot id", errs.ErrInfra, id)
	}
	n, err := statedir.Size(p)
	if err != nil {
		return 0, fmt.Errorf("host: snapshot size %s: %w: %w", id, errs.ErrInfra, err)
	}
	return n, nil
}

// PruneSnapshots implements vm.Backend. Kept snapshots are named after the cookie of the
// machine that committed them, which names its hm process.
func (b *Backend) PruneSnapshots(ctx context.Context, keep func(id string) bool) ([]string, error) {
	names, err := statedir.List(filepath.Join(b.dir, "snap"))
	if err != nil {
		return nil, fmt.Errorf("host: prune snapshots: %w: %w", errs.ErrInfra, err)
	}
	var removed []string
	for _, n := range names {
		cookie, kept := strings.CutPrefix(n, keptPrefix)
		if !kept || keep(n) {
			continue
		}
		if o, ok := proc.CookieOwner(cookie); ok && o.Alive() {
			continue
		}
		if err := b.RemoveSnapshot(ctx, n); err != nil {
			return removed, err
		}
		removed = append(removed, n)
	}
	return removed, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// Inject implements vm.Machine.
func (m *machine) Inject(ctx context.Context, ws *source.Tree) error {
	if ws == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("host: inject: %w", err)
	}
	if err := ws.Materialize(m.work); err != nil {
		return fmt.Errorf("host: inject: %w", err)
	}
	return nil
}
