package statedir

import (
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestList(t *testing.T) {
	dir := t.TempDir()
	if names, err := List(filepath.Join(dir, "missing")); err != nil || names != nil {
		t.Fatalf("List(missing) = %v, %v; want empty", names, err)
	}
	for _, n := range []string{"b", "a"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	names, err := List(dir)
	sort.Strings(names)
	if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" || err != nil {
		t.Errorf("List (-want +got):\n%s (err %v)", diff, err)
	}
}

func TestRemoveAllReadOnlyTree(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root removes read-only directories anyway; the retry is for non-root users")
	}
	p := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(p, "ro", "sub"), 0o755)
	os.WriteFile(filepath.Join(p, "ro", "sub", "f"), []byte("x"), 0o444)
	os.Chmod(filepath.Join(p, "ro", "sub"), 0o555)
	os.Chmod(filepath.Join(p, "ro"), 0o555)
	if err := RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("%s still exists", p)
	}
}

// Lock excludes: a counter incremented under the lock from many goroutines, each with its own
// file description, never sees another holder.
func TestLockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	var mu sync.Mutex
	holders, maxHolders := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := Lock(path)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			holders++
			maxHolders = max(maxHolders, holders)
			mu.Unlock()
			mu.Lock()
			holders--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxHolders != 1 {
		t.Errorf("%d holders at once", maxHolders)
	}
}

func TestSize(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), make([]byte, 100), 0o644)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "b"), make([]byte, 50), 0o644)
	os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "sub", "hard")) // counted once
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))               // not followed
	if n, err := Size(dir); err != nil || n != 150 {
		t.Errorf("Size = %d, %v; want 150", n, err)
	}
}
