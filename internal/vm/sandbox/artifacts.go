package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// CopyArtifacts implements vm.ArtifactCopier. A snapshot's filesystem is never mounted on
// the host (the overlay only exists in a step's mount namespace), so its /workspace is read
// as overlayfs would merge it, from the snapshot's committed layers and its image's layers
// (layerView): a whiteout hides a name, an opaque directory what lies below it. The
// sandbox mounts with redirect_dir and metacopy off, so those two rules are all of it.
//
// The record is read under the lock; the layers are read without it. They stay while the
// snapshot does, which the caller holds (its ephemeral snapshot, or a cache entry: removed
// meanwhile by `hm cache rm`, the copy fails).
func (b *Backend) CopyArtifacts(ctx context.Context, snapshot string, _ vm.Owner, patterns []string, dst *os.Root) (artifact.Result, error) {
	fail := func(err error) (artifact.Result, error) {
		return artifact.Result{}, fmt.Errorf("sandbox: artifacts of snapshot %s: %w", snapshot, err)
	}
	unlock, err := b.lock()
	if err != nil {
		return fail(err)
	}
	snap, err := b.readSnap(snapshot)
	unlock()
	if err != nil {
		return fail(fmt.Errorf("%w: %w", errs.ErrInfra, err))
	}
	img, err := b.store.Resolve(ctx, snap.Image)
	if err != nil {
		return fail(err)
	}
	var layers []string
	for _, l := range snap.Layers {
		layers = append(layers, b.layerDir(l))
	}
	layers = append(layers, reversed(img.Dirs)...)
	v := &layerView{layers: layers}
	c := artifact.New(dst, patterns)
	ws, err := fs.Sub(v, strings.TrimPrefix(vm.Workdir, "/"))
	if err != nil {
		return fail(err)
	}
	if err := c.FromFS(ctx, ws); err != nil {
		return fail(err)
	}
	return c.Result(), nil
}

// layerView is a read-only fs.FS (with ReadDir) of the union of overlay layers, top first.
// Nothing is followed: ReadDir reports symlinks as symlinks, and Open opens only a regular
// file of the top layer holding the name, with O_NOFOLLOW.
type layerView struct {
	layers []string
}

// lookup resolves name through the union: the directories of the layers that contribute
// to it, top first (one entry for a non-directory), and its top entry's info.
func (v *layerView) lookup(name string) ([]string, fs.FileInfo, error) {
	cur := v.layers
	var top fs.FileInfo
	if name == "." {
		fi, err := os.Lstat(cur[0])
		return cur, fi, err
	}
	for comp := range strings.SplitSeq(name, "/") {
		if top != nil && !top.IsDir() {
			return nil, nil, fs.ErrNotExist
		}
		var next []string
		top = nil
		for _, d := range cur {
			p := filepath.Join(d, comp)
			fi, err := os.Lstat(p)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			if isWhiteout(fi) {
				break
			}
			if top == nil {
				top = fi
			} else if !fi.IsDir() {
				break // a lower non-directory under a directory is hidden
			}
			next = append(next, p)
			if !fi.IsDir() || isOpaque(p) {
				break
			}
		}
		if top == nil {
			return nil, nil, fs.ErrNotExist
		}
		cur = next
	}
	return cur, top, nil
}

func isWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0
}

// Open implements fs.FS for regular files.
func (v *layerView) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	dirs, fi, err := v.lookup(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	f, err := os.OpenFile(dirs[0], os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// ReadDir implements fs.ReadDirFS: the merged listing, sorted by name.
func (v *layerView) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	dirs, fi, err := v.lookup(name)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	if !fi.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	seen := map[string]bool{}
	var out []fs.DirEntry
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if seen[e.Name()] {
				continue
			}
			seen[e.Name()] = true
			if e.Type()&fs.ModeCharDevice != 0 {
				if info, err := e.Info(); err == nil && isWhiteout(info) {
					continue
				}
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

var _ vm.ArtifactCopier = (*Backend)(nil)
