package cachedir

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hmci/hm/internal/vm"
)

func TestUseListRemove(t *testing.T) {
	s := Open(t.TempDir(), "sandbox")
	if es, err := s.List(); err != nil || len(es) != 0 {
		t.Fatalf("empty store lists %v, %v", es, err)
	}
	d := vm.CacheDir{Org: "default", Pipeline: "p", Path: "/root/.cache/go-build"}
	dir, release, err := s.Use(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	es, err := s.List()
	if err != nil || len(es) != 1 {
		t.Fatalf("List = %v, %v", es, err)
	}
	e := es[0]
	if e.ID != d.ID() || e.Pipeline != "p" || e.Path != d.Path || e.Org != "default" || e.Backend != "sandbox" || e.Size != 1000 || e.LastUsed.IsZero() {
		t.Errorf("entry = %+v", e)
	}
	if err := s.Remove(e.ID, nil); !errors.Is(err, ErrBusy) {
		t.Errorf("Remove while in use: %v, want ErrBusy", err)
	}
	release()
	dir2, release2, err := s.Use(d) // same id: the same directory, the file kept
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "f")); err != nil || dir2 != dir {
		t.Errorf("second use: dir %s (first %s), file: %v", dir2, dir, err)
	}
	release2()
	alsoRan := false
	if err := s.Remove(e.ID, func() error { alsoRan = true; return nil }); err != nil || !alsoRan {
		t.Fatalf("Remove: %v (also ran: %v)", err, alsoRan)
	}
	if es, _ := s.List(); len(es) != 0 {
		t.Errorf("after Remove: %v", es)
	}
	if err := s.Remove(e.ID, nil); err != nil {
		t.Errorf("Remove again: %v", err)
	}
	if err := s.Remove("../../etc", nil); err == nil {
		t.Error("Remove accepted a path as id")
	}
	other := vm.CacheDir{Org: "default", Pipeline: "q", Path: d.Path}
	if other.ID() == d.ID() {
		t.Error("two pipelines share an id")
	}
}

// Concurrent uses and removals: a removal never deletes a directory some use holds, and
// every use ends up with a directory that exists while it holds it.
func TestConcurrentUseRemove(t *testing.T) {
	s := Open(t.TempDir(), "host")
	d := vm.CacheDir{Org: "o", Pipeline: "p", Path: "/c"}
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if i%2 == 0 {
					if err := s.Remove(d.ID(), nil); err != nil && !errors.Is(err, ErrBusy) {
						errc <- err
					}
					continue
				}
				dir, release, err := s.Use(d)
				if err != nil {
					errc <- err
					return
				}
				p := filepath.Join(dir, "f")
				if err := os.WriteFile(p, []byte{byte(j)}, 0o644); err != nil {
					errc <- err
				} else if _, err := os.Stat(p); err != nil {
					errc <- err
				}
				release()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
