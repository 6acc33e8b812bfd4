package vmtest

import (
	"slices"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/vm"
)

// testContinue checks vm.Continuer where a backend's machines have it: a child continued on
// its parent's machine sees exactly what a child from a snapshot committed at that point
// would (the parent's files, the re-injected source, only its own environment, no process
// of the parent), the parent's Destroy releases nothing, and a snapshot committed before
// continuing is not changed by the child.
func testContinue(t *testing.T, e *env) {
	spec := e.spec(`echo out > out.txt; echo v1 > src.txt; (sleep 300 & echo $! > bg.pid); echo $PARENTVAR`, "PARENTVAR=p")
	spec.Continuable = true
	parent := e.create(spec)
	c, ok := parent.(vm.Continuer)
	if !ok {
		t.Skip("the backend's machines do not implement vm.Continuer")
	}
	e.inject(parent, tree(t, map[string]file{"src.txt": {Content: "v0\n"}}))
	if r := e.run(t.Context(), parent); r.code != 0 || r.stdout != "p\n" {
		t.Fatalf("parent: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	snap := e.commit(parent, true)

	cspec := e.child(snap, `cat out.txt src.txt; echo "var=$PARENTVAR"; kill -0 $(cat bg.pid) 2>/dev/null && echo alive; echo mutated > out.txt; echo $CHILDVAR`, "CHILDVAR=c")
	cspec.Continuable = true
	child, err := c.Continue(t.Context(), cspec)
	if err != nil {
		t.Fatalf("Continue: %v", err)
	}
	t.Cleanup(func() {
		if err := child.Destroy(cleanupCtx()); err != nil {
			t.Errorf("Destroy(child): %v", err)
		}
	})
	if err := parent.Destroy(t.Context()); err != nil {
		t.Fatalf("Destroy(parent) after Continue: %v", err)
	}
	e.inject(child, tree(t, map[string]file{"src.txt": {Content: "v2\n"}}))
	r := e.run(t.Context(), child)
	if want := "out\nv2\nvar=\nc\n"; r.code != 0 || r.stdout != want {
		t.Errorf("continued child: exit %d, stdout %q, want %q (stderr %q)", r.code, r.stdout, want, r.stderr)
	}
	if strings.Contains(r.stdout, "alive") {
		t.Error("the parent's background process survived into the continued child")
	}
	grand := e.create(e.child(e.commit(child, true), `cat out.txt`))
	if r := e.run(t.Context(), grand); r.code != 0 || r.stdout != "mutated\n" {
		t.Errorf("child's snapshot: exit %d, stdout %q", r.code, r.stdout)
	}
	sib := e.create(e.child(snap, `cat out.txt`))
	if r := e.run(t.Context(), sib); r.code != 0 || r.stdout != "out\n" {
		t.Errorf("the parent's snapshot changed under the continued child: stdout %q", r.stdout)
	}

	// A failed step cannot be continued.
	spec = e.spec(`exit 3`)
	spec.Continuable = true
	failed := e.create(spec)
	if r := e.run(t.Context(), failed); r.code != 3 {
		t.Fatalf("exit %d, want 3", r.code)
	}
	if _, err := failed.(vm.Continuer).Continue(t.Context(), e.spec("true")); err == nil {
		t.Error("Continue after a failed step succeeded")
	}
}

// testListSnapshots checks vm.SnapshotLister where a backend has it: a kept snapshot is
// listed while it lives, and not once removed.
func testListSnapshots(t *testing.T, e *env) {
	l, ok := e.fx.Backend.(vm.SnapshotLister)
	if !ok {
		t.Skip("the backend does not implement vm.SnapshotLister")
	}
	m, _ := e.rootRun(nil, `echo x > x.txt`)
	snap, err := m.Commit(t.Context(), false)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	listed := func() bool {
		ids, err := l.ListSnapshots(t.Context())
		if err != nil {
			t.Fatalf("ListSnapshots: %v", err)
		}
		return slices.Contains(ids, snap)
	}
	if !listed() {
		t.Errorf("kept snapshot %s not listed", snap)
	}
	if err := e.fx.Backend.RemoveSnapshot(t.Context(), snap); err != nil {
		t.Fatalf("RemoveSnapshot: %v", err)
	}
	if listed() {
		t.Errorf("removed snapshot %s still listed", snap)
	}
}
