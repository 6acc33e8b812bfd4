package sandbox

import (
	"context"
	"encoding/json"
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
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/statedir"
)

// snapRecord is a snapshot's record, snaps/ID.json.
type snapRecord struct {
	// Image is the image id the chain stands on.
	Image string `json:"image"`
	// Layers are the chain's layer ids, top (most recent) first.
	Layers []string `json:"layers"`
}

// readSnap reads a snapshot's record; fs.ErrNotExist (wrapped) when there is none.
func (b *Backend) readSnap(id string) (snapRecord, error) {
	p, ok := b.snapPath(id)
	if !ok {
		return snapRecord{}, fmt.Errorf("%q is not a sandbox snapshot id: %w", id, fs.ErrNotExist)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return snapRecord{}, fmt.Errorf("snapshot %s: %w", id, fs.ErrNotExist)
		}
		return snapRecord{}, fmt.Errorf("sandbox: snapshot %s: %w: %w", id, errs.ErrInfra, err)
	}
	var r snapRecord
	if err := json.Unmarshal(data, &r); err != nil || r.Image == "" {
		// A record torn by a crash names nothing usable.
		return snapRecord{}, fmt.Errorf("snapshot %s: unreadable record: %w", id, fs.ErrNotExist)
	}
	return r, nil
}

// writeSnap writes a snapshot record atomically. The caller holds the lock.
func (b *Backend) writeSnap(id string, r snapRecord) error {
	p, ok := b.snapPath(id)
	if !ok {
		return fmt.Errorf("bad snapshot id %q", id)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(b.dir, "snaps", "."+id+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// collect moves the layers that no snapshot record and no machine's l/ links use into the
// trash and returns their trash paths, for the caller to delete after unlocking. The
// caller holds the lock.
func (b *Backend) collect() ([]string, error) {
	used := map[string]bool{}
	snaps, err := statedir.List(filepath.Join(b.dir, "snaps"))
	if err != nil {
		return nil, err
	}
	for _, n := range snaps {
		id, ok := strings.CutSuffix(n, ".json")
		if !ok {
			continue
		}
		r, err := b.readSnap(id)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, l := range r.Layers {
			used[l] = true
		}
	}
	machines, err := statedir.List(filepath.Join(b.dir, "machines"))
	if err != nil {
		return nil, err
	}
	layers := filepath.Join(b.dir, "layers")
	for _, mname := range machines {
		links, err := statedir.List(filepath.Join(b.dir, "machines", mname, "l"))
		if err != nil {
			continue // being deleted
		}
		for _, l := range links {
			target, err := os.Readlink(filepath.Join(b.dir, "machines", mname, "l", l))
			if err == nil && filepath.Dir(target) == layers {
				used[filepath.Base(target)] = true
			}
		}
	}
	names, err := statedir.List(layers)
	if err != nil {
		return nil, err
	}
	var trash []string
	for _, n := range names {
		if used[n] {
			continue
		}
		t, err := b.toTrash(filepath.Join(layers, n))
		if err != nil {
			return trash, err
		}
		trash = append(trash, t)
	}
	return trash, nil
}

// gc deletes unused layers.
func (b *Backend) gc() error {
	unlock, err := b.lock()
	if err != nil {
		return err
	}
	trash, err := b.collect()
	unlock()
	return errors.Join(err, removeAll(trash...))
}

// flatten merges overlayfs layers (lowest first) into the new directory dst as one layer
// that stacks on the same image layers exactly as the chain did: a later layer's entry
// replaces an earlier one's, whiteouts are kept (they may hide image files), an opaque
// directory drops what earlier layers had under it, and a directory replacing a
// non-directory becomes opaque so that image entries of that path stay hidden. Regular
// files are hard-linked from their (immutable) layers rather than copied.
func flatten(ctx context.Context, dst string, layers []string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	f := &flattener{ctx: ctx, dst: dst, dirs: map[string]string{}}
	for _, l := range layers {
		if err := f.apply(l); err != nil {
			return fmt.Errorf("flatten %s: %w", l, err)
		}
	}
	// Directory owners, modes and times last, from the top layer that has each directory,
	// deepest first: adding entries changed their mtimes.
	rels := make([]string, 0, len(f.dirs))
	for rel := range f.dirs {
		rels = append(rels, rel)
	}
	slices.SortFunc(rels, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, rel := range rels {
		to := filepath.Join(dst, rel)
		if fi, err := os.Lstat(to); err != nil || !fi.IsDir() {
			continue
		}
		fi, err := os.Lstat(f.dirs[rel])
		if err != nil {
			return err
		}
		if err := copyMeta(to, fi, false); err != nil {
			return err
		}
	}
	return nil
}

type flattener struct {
	ctx  context.Context
	dst  string
	dirs map[string]string // relative directory path → the source directory whose metadata wins
}

func (f *flattener) apply(layer string) error {
	return filepath.WalkDir(layer, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := f.ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(layer, p)
		if err != nil {
			return err
		}
		if rel == "." {
			f.dirs["."] = p
			return nil
		}
		to := filepath.Join(f.dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		existing, lerr := os.Lstat(to)
		exists := lerr == nil
		if fi.IsDir() {
			opaque := isOpaque(p)
			if exists && existing.IsDir() && !opaque {
				f.dirs[rel] = p
				return nil // merges with what is there
			}
			if exists {
				if err := os.RemoveAll(to); err != nil {
					return err
				}
			}
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
			// Replacing a non-directory (or a whiteout) must keep hiding the image's
			// directory of that path, as the chain did.
			if opaque || exists {
				if err := unix.Lsetxattr(to, imagestore.OpaqueXattr, []byte("y"), 0); err != nil {
					return err
				}
			}
			f.dirs[rel] = p
			return nil
		}
		if exists {
			if err := os.RemoveAll(to); err != nil {
				return err
			}
		}
		return copyEntry(p, to, fi)
	})
}

func isOpaque(p string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, imagestore.OpaqueXattr, buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// copyEntry recreates the non-directory from at to: a hard link for regular files (layers
// are immutable, so sharing the inode is safe), a copy where linking fails.
func copyEntry(from, to string, fi fs.FileInfo) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch m := fi.Mode(); {
	case m.IsRegular():
		if err := os.Link(from, to); err == nil {
			return nil
		}
		if err := statedir.CopyFile(from, to); err != nil {
			return err
		}
		return copyMeta(to, fi, false)
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(from)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, to); err != nil {
			return err
		}
		return copyMeta(to, fi, true)
	case st != nil && m&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0:
		// Whiteouts (0/0 character devices) included.
		if err := unix.Mknod(to, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
		return copyMeta(to, fi, false)
	}
	return nil
}

// copyMeta applies owner, mode, times and xattrs (overlayfs' own excepted) of fi to p.
// Owner first: chown clears setuid bits.
func copyMeta(p string, fi fs.FileInfo, link bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if !link {
		if err := unix.Chmod(p, st.Mode&0o7777); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec}, {Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}
