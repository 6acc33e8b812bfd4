// Package blobdir is the server's content-addressed blob directory: source archives stored
// once under their sha256 digest, checked on write and on read. It holds bytes only; what a
// server knows about a blob (size, when it came) is in the store. It is not a cache: nothing
// here is evicted except by Remove.
//
// On disk: DIR/sha256/<hex> for each blob, DIR/tmp/ for writes in progress. A write goes to
// tmp, is hashed as it is written, fsynced and renamed into place, so a blob is either whole
// or absent; a crash leaves at most a file in tmp, which Open removes. A write of a blob that
// exists replaces it, so its modification time is when it was last written: Sweep keeps
// what was written within its grace period, which covers a blob written before the row that
// names it.
package blobdir

import (
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
)

// ErrDigestMismatch says bytes do not hash to the digest they were stored or asked under.
var ErrDigestMismatch = errors.New("blob digest mismatch")

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

// Write stores r's bytes and returns their digest and size. When want is not empty the bytes
// must hash to it, or nothing is stored and the error is ErrDigestMismatch. Writing a blob
// that exists is harmless (the bytes are the same by construction).
func (d *Dir) Write(r io.Reader, want string) (digest string, size int64, err error) {
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
		return "", 0, fmt.Errorf("blobdir: got %s, want %s: %w", digest, want, ErrDigestMismatch)
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

// Open opens the blob of digest. Reading it to EOF checks the bytes: a blob changed on disk
// fails the last Read with ErrDigestMismatch rather than handing out wrong source.
func (d *Dir) Open(digest string) (io.ReadCloser, int64, error) {
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

// Remove deletes a blob; removing one that is absent is not an error.
func (d *Dir) Remove(digest string) error {
	hexd, err := ParseDigest(digest)
	if err != nil {
		return err
	}
	if err := os.Remove(d.path(hexd)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobdir: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// Sweep removes every blob not in keep whose file was last written before olderThan, and
// returns how many it removed and their bytes. Blobs written since olderThan are kept
// whatever keep says: the row that will name one may not be committed yet.
func (d *Dir) Sweep(keep map[string]bool, olderThan time.Time) (n int, size int64, err error) {
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
		return n, fmt.Errorf("blobdir: sha256:%s changed on disk: %w", c.want, ErrDigestMismatch)
	}
	return n, err
}

func (c *checked) Close() error { return c.f.Close() }
