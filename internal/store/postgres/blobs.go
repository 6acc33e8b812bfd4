package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
)

// Blob bytes in the database (store.BlobStore), so that replicas share no disk: a blob is a
// blob_files row (digest, size, when last written) and its bytes in blob_chunks rows of at
// most blobChunk bytes. A write inserts the chunks under a name of its own, hashing as it
// goes, and in the same transaction renames them to the digest or, when the blob exists,
// drops them and marks the blob written: whole or absent, also after a crash (the
// transaction rolls back). A read fetches a chunk at a time and checks the digest at EOF.

const blobChunk = 1 << 20

var _ store.BlobStore = (*DB)(nil)

const (
	insertBlobChunk = `INSERT INTO blob_chunks (digest, idx, data) VALUES (?, ?, ?)`
	// digest, size, written_at: 1 row when this write is the blob's first.
	insertBlobFile  = `INSERT INTO blob_files (digest, size, written_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING`
	touchBlobFile   = `UPDATE blob_files SET written_at = ? WHERE digest = ?`
	renameChunks    = `UPDATE blob_chunks SET digest = ? WHERE digest = ?`
	deleteChunks    = `DELETE FROM blob_chunks WHERE digest = ?`
	blobSize        = `SELECT size FROM blob_files WHERE digest = ?`
	blobChunkAt     = `SELECT data FROM blob_chunks WHERE digest = ? AND idx = ?`
	staleBlobs      = `SELECT digest, size FROM blob_files WHERE written_at < ?`
	deleteStaleBlob = `DELETE FROM blob_files WHERE digest = ? AND written_at < ?`
)

func (s *DB) WriteBlob(ctx context.Context, r io.Reader, want string) (string, int64, error) {
	if want != "" {
		if _, err := blobdir.ParseDigest(want); err != nil {
			return "", 0, err
		}
	}
	var digest string
	var size int64
	// Not s.write: its retries would read r again.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tmp := "tmp:" + uuid.NewString()
		h := sha256.New()
		buf := make([]byte, blobChunk)
		for idx := 0; ; idx++ {
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				h.Write(buf[:n])
				size += int64(n)
				if _, err := exec(ctx, tx, insertBlobChunk, tmp, idx, buf[:n]); err != nil {
					return err
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
		}
		digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
		if want != "" && want != digest {
			return fmt.Errorf("got %s, want %s: %w", digest, want, store.ErrDigestMismatch)
		}
		now := time.Now().UnixNano()
		tag, err := exec(ctx, tx, insertBlobFile, digest, size, now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			_, err = exec(ctx, tx, renameChunks, digest, tmp)
			return err
		}
		// It exists (a concurrent first write committed before this insert went on): the
		// same bytes by construction.
		if _, err := exec(ctx, tx, deleteChunks, tmp); err != nil {
			return err
		}
		_, err = exec(ctx, tx, touchBlobFile, now, digest)
		return err
	})
	if err != nil {
		return "", 0, wrap("write blob", err)
	}
	return digest, size, nil
}

func (s *DB) OpenBlob(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	hexd, err := blobdir.ParseDigest(digest)
	if err != nil {
		return nil, 0, err
	}
	var size int64
	if err := row(ctx, s.pool, blobSize, digest).Scan(&size); errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("store: blob %s: %w", digest, fs.ErrNotExist)
	} else if err != nil {
		return nil, 0, wrap("open blob", err)
	}
	// The reader outlives the call that opened it: its reads run under ctx's values but
	// not its end, as an *os.File's would.
	return &blobReader{s: s, ctx: context.WithoutCancel(ctx), digest: digest, want: hexd, h: sha256.New()}, size, nil
}

// blobReader reads a blob's chunks in order, checking the digest at EOF.
type blobReader struct {
	s      *DB
	ctx    context.Context
	digest string
	want   string
	h      hash.Hash
	idx    int
	buf    []byte
	eof    bool
}

func (b *blobReader) Read(p []byte) (int, error) {
	for len(b.buf) == 0 && !b.eof {
		err := row(b.ctx, b.s.pool, blobChunkAt, b.digest, b.idx).Scan(&b.buf)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			b.eof = true
		case err != nil:
			return 0, wrap("read blob", err)
		default:
			b.idx++
		}
	}
	if len(b.buf) == 0 {
		if hex.EncodeToString(b.h.Sum(nil)) != b.want {
			return 0, fmt.Errorf("store: blob %s changed: %w", b.digest, store.ErrDigestMismatch)
		}
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.h.Write(p[:n])
	b.buf = b.buf[n:]
	return n, nil
}

func (b *blobReader) Close() error { return nil }

func (s *DB) SweepBlobs(ctx context.Context, keep map[string]bool, olderThan time.Time) (int, int64, error) {
	type stale struct {
		digest string
		size   int64
	}
	old, err := list(ctx, s.pool, "sweep blobs", func(r scanner) (v stale, err error) {
		return v, r.Scan(&v.digest, &v.size)
	}, staleBlobs, olderThan.UnixNano())
	if err != nil {
		return 0, 0, err
	}
	n, size := 0, int64(0)
	for _, b := range old {
		if keep[b.digest] {
			continue
		}
		removed := false
		err := s.write(ctx, "sweep blob", func(tx pgx.Tx) error {
			// Written again since the listing: kept.
			tag, err := exec(ctx, tx, deleteStaleBlob, b.digest, olderThan.UnixNano())
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			_, err = exec(ctx, tx, deleteChunks, b.digest)
			removed = err == nil
			return err
		})
		if err != nil {
			return n, size, err
		}
		if removed {
			n++
			size += b.size
		}
	}
	return n, size, nil
}
