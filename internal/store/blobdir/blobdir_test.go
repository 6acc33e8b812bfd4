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
