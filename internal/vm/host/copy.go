package host

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hmci/hm/internal/statedir"
	"golang.org/x/sys/unix"
)

// copyTree copies the directory src to dst, which must not exist, for a builds_in child to
// start from its parent's snapshot. File contents are copied with copy_file_range (io.Copy
// between two *os.File), which the kernel turns into a reflink on filesystems that share
// extents and into an in-kernel copy elsewhere. Files are never hard-linked to the
// snapshot: a step writing a file in place would change the snapshot under its siblings.
// Hard links inside the tree stay hard links to each other in the copy. Modes, owners (as
// root), times and symlinks are kept; sockets are dropped (nothing listens on them).
func copyTree(ctx context.Context, src, dst string) error {
	c := copier{ctx: ctx, root: os.Geteuid() == 0, links: map[fileID]string{}}
	if err := c.walk(src, dst); err != nil {
		return err
	}
	// Directory modes and times last, deepest first: adding entries changes a directory's
	// mtime, and a read-only directory would refuse them.
	for i := len(c.dirs) - 1; i >= 0; i-- {
		d := c.dirs[i]
		if err := c.meta(d.path, d.fi, false); err != nil {
			return err
		}
	}
	return nil
}

type fileID struct{ dev, ino uint64 }

type dirMeta struct {
	path string
	fi   fs.FileInfo
}

type copier struct {
	ctx   context.Context // lives only as long as one copyTree call
	root  bool            // running as root: owners can be kept
	links map[fileID]string
	dirs  []dirMeta
}

func (c *copier) walk(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if err := c.ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if err := c.entry(p, to, fi); err != nil {
			return fmt.Errorf("copy %s: %w", p, err)
		}
		return nil
	})
}

func (c *copier) entry(from, to string, fi fs.FileInfo) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch m := fi.Mode(); {
	case m.IsDir():
		// Owner-writable until the end so the copy can fill it in.
		if err := os.Mkdir(to, 0o700); err != nil {
			return err
		}
		c.dirs = append(c.dirs, dirMeta{path: to, fi: fi})
		return nil
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(from)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, to); err != nil {
			return err
		}
		return c.meta(to, fi, true)
	case m.IsRegular():
		if st != nil && st.Nlink > 1 {
			id := fileID{dev: st.Dev, ino: st.Ino}
			if first, ok := c.links[id]; ok {
				return os.Link(first, to)
			}
			c.links[id] = to
		}
		if err := statedir.CopyFile(from, to); err != nil {
			return err
		}
		return c.meta(to, fi, false)
	case m&fs.ModeNamedPipe != 0:
		if err := unix.Mkfifo(to, 0o600); err != nil {
			return err
		}
		return c.meta(to, fi, false)
	case m&fs.ModeDevice != 0 && c.root && st != nil:
		if err := unix.Mknod(to, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
		return c.meta(to, fi, false)
	}
	return nil // sockets; devices when not root
}

// meta applies owner, mode and times of fi to p. Owner first: chown clears setuid bits.
func (c *copier) meta(p string, fi fs.FileInfo, link bool) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if c.root && st != nil {
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if !link {
		if err := os.Chmod(p, fileMode(fi.Mode())); err != nil {
			return err
		}
	}
	if st == nil {
		return nil
	}
	ts := []unix.Timespec{
		{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec},
		{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec},
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// fileMode keeps the permission and special bits os.Chmod understands.
func fileMode(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}
