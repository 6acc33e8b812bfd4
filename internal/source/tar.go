package source

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// WriteTar writes the tree as a tar stream with every path under prefix ("workspace/", or ""
// for none; a missing trailing slash is added). File contents are read from t.Root now; a
// file whose size changed since Pack fails the write rather than corrupting the stream.
// archive/tar picks USTAR, PAX or GNU headers per entry as long names require. Owners are
// root (uid/gid 0), which is who runs steps; mtimes are truncated to seconds.
func (t *Tree) WriteTar(w io.Writer, prefix string) error {
	return t.writeTar(context.Background(), w, prefix, tarTime)
}

// writeTar is WriteTar with the entries' mtimes mapped by stamp, stopping when ctx ends.
func (t *Tree) writeTar(ctx context.Context, w io.Writer, prefix string, stamp func(time.Time) time.Time) error {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	tw := tar.NewWriter(w)
	src := &sourceFiles{root: t.Root}
	defer src.close()
	buf := make([]byte, copyBufSize)
	for i, e := range t.Entries {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("source: tar: %w: %w", errs.ErrCanceled, err)
			}
		}
		p, err := cleanPath(e.Path)
		if err == nil && p == "" {
			err = errors.New("path is the root itself")
		}
		if err != nil {
			return refused(e.Path, err.Error())
		}
		hdr := &tar.Header{Name: prefix + p, Mode: int64(e.Mode.Perm()), ModTime: stamp(e.ModTime)}
		var f *os.File
		switch e.Type {
		case TypeDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case TypeSymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Link
		case TypeFile:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
			if f, err = src.open(p, e); err != nil {
				return err
			}
		default:
			return refused(e.Path, fmt.Sprintf("unknown entry type %d", e.Type))
		}
		err = tw.WriteHeader(hdr)
		if err == nil && f != nil {
			_, err = io.CopyBuffer(tw, io.LimitReader(f, e.Size), buf)
		}
		if f != nil {
			f.Close()
		}
		if err != nil {
			return fmt.Errorf("source: tar: %w: %s: %v", errs.ErrInfra, e.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("source: tar: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// tarTime truncates (never rounds up: a source file must not look newer than it is) and
// maps the zero time of hand-made trees to the epoch, which every tar format can hold.
func tarTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0)
	}
	return t.Truncate(time.Second)
}

// ExtractTar unpacks a tar stream into the existing directory dir with Materialize's
// guarantees: entries overwrite what is there, nothing else is deleted, and nothing lands
// outside dir. Absolute names, ".." components, names through a symlink (one already in dir
// or one the archive just created), hard links whose target is outside or through a symlink,
// and device/fifo entries are refused with an error wrapping errs.ErrInvalid that names the
// entry; I/O failures wrap errs.ErrInfra.
func ExtractTar(r io.Reader, dir string) error {
	return extractTar(r, dir, nil, nil)
}

// extractTar is ExtractTar with every entry's mtime replaced by stamp's when stamp is set,
// and each entry extracted recorded in tree when tree is set.
func extractTar(r io.Reader, dir string, stamp func() time.Time, tree *Tree) error {
	a, err := newApplier(dir)
	if err != nil {
		return err
	}
	defer a.root.Close()
	tr := tar.NewReader(r)
	buf := make([]byte, copyBufSize)
	rec := recorder{tree: tree, at: map[string]int{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && hdr == nil {
			return fmt.Errorf("source: extract: %w: read tar: %v", errs.ErrInfra, err)
		}
		// A non-nil header with an error is tar.ErrInsecurePath (GODEBUG=tarinsecurepath=0);
		// cleanPath below refuses the same names, so the entry is named either way.
		if stamp != nil {
			hdr.ModTime = stamp()
		}
		if err := extractEntry(a, tr, hdr, buf); err != nil {
			return err
		}
		if tree != nil {
			rec.add(hdr)
		}
	}
	if tree != nil {
		tree.Entries = slices.DeleteFunc(tree.Entries, func(e Entry) bool { return e.Path == "" })
		slices.SortFunc(tree.Entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	}
	return a.finish()
}

// recorder adds the entries extractTar extracted to a tree. A hard link is a regular file of
// its target's size (that is what it is on disk); an entry repeated later in the archive
// replaces the earlier one, as on disk (the replaced one is blanked, then dropped).
type recorder struct {
	tree *Tree
	at   map[string]int // path → index in tree.Entries
}

func (r *recorder) add(hdr *tar.Header) {
	p, _ := cleanPath(hdr.Name) // extractEntry accepted it
	e := Entry{Path: p, Mode: fs.FileMode(hdr.Mode).Perm(), ModTime: hdr.ModTime}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if p == "" {
			return
		}
		e.Type = TypeDir
	case tar.TypeReg:
		e.Type, e.Size = TypeFile, hdr.Size
	case tar.TypeSymlink:
		e.Type, e.Link = TypeSymlink, hdr.Linkname
	case tar.TypeLink:
		old, _ := cleanPath(hdr.Linkname)
		i, ok := r.at[old]
		if !ok {
			return
		}
		e = r.tree.Entries[i]
		e.Path = p
	default:
		return
	}
	if i, ok := r.at[p]; ok {
		r.tree.Size -= r.tree.Entries[i].Size
		r.tree.Entries[i] = Entry{}
	}
	r.at[p] = len(r.tree.Entries)
	r.tree.Entries = append(r.tree.Entries, e)
	r.tree.Size += e.Size
}

func extractEntry(a *applier, tr *tar.Reader, hdr *tar.Header, buf []byte) error {
	p, err := cleanPath(hdr.Name)
	if err != nil {
		return refused(hdr.Name, err.Error())
	}
	if p == "" && hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeXGlobalHeader {
		return refused(hdr.Name, "non-directory entry for the root itself")
	}
	a.entry = hdr.Name
	mode := fs.FileMode(hdr.Mode).Perm()
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir:
		if p == "" {
			return nil // dir itself: leave its mode alone
		}
		return a.dir(p, mode, hdr.ModTime)
	case tar.TypeReg:
		return a.file(p, mode, hdr.ModTime, tr, hdr.Size, buf)
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return refused(hdr.Name, "symlink with an empty target")
		}
		return a.symlink(p, hdr.Linkname)
	case tar.TypeLink:
		old, err := cleanPath(hdr.Linkname)
		if err == nil && old == "" {
			err = errors.New("the root itself")
		}
		if err != nil {
			return refused(hdr.Name, fmt.Sprintf("hard link to %q: %v", hdr.Linkname, err))
		}
		return a.link(p, old)
	default:
		return refused(hdr.Name, fmt.Sprintf("unsupported tar entry type %q", hdr.Typeflag))
	}
}
