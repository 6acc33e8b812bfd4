// Package statedir holds the small file-system operations every part of hm's state directory
// needs (backends, image store): listing a subdirectory that may not exist yet, removing a
// tree a step may have left read-only, and an exclusive lock shared between hm processes.
package statedir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
)

// List returns the names in dir; a directory that does not exist yet is empty.
func List(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// RemoveAll removes p like os.RemoveAll, also when a step left read-only directories behind
// (Go's module cache does that), which make RemoveAll fail for non-root users.
func RemoveAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	if err2 := os.RemoveAll(p); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}

// Lock takes an exclusive flock(2) on path, creating it. Each call opens its own file
// description, so it serialises goroutines of one process as well as hm processes.
func Lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w: %w", path, errs.ErrInfra, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w: %w", path, errs.ErrInfra, err)
	}
	return func() { f.Close() }, nil
}

// Size returns the bytes of the regular files under p (symlinks not followed; hard links
// counted once).
func Size(p string) (int64, error) {
	var n int64
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			id := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[id] {
				return nil
			}
			seen[id] = true
		}
		n += fi.Size()
		return nil
	})
	return n, err
}

// CopyFile copies the regular file from to the new file to (which must not exist), through
// io.Copy between two files: copy_file_range, a reflink where the filesystem shares extents.
func CopyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
