package blobdir

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteOpenVerify(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("source"))
	want := "sha256:" + hex.EncodeToString(sum[:])
	if _, _, err := d.Write(strings.NewReader("other"), want); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("write under a wrong digest = %v, want ErrDigestMismatch", err)
	}
	if _, _, err := d.Open(want); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused write left a blob: %v", err)
	}
	got, size, err := d.Write(strings.NewReader("source"), want)
	if err != nil || got != want || size != 6 {
		t.Fatalf("Write = %s %d %v", got, size, err)
	}
	if _, _, err := d.Write(strings.NewReader("source"), ""); err != nil {
		t.Fatalf("writing it again: %v", err)
	}
	r, _, err := d.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(b) != "source" {
		t.Fatalf("read %q %v", b, err)
	}
	// Bytes changed on disk are refused on read.
	if err := os.WriteFile(filepath.Join(d.root, "sha256", hex.EncodeToString(sum[:])), []byte("evil!!"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, _, _ = d.Open(want)
	if _, err := io.ReadAll(r); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("read of a changed blob = %v, want ErrDigestMismatch", err)
	}
	r.Close()
	if _, _, err := d.Open("sha256:xyz"); err == nil {
		t.Error("a malformed digest was accepted")
	}
	if err := d.Remove(want); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(want); err != nil {
		t.Errorf("removing an absent blob: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d leftovers", len(ents))
	}
}

// Sweep removes the blobs nobody keeps that were written before its cut, and nothing else:
// a young blob survives, and writing an old blob again makes it young.
func TestSweep(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write := func(s string) string {
		dg, _, err := d.Write(strings.NewReader(s), "")
		if err != nil {
			t.Fatal(err)
		}
		return dg
	}
	age := func(dg string, by time.Duration) {
		h, _ := ParseDigest(dg)
		old := time.Now().Add(-by)
		if err := os.Chtimes(d.path(h), old, old); err != nil {
			t.Fatal(err)
		}
	}
	kept, orphan, young, rewritten := write("kept"), write("orphan"), write("young"), write("rewritten")
	for _, dg := range []string{kept, orphan, rewritten} {
		age(dg, 2*time.Hour)
	}
	write("rewritten") // a second upload of the same bytes
	n, size, err := d.Sweep(map[string]bool{kept: true}, time.Now().Add(-time.Hour))
	if err != nil || n != 1 || size != int64(len("orphan")) {
		t.Fatalf("Sweep = %d, %d, %v; want the orphan only (1, 6)", n, size, err)
	}
	for dg, want := range map[string]bool{kept: true, orphan: false, young: true, rewritten: true} {
		rc, _, err := d.Open(dg)
		if got := err == nil; got != want {
			t.Errorf("blob %s present = %v, want %v (%v)", dg, got, want, err)
		}
		if rc != nil {
			rc.Close()
		}
	}
}
