package registry

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A registry opened read-only sees what was registered, and its writes fail. (Root ignores
// the directory's mode; e2e TestReadOnlyStateDir opens one as an unprivileged user.)
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	rw, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rw.Register(ctx, Entry{Backend: "host", Base: "b", Key: "k", Fingerprint: "f", Snapshot: "s", StepKey: "a"}); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	os.Remove(path + ".lock")
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	es, err := ro.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	if diff := cmp.Diff([]string{"k"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if err := ro.Touch(ctx, []Scope{es[0].Scope()}); err != nil {
		t.Errorf("Touch through the read-only registry = %v, want nothing written and no error", err)
	}
	if _, err := ro.Register(ctx, Entry{Backend: "host", Base: "b", Key: "k2", Snapshot: "s2"}); err == nil {
		t.Error("a write through the read-only registry succeeded")
	}
}
