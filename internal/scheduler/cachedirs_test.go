package scheduler

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/vm"
)

// A step's cache_dirs reach its machine in the build's scope, and a machine is never marked
// for continuing across a step that has some: its mounts are made when it is created.
func TestCacheDirsInSpec(t *testing.T) {
	pl := build(t, []step{
		{key: "a", cmd: "echo a"},
		{key: "b", cmd: "echo b", parent: "a"},
		{key: "c", cmd: "echo c", parent: "b"},
		{key: "d", cmd: "echo d", parent: "c"},
	})
	pl.Steps[1].CacheDirs = []string{"/root/.cache/go-build"}
	f := newFakeVM()
	scope := vm.CacheDir{Org: "o", Pipeline: "p"}
	res, _ := runPlan(t, t.Context(), pl, f, Options{CacheScope: scope})
	if res.Status != BuildPassed {
		t.Fatalf("status %v", res.Status)
	}
	type got struct {
		Cmd         string
		Continuable bool
		CacheDirs   []vm.CacheDir
	}
	var specs []got
	for _, s := range f.created {
		specs = append(specs, got{s.Cmd, s.Continuable, s.CacheDirs})
	}
	want := []got{
		{"echo a", false, nil}, // its child has cache dirs
		{"echo b", false, []vm.CacheDir{{Org: "o", Pipeline: "p", Path: "/root/.cache/go-build"}}},
		{"echo c", true, nil},
		{"echo d", false, nil},
	}
	if diff := cmp.Diff(want, specs); diff != "" {
		t.Errorf("specs (-want +got):\n%s", diff)
	}
}
