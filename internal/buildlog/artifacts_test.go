package buildlog

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Pruning a build removes its artifacts directory, and nothing else: not another build's,
// not a directory a hand-edited meta.json names that is not the build's own.
func TestPruneRemovesArtifacts(t *testing.T) {
	s := Open(t.TempDir())
	arts := t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(arts, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	record(t, s, Info{Artifacts: arts}, start("b1", t0), end(0))
	mk("b1/step/dist/app")
	other := mk("b2/step/dist/app") // no record: not hm's to prune here
	if m, err := s.Get("b1"); err != nil || m.Artifacts != filepath.Join(arts, "b1") {
		t.Fatalf("meta artifacts %q, %v", m.Artifacts, err)
	}
	w, err := s.Create(Meta{ID: "b3", StartedAt: t0.Add(time.Hour), Artifacts: filepath.Dir(other)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	removed, err := s.Prune(0, 0, t0.Add(2*time.Hour))
	if err != nil || len(removed) != 2 {
		t.Fatalf("Prune: %d removed, %v", len(removed), err)
	}
	if _, err := os.Stat(filepath.Join(arts, "b1")); !os.IsNotExist(err) {
		t.Errorf("b1's artifacts survived its record: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a directory that is not the build's own was removed: %v", err)
	}
}
