// Package blobdir is the server's content-addressed blob directory: source archives stored
// once under their sha256 digest, checked on write and on read. It holds bytes only; what a
// server knows about a blob (size, when it came) is in the store. It is not a cache: nothing
// here is evicted except by SweepBlobs.
//
// On disk: DIR/sha256/<hex> for each blob, DIR/tmp/ for writes in progress. A write goes to
// tmp, is hashed as it is written, fsynced and renamed into place, so a blob is either whole
// or absent; a crash leaves at most a file in tmp, which Open removes. A write of a blob that
// exists replaces it, so its modification time is when it was last written: SweepBlobs keeps
// what was written within its grace period, which covers a blob written before the row that
// names it.
package blobdir

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

// Dir is an open blob directory.
type Dir struct{ root string }

// Open opens (creating) the blob directory at root.
func Open(root string) (*Dir, error) {
	for _, d := range []string{"sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
		}
	}
	// Leftovers of writes a crash interrupted: nobody else writes to tmp at Open.
	if ents, err := os.ReadDir(filepath.Join(root, "tmp")); err == nil {
		for _, e := range ents {
			os.Remove(filepath.Join(root, "tmp", e.Name()))
		}
	}
	return &Dir{root: root}, nil
}

// ParseDigest checks that d is "sha256:" and 64 lowercase hex digits and returns the hex.
func ParseDigest(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("blobdir: digest %q: want sha256:<64 hex>: %w", d, errs.ErrUsage)
	}
	return h, nil
}

func (d *Dir) path(hexd string) string { return filepath.Join(d.root, "sha256", hexd) }

var _ store.BlobStore = (*Dir)(nil)

// WriteBlob is store.BlobStore's. Writing a blob that exists replaces its file with the same
// bytes, so its modification time is the write's.
func (d *Dir) WriteBlob(_ context.Context, r io.Reader, want string) (digest string, size int64, err error) {
	if want != "" {
		if _, err := ParseDigest(want); err != nil {
			return "", 0, err
		}
	}
	f, err := os.CreateTemp(filepath.Join(d.root, "tmp"), "blob-")
	if err != nil {
		return "", 0, fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return "", 0, fmt.Errorf("blobdir: write: %w: %w", errs.ErrInfra, err)
	}
	hexd := hex.EncodeToString(h.Sum(nil))
	digest = "sha256:" + hexd
	if want != "" && want != digest {
		return "", 0, fmt.Errorf("blobdir: got %s, want %s: %w", digest, want, store.ErrDigestMismatch)
	}
	if err = f.Sync(); err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), d.path(hexd))
	}
	if err != nil {
		return "", 0, fmt.Errorf("blobdir: commit %s: %w: %w", digest, errs.ErrInfra, err)
	}
	return digest, size, nil
}

// OpenBlob is store.BlobStore's: a blob changed on disk fails the last Read with
// store.ErrDigestMismatch rather than handing out wrong source.
func (d *Dir) OpenBlob(_ context.Context, digest string) (io.ReadCloser, int64, error) {
	hexd, err := ParseDigest(digest)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(d.path(hexd))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("blobdir: %s: %w", digest, fs.ErrNotExist)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
	}
	return &checked{f: f, h: sha256.New(), want: hexd}, st.Size(), nil
}

// SweepBlobs is store.BlobStore's, by the files' modification times.
func (d *Dir) SweepBlobs(_ context.Context, keep map[string]bool, olderThan time.Time) (n int, size int64, err error) {
	ents, err := os.ReadDir(filepath.Join(d.root, "sha256"))
	if err != nil {
		return 0, 0, fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
	}
	for _, e := range ents {
		if keep["sha256:"+e.Name()] {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(olderThan) {
			continue // gone meanwhile, not a blob, or young
		}
		if err := os.Remove(filepath.Join(d.root, "sha256", e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, size, fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
		}
		n++
		size += fi.Size()
	}
	return n, size, nil
}

type checked struct {
	f    *os.File
	h    hash.Hash
	want string
}

func (c *checked) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(c.h.Sum(nil)) != c.want {
		return n, fmt.Errorf("blobdir: sha256:%s changed on disk: %w", c.want, store.ErrDigestMismatch)
	}
	return n, err
}

func (c *checked) Close() error { return c.f.Close() }

// Fallback is a store that holds blobs (Primary: PostgreSQL's) over the blob dir its
// deployment used before (Dir): new blobs go to Primary, a blob Primary lacks is read from
// Dir, and a sweep sweeps both, so that an upgraded deployment's sources and artifacts stay
// readable until nothing names them.
type Fallback struct {
	Primary store.BlobStore
	Dir     *Dir
}

var _ store.BlobStore = Fallback{}

func (f Fallback) WriteBlob(ctx context.Context, r io.Reader, want string) (string, int64, error) {
	return f.Primary.WriteBlob(ctx, r, want)
}

func (f Fallback) OpenBlob(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	rc, size, err := f.Primary.OpenBlob(ctx, digest)
	if errors.Is(err, fs.ErrNotExist) {
		return f.Dir.OpenBlob(ctx, digest)
	}
	return rc, size, err
}

func (f Fallback) SweepBlobs(ctx context.Context, keep map[string]bool, olderThan time.Time) (int, int64, error) {
	n, size, err := f.Primary.SweepBlobs(ctx, keep, olderThan)
	if err != nil {
		return n, size, err
	}
	m, more, err := f.Dir.SweepBlobs(ctx, keep, olderThan)
	return n + m, size + more, err
}
