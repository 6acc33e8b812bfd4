package source

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// Materialize overlays the tree onto the existing directory dir (a step's /workspace): files
// are added or overwritten, directories created, nothing else is deleted. An entry whose path
// holds something of another kind (a symlink where the tree has a directory, a directory
// where it has a file) replaces it; existing symlinks are never followed. Absolute paths,
// ".." components and paths through a symlink are refused with errs.ErrInvalid, and every
// operation goes through os.Root, so nothing is ever written outside dir.
func (t *Tree) Materialize(dir string) error {
	paths := make([]string, len(t.Entries))
	for i, e := range t.Entries {
		p, err := cleanPath(e.Path)
		if err == nil && p == "" {
			err = errors.New("path is the root itself")
		}
		if err != nil {
			return refused(e.Path, err.Error())
		}
		paths[i] = p
	}
	a, err := newApplier(dir)
	if err != nil {
		return err
	}
	defer a.root.Close()
	src := &sourceFiles{root: t.Root}
	defer src.close()
	buf := make([]byte, copyBufSize)
	for i, e := range t.Entries {
		p := paths[i]
		a.entry = e.Path
		switch e.Type {
		case TypeDir:
			err = a.dir(p, e.Mode, e.ModTime)
		case TypeSymlink:
			err = a.symlink(p, e.Link)
		case TypeFile:
			err = a.copyFrom(src, p, e, buf)
		default:
			err = refused(e.Path, fmt.Sprintf("unknown entry type %d", e.Type))
		}
		if err != nil {
			return err
		}
	}
	return a.finish()
}

const copyBufSize = 256 << 10

func (a *applier) copyFrom(src *sourceFiles, p string, e Entry, buf []byte) error {
	// Refuse a bad destination before touching the source, so the error names the real cause.
	if err := a.parents(p); err != nil {
		return err
	}
	f, err := src.open(p, e)
	if err != nil {
		return err
	}
	defer f.Close()
	return a.file(p, e.Mode, e.ModTime, f, e.Size, buf)
}

// applier writes entries beneath one directory. Every path is resolved by os.Root, which
// cannot leave the directory; on top of that the applier refuses to go through any symlink,
// even one staying inside, so a hostile tree cannot redirect later entries.
type applier struct {
	root *os.Root
	// dirs are the directories this run created or checked to be real directories, so that
	// a sorted tree costs no extra lstat per entry.
	dirs map[string]bool
	// metas are applied last: creating children changes a directory's mtime, and a
	// read-only mode would refuse them.
	metas []dirMeta
	// entry is the name of the entry being applied, as its producer spelled it, for errors.
	entry string
}

type dirMeta struct {
	path  string
	mode  fs.FileMode
	mtime time.Time
}

func newApplier(dir string) (*applier, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("source: %w: open %s: %v", errs.ErrInfra, dir, err)
	}
	return &applier{root: root, dirs: map[string]bool{}}, nil
}

// cleanPath validates an entry name and returns its clean relative form; "" means the root.
func cleanPath(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty path")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	case strings.ContainsRune(name, 0):
		return "", errors.New("NUL byte in path")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New(`".." component`)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

func refused(name, why string) error {
	return fmt.Errorf("source: %w: entry %q refused: %s", errs.ErrInvalid, name, why)
}

func (a *applier) refuse(why string) error { return refused(a.entry, why) }

// fail reports an I/O error (which names the path it hit) while applying the current entry.
func (a *applier) fail(err error) error {
	return fmt.Errorf("source: %w: entry %q: %v", errs.ErrInfra, a.entry, err)
}

// parents makes sure every directory above p is a real directory, creating missing ones.
func (a *applier) parents(p string) error {
	d := path.Dir(p)
	if d == "." || a.dirs[d] {
		return nil
	}
	if err := a.parents(d); err != nil {
		return err
	}
	fi, err := a.root.Lstat(d)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := a.root.Mkdir(d, 0o755); err != nil {
			return a.fail(err)
		}
	case err != nil:
		return a.fail(err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return a.refuse(fmt.Sprintf("%q goes through symlink %q", p, d))
	case !fi.IsDir():
		return a.refuse(fmt.Sprintf("%q is not a directory", d))
	}
	a.dirs[d] = true
	return nil
}

// clear removes whatever is at p (a directory with its contents), never following a link.
func (a *applier) clear(p string) error {
	fi, err := a.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return a.fail(err)
	}
	if fi.IsDir() {
		err = a.root.RemoveAll(p)
		for d := range a.dirs {
			if d == p || strings.HasPrefix(d, p+"/") {
				delete(a.dirs, d)
			}
		}
	} else {
		err = a.root.Remove(p)
	}
	if err != nil {
		return a.fail(err)
	}
	return nil
}

