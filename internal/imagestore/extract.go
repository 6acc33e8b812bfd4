package imagestore

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Whiteout markers of the OCI image layer format, and what overlayfs wants instead.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// OpaqueXattr marks a directory that hides the directories of the same path in the
	// layers below it.
	OpaqueXattr = "trusted.overlay.opaque"
)

// unpack writes the layer tar stream r into the empty directory dir in overlayfs lower-layer
// form: a `.wh.NAME` entry becomes a 0/0 character device NAME, a `.wh..wh..opq` entry
// marks its directory opaque. Every write goes through an os.Root, so entries cannot reach
// outside dir whatever their names, hard links and symlinks say. Owners, modes, times and
// xattrs are kept (owners and device nodes need root).
func unpack(ctx context.Context, r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	u := &unpacker{root: root, asRoot: os.Geteuid() == 0}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	return u.finish()
}

type dirMeta struct {
	name string
	hdr  *tar.Header
}

type unpacker struct {
	root   *os.Root
	asRoot bool
	// dirs get their modes and times last: adding entries changes a directory's mtime and
	// a read-only mode would refuse them.
	dirs []dirMeta
}

// cleanName turns a tar entry name into a path relative to the layer root; "" is the root.
func cleanName(n string) string {
	n = path.Clean("/" + n)
	return strings.TrimPrefix(n, "/")
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	p := cleanName(hdr.Name)
	if p == "" {
		return nil // the layer root keeps the store's mode
	}
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if base == opaqueMarker {
		if err := u.mkdirs(dir); err != nil {
			return err
		}
		return u.setxattr(dir, OpaqueXattr, "y")
	}
	if hidden, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if err := u.mkdirs(dir); err != nil {
			return err
		}
		target := path.Join(dir, hidden)
		if err := u.clear(target); err != nil {
			return err
		}
		return u.mknod(target, unix.S_IFCHR, 0)
	}
	if err := u.mkdirs(dir); err != nil {
		return err
	}
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := u.root.Lstat(p)
		if err == nil && !fi.IsDir() {
			if err := u.clear(p); err != nil {
				return err
			}
			err = fs.ErrNotExist
		}
		if errors.Is(err, fs.ErrNotExist) {
			if err := u.root.Mkdir(p, 0o700); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirMeta{name: p, hdr: hdr})
		return u.xattrs(p, hdr)
	case tar.TypeReg: // archive/tar reads the legacy TypeRegA as TypeReg (or TypeDir)
		if err := u.clear(p); err != nil {
			return err
		}
		f, err := u.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := u.clear(p); err != nil {
			return err
		}
		if err := u.root.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
		if u.asRoot {
			if err := u.root.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
		}
		return u.linkTimes(p, hdr.ModTime)
	case tar.TypeLink:
		if err := u.clear(p); err != nil {
			return err
		}
		return u.root.Link(cleanName(hdr.Linkname), p)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if !u.asRoot && hdr.Typeflag != tar.TypeFifo {
			return nil // device nodes need root; a rootless import drops them
		}
		if err := u.clear(p); err != nil {
			return err
		}
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		if err := u.mknod(p, kind|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
			return err
		}
	default:
		return nil // pax/gnu extension headers are consumed by archive/tar; others are skipped
	}
	return u.meta(p, hdr)
}

// meta applies owner, mode, times and xattrs to a non-directory, non-symlink entry. Owner
// first: chown clears the setuid bits.
func (u *unpacker) meta(p string, hdr *tar.Header) error {
	if u.asRoot {
		if err := u.root.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := u.root.Chmod(p, tarMode(hdr)); err != nil {
		return err
	}
	if err := u.xattrs(p, hdr); err != nil {
		return err
	}
	return u.root.Chtimes(p, hdr.ModTime, hdr.ModTime)
}

// tarMode converts a tar header's mode bits into an os.FileMode for Chmod.
func tarMode(hdr *tar.Header) fs.FileMode {
	m := fs.FileMode(hdr.Mode) & fs.ModePerm
	if hdr.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// xattrs sets the entry's extended attributes (file capabilities, say). Only root may set
// most of them; a rootless import keeps what it can.
func (u *unpacker) xattrs(p string, hdr *tar.Header) error {
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		attr := strings.TrimPrefix(k, "SCHILY.xattr.")
		if strings.HasPrefix(attr, "trusted.overlay.") {
			continue // a layer must not smuggle overlayfs metadata in
		}
		if err := u.setxattr(p, attr, hdr.PAXRecords[k]); err != nil && u.asRoot {
			return err
		}
	}
	return nil
}

func (u *unpacker) setxattr(p, attr, value string) error {
	f, err := u.root.OpenFile(orDot(p), unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// An O_PATH descriptor does not take fsetxattr; its /proc link does.
	return unix.Setxattr(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), attr, []byte(value), 0)
}

func orDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// mkdirs makes sure every directory down to dir exists. Directories a layer does not list
// get mode 0755, as in other unpackers.
func (u *unpacker) mkdirs(dir string) error {
	if dir == "" {
		return nil
	}
	fi, err := u.root.Lstat(dir)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		if err := u.clear(dir); err != nil {
			return err
		}
	}
	return u.root.MkdirAll(dir, 0o755)
}

// clear removes whatever p holds, so that an entry can take its place (later entries of
// a tar stream win).
func (u *unpacker) clear(p string) error {
	err := u.root.RemoveAll(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// mknod creates a special file at p, relative to its parent directory's descriptor.
func (u *unpacker) mknod(p string, mode uint32, dev int) error {
	dir, base := path.Split(p)
	d, err := u.root.Open(orDot(strings.TrimSuffix(dir, "/")))
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Mknodat(int(d.Fd()), base, mode, dev)
}

// linkTimes sets a symlink's own times.
func (u *unpacker) linkTimes(p string, t time.Time) error {
	dir, base := path.Split(p)
	d, err := u.root.Open(orDot(strings.TrimSuffix(dir, "/")))
	if err != nil {
		return err
	}
	defer d.Close()
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.UtimesNanoAt(int(d.Fd()), base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// finish applies the directories' owners, modes and times, deepest first.
func (u *unpacker) finish() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		fi, err := u.root.Lstat(d.name)
		if err != nil || !fi.IsDir() {
			continue // replaced by a later entry
		}
		if err := u.meta(d.name, d.hdr); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}
