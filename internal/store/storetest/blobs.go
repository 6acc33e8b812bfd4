package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
)

// BlobFixture is what an implementation of store.BlobStore provides for one case.
type BlobFixture struct {
	// Store is fresh and empty.
	Store store.BlobStore
	// Age makes the blob of digest look last written by ago ago (a file's modification
	// time, a row's column), so that the sweep's grace is tested without waiting.
	Age func(t *testing.T, digest string, by time.Duration)
}

// RunBlobStore runs the store.BlobStore cases, each on a fresh fixture.
func RunBlobStore(t *testing.T, f func(t *testing.T) BlobFixture) {
	for _, c := range blobCases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			c.fn(t, ctx, f(t))
		})
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func readBlob(t *testing.T, ctx context.Context, bs store.BlobStore, d string) ([]byte, error) {
	t.Helper()
	rc, size, err := bs.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil && int64(len(b)) != size {
		t.Errorf("OpenBlob size %d, read %d bytes", size, len(b))
	}
	return b, err
}

var blobCases = []struct {
	name string
	fn   func(t *testing.T, ctx context.Context, f BlobFixture)
}{
	{"WriteOpenMismatch", func(t *testing.T, ctx context.Context, f BlobFixture) {
		bs := f.Store
		src := []byte("source")
		want := digestOf(src)
		if _, _, err := bs.WriteBlob(ctx, strings.NewReader("other"), want); !errors.Is(err, store.ErrDigestMismatch) {
			t.Fatalf("write under a wrong digest = %v, want ErrDigestMismatch", err)
		}
		if _, err := readBlob(t, ctx, bs, want); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a refused write left a blob: %v", err)
		}
		if _, err := readBlob(t, ctx, bs, digestOf([]byte("other"))); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a refused write left the bytes under their own digest: %v", err)
		}
		got, size, err := bs.WriteBlob(ctx, bytes.NewReader(src), want)
		if err != nil || got != want || size != int64(len(src)) {
			t.Fatalf("WriteBlob = %s %d %v", got, size, err)
		}
		if d, _, err := bs.WriteBlob(ctx, bytes.NewReader(src), ""); err != nil || d != want {
			t.Fatalf("writing it again: %s %v", d, err)
		}
		if b, err := readBlob(t, ctx, bs, want); err != nil || !bytes.Equal(b, src) {
			t.Fatalf("read back %q, %v", b, err)
		}
		for _, bad := range []string{"sha256:xyz", "md5:" + strings.Repeat("0", 32), ""} {
			if _, _, err := bs.OpenBlob(ctx, bad); err == nil {
				t.Errorf("OpenBlob(%q) accepted", bad)
			}
		}
		if _, _, err := bs.WriteBlob(ctx, strings.NewReader("x"), "sha256:XYZ"); err == nil {
			t.Error("WriteBlob accepted a malformed digest")
		}
	}},
	{"LargeAndEmpty", func(t *testing.T, ctx context.Context, f BlobFixture) {
		// Several of any implementation's chunks, and a size not a multiple of one.
		big := make([]byte, 3<<20+12345)
		for i := range big {
			big[i] = byte(i * 7 % 251)
		}
		for _, b := range [][]byte{big, {}} {
			d, size, err := f.Store.WriteBlob(ctx, bytes.NewReader(b), "")
			if err != nil || d != digestOf(b) || size != int64(len(b)) {
				t.Fatalf("WriteBlob(%d bytes) = %s %d %v", len(b), d, size, err)
			}
			got, err := readBlob(t, ctx, f.Store, d)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("read back %d of %d bytes, %v", len(got), len(b), err)
			}
		}
	}},
	{"ReaderErrorKeepsItsType", func(t *testing.T, ctx context.Context, f BlobFixture) {
		// The server bounds a body with http.MaxBytesReader and answers 413 on its error.
		w := httptest.NewRecorder()
		body := http.MaxBytesReader(w, io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)
		_, _, err := f.Store.WriteBlob(ctx, body, "")
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			t.Fatalf("WriteBlob over a MaxBytesReader = %v, want an *http.MaxBytesError in it", err)
		}
		if _, err := readBlob(t, ctx, f.Store, digestOf([]byte(strings.Repeat("x", 10)))); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a failed write left its first bytes: %v", err)
		}
	}},
	{"ConcurrentSameBlob", func(t *testing.T, ctx context.Context, f BlobFixture) {
		src := bytes.Repeat([]byte("same bytes "), 200000) // 2.2 MB: several chunks
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, errs[i] = f.Store.WriteBlob(ctx, bytes.NewReader(src), digestOf(src))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}
		if got, err := readBlob(t, ctx, f.Store, digestOf(src)); err != nil || !bytes.Equal(got, src) {
			t.Fatalf("read back %d of %d bytes, %v", len(got), len(src), err)
		}
	}},
	{"Sweep", func(t *testing.T, ctx context.Context, f BlobFixture) {
		write := func(s string) string {
			d, _, err := f.Store.WriteBlob(ctx, strings.NewReader(s), "")
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		kept, orphan, young, rewritten := write("kept"), write("orphan"), write("young"), write("rewritten")
		for _, d := range []string{kept, orphan, rewritten} {
			f.Age(t, d, 2*time.Hour)
		}
		write("rewritten") // a second upload of the same bytes
		n, size, err := f.Store.SweepBlobs(ctx, map[string]bool{kept: true}, time.Now().Add(-time.Hour))
		if err != nil || n != 1 || size != int64(len("orphan")) {
			t.Fatalf("SweepBlobs = %d, %d, %v; want the orphan only (1, 6)", n, size, err)
		}
		for d, want := range map[string]bool{kept: true, orphan: false, young: true, rewritten: true} {
			_, err := readBlob(t, ctx, f.Store, d)
			if got := err == nil; got != want {
				t.Errorf("blob %s present = %v, want %v (%v)", d, got, want, err)
			}
		}
		// Swept blobs can be written again.
		if d := write("orphan"); d != orphan {
			t.Fatalf("rewrite = %s", d)
		}
		if b, err := readBlob(t, ctx, f.Store, orphan); err != nil || string(b) != "orphan" {
			t.Errorf("the orphan written again: %q %v", b, err)
		}
	}},
}
