package blobdir

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/storetest"
)

func TestBlobStore(t *testing.T) {
	storetest.RunBlobStore(t, func(t *testing.T) storetest.BlobFixture {
		d, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return storetest.BlobFixture{Store: d, Age: func(t *testing.T, digest string, by time.Duration) {
			h, _ := ParseDigest(digest)
			old := time.Now().Add(-by)
			if err := os.Chtimes(d.path(h), old, old); err != nil {
				t.Fatal(err)
			}
		}}
	})
}

// A blob changed on disk fails its read rather than handing out wrong source.
func TestChangedOnDisk(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want, _, err := d.WriteBlob(ctx, strings.NewReader("source"), "")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := ParseDigest(want)
	if err := os.WriteFile(filepath.Join(d.root, "sha256", h), []byte("sourcX"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, _, err := d.OpenBlob(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); !errors.Is(err, store.ErrDigestMismatch) {
		t.Errorf("read of a changed blob = %v, want ErrDigestMismatch", err)
	}
}
