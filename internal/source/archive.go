package source

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// DigestPrefix starts every archive digest: "sha256:" and 64 lowercase hex digits.
const DigestPrefix = "sha256:"

// Archive is a tree packed to travel to another machine (an hm server, an agent): a gzip-
// compressed tar, content-addressed by the sha256 of its compressed bytes. It lives in a file,
// whatever its size, so a big source is never held in memory; Remove deletes it.
//
// The bytes depend on the tree's contents only, so the same tree always packs to the same
// digest: entries sorted by path, every mtime the Unix epoch, owners root with no names,
// permission bits as on disk, symlinks as links (never followed), no gzip name or time.
// Mtimes are left out on purpose (they differ between checkouts of the same commit); the
// extracting side stamps the entries itself (see ExtractArchive).
type Archive struct {
	Digest string // DigestPrefix + hex
	Size   int64  // compressed bytes
	Path   string // the file holding them
}

// archiveTime is every entry's mtime in an archive.
var archiveTime = time.Unix(0, 0)

// WriteArchive packs t into a new file in dir ("" for os.TempDir()). File contents are read
// from t.Root now, with WriteTar's check that no file changed size since Pack. The tree's
// size bound was applied by Pack (Options.MaxBytes); the archive is never much bigger than
// the tree's files (gzip's worst case is a few bytes per 32 KiB, tar's 512 per entry).
func (t *Tree) WriteArchive(ctx context.Context, dir string) (*Archive, error) {
	f, err := os.CreateTemp(dir, "hm-source-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("source: archive: %w: %w", errs.ErrInfra, err)
	}
	a, err := t.writeArchive(ctx, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("source: archive: %w: %w", errs.ErrInfra, cerr)
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	a.Path = f.Name()
	return a, nil
}

func (t *Tree) writeArchive(ctx context.Context, w io.Writer) (*Archive, error) {
	sum := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, sum)}
	// A gzip.Writer with no Name, ModTime or Comment writes a constant header.
	zw, err := gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	fixed := func(time.Time) time.Time { return archiveTime }
	if err := t.writeTar(ctx, zw, "", fixed); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("source: archive: %w: %w", errs.ErrInfra, err)
	}
	return &Archive{Digest: DigestPrefix + hex.EncodeToString(sum.Sum(nil)), Size: cw.n}, nil
}

// Open reads the archive's bytes from the start.
func (a *Archive) Open() (io.ReadCloser, error) {
	f, err := os.Open(a.Path)
	if err != nil {
		return nil, fmt.Errorf("source: archive: %w: %w", errs.ErrInfra, err)
	}
	return f, nil
}

// Remove deletes the archive's file; removing it twice is no error.
func (a *Archive) Remove() error {
	if err := os.Remove(a.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("source: archive: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// ErrDigestMismatch is wrapped (beside errs.ErrInvalid) when an archive's bytes are not the
// ones its digest names.
var ErrDigestMismatch = errors.New("archive digest mismatch")

// ExtractArchive unpacks an archive read from r into the existing directory dir with
// ExtractTar's guarantees (nothing lands outside dir; entries overwrite, nothing is deleted),
// checking that the bytes are those named by digest (DigestPrefix + hex). Every entry is
// stamped with the extraction time, as a git checkout does, so that source always looks newer
// than outputs a parent step left in /workspace. A digest mismatch wraps ErrDigestMismatch
// and errs.ErrInvalid; what was extracted before the end was reached stays in dir, so
// extract into a directory of its own and discard it on error.
func ExtractArchive(r io.Reader, digest, dir string) error {
	return extractArchive(r, digest, dir, nil)
}

// ExtractArchiveTree is ExtractArchive that also returns the tree of the archive's entries,
// rooted at dir: exactly what the archive holds, never re-walked (a walk would apply the
// extracting machine's .gitignore and git excludes to a tree that was filtered once already).
func ExtractArchiveTree(r io.Reader, digest, dir string) (*Tree, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("source: extract: %w: %w", errs.ErrInfra, err)
	}
	t := &Tree{Root: abs}
	if err := extractArchive(r, digest, dir, t); err != nil {
		return nil, err
	}
	return t, nil
}

func extractArchive(r io.Reader, digest, dir string, tree *Tree) error {
	want, ok := strings.CutPrefix(digest, DigestPrefix)
	if !ok || len(want) != sha256.Size*2 {
		return fmt.Errorf("source: extract: %w: bad digest %q (want %s and 64 hex digits)", errs.ErrInvalid, digest, DigestPrefix)
	}
	sum := sha256.New()
	zr, err := gzip.NewReader(io.TeeReader(r, sum))
	if err != nil {
		return fmt.Errorf("source: extract: %w: %w", errs.ErrInvalid, err)
	}
	zr.Multistream(false)
	now := time.Now()
	if err := extractTar(zr, dir, func() time.Time { return now }, tree); err != nil {
		return err
	}
	// The tar's end is not the stream's: read the rest so that the digest covers every byte.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return fmt.Errorf("source: extract: %w: %w", errs.ErrInvalid, err)
	}
	if err := zr.Close(); err != nil {
		return fmt.Errorf("source: extract: %w: %w", errs.ErrInvalid, err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("source: extract: %w: %w", errs.ErrInfra, err)
	}
	if got := hexSum(sum); got != want {
		return fmt.Errorf("source: extract: %w: %w: got %s%s, want %s", errs.ErrInvalid, ErrDigestMismatch, DigestPrefix, got, digest)
	}
	return nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