func (a *applier) dir(p string, mode fs.FileMode, mtime time.Time) error {
	if err := a.parents(p); err != nil {
		return err
	}
	err := a.root.Mkdir(p, 0o755)
	if errors.Is(err, fs.ErrExist) {
		var fi fs.FileInfo
		if fi, err = a.root.Lstat(p); err == nil && !fi.IsDir() {
			if err = a.clear(p); err == nil {
				err = a.root.Mkdir(p, 0o755)
			}
		}
	}
	if err != nil {
		return a.fail(err)
	}
	a.dirs[p] = true
	a.metas = append(a.metas, dirMeta{path: p, mode: mode.Perm(), mtime: mtime})
	return nil
}

// file writes size bytes of r to p. It always creates a new inode (O_EXCL after removing
// what was there): truncating in place would also change every hard link to the old file
// and would follow a symlink left at p.
func (a *applier) file(p string, mode fs.FileMode, mtime time.Time, r io.Reader, size int64, buf []byte) error {
	if err := a.parents(p); err != nil {
		return err
	}
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	f, err := a.root.OpenFile(p, flags, 0o600)
	if errors.Is(err, fs.ErrExist) {
		if err = a.clear(p); err != nil {
			return err
		}
		f, err = a.root.OpenFile(p, flags, 0o600)
	}
	if err != nil {
		return a.fail(err)
	}
	// io.CopyBuffer hands *os.File sources to copy_file_range (reflinks where supported).
	n, err := io.CopyBuffer(f, io.LimitReader(r, size), buf)
	if err == nil && n != size {
		err = fmt.Errorf("short content: %d of %d bytes", n, size)
	}
	if err == nil {
		err = f.Chmod(mode.Perm())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !mtime.IsZero() {
		err = a.root.Chtimes(p, mtime, mtime)
	}
	if err != nil {
		return a.fail(err)
	}
	return nil
}

// symlink creates p pointing at target. The target is data, never resolved here.
func (a *applier) symlink(p, target string) error {
	if err := a.parents(p); err != nil {
		return err
	}
	err := a.root.Symlink(target, p)
	if errors.Is(err, fs.ErrExist) {
		if err = a.clear(p); err != nil {
			return err
		}
		err = a.root.Symlink(target, p)
	}
	if err != nil {
		return a.fail(err)
	}
	return nil
}

// link makes p a hard link to old, which must already be inside and reachable without
// going through a symlink.
func (a *applier) link(p, old string) error {
	if err := a.parents(old); err != nil {
		return err
	}
	if old == p {
		return a.refuse("hard link to itself")
	}
	if err := a.parents(p); err != nil {
		return err
	}
	err := a.root.Link(old, p)
	if errors.Is(err, fs.ErrExist) {
		if err = a.clear(p); err != nil {
			return err
		}
		err = a.root.Link(old, p)
	}
	if err != nil {
		return a.fail(err)
	}
	return nil
}

// finish applies directory modes and times, deepest first.
func (a *applier) finish() error {
	for i := len(a.metas) - 1; i >= 0; i-- {
		m := a.metas[i]
		if !a.dirs[m.path] {
			continue // replaced by a later entry; chmod would follow what is there now
		}
		a.entry = m.path
		err := a.root.Chmod(m.path, m.mode)
		if err == nil && !m.mtime.IsZero() {
			err = a.root.Chtimes(m.path, m.mtime, m.mtime)
		}
		if err != nil {
			return a.fail(err)
		}
	}
	return nil
}
