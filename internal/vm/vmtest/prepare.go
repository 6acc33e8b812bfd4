package vmtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/vm"
)

// testPrepare checks vm.Preparer where a backend has it: a prepared machine goes through the
// ordinary lifecycle and holds what a created one would (the image's or the parent
// snapshot's files, the injected source, exactly its own environment, its own exit code,
// a commit its children start from, the process tree killed on cancel), and one destroyed
// without running leaves nothing behind (the fixture's Leftovers after the subtest).
func testPrepare(t *testing.T, e *env) {
	p, ok := e.fx.Backend.(vm.Preparer)
	if !ok {
		t.Skip("the backend does not implement vm.Preparer")
	}
	prepare := func(spec vm.Spec) vm.Machine {
		t.Helper()
		m, err := p.Prepare(t.Context(), spec)
		if err != nil {
			t.Fatalf("Prepare(%+v): %v", spec, err)
		}
		t.Cleanup(func() {
			if err := m.Destroy(cleanupCtx()); err != nil {
				t.Errorf("Destroy: %v", err)
			}
		})
		return m
	}

	root := prepare(e.spec(`cat src.txt; echo "var=$V"; echo made > made.txt; echo err >&2`, "V=it's"))
	e.inject(root, tree(t, map[string]file{"src.txt": {Content: "v1\n"}}))
	if r := e.run(t.Context(), root); r.code != 0 || r.stdout != "v1\nvar=it's\n" || r.stderr != "err\n" {
		t.Fatalf("prepared root: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	snap := e.commit(root, true)

	child := prepare(e.child(snap, `cat made.txt src.txt; echo "var=$V"; exit 7`))
	e.inject(child, tree(t, map[string]file{"src.txt": {Content: "v2\n"}}))
	if r := e.run(t.Context(), child); r.code != 7 || r.stdout != "made\nv2\nvar=\n" {
		t.Errorf("prepared child: exit %d, stdout %q (stderr %q), want 7 and the parent's files, the new source, none of its env", r.code, r.stdout, r.stderr)
	}
	if _, err := child.Commit(t.Context(), true); err == nil {
		t.Error("Commit after exit code 7 succeeded")
	}

	// Prepared and never run: destroyed, nothing left (checked after the subtest).
	unused := prepare(e.child(snap, `echo never > never.txt`))
	e.inject(unused, tree(t, map[string]file{"src.txt": {Content: "v3\n"}}))
	if err := unused.Destroy(t.Context()); err != nil {
		t.Fatalf("Destroy of an unused prepared machine: %v", err)
	}

	// Canceled: Run returns ctx's error, with the machine's processes gone.
	blocked := prepare(e.spec(`sleep 300 & sleep 300`))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	r := e.runAny(ctx, blocked, &safeBuffer{}, &safeBuffer{})
	if r.err == nil || !strings.Contains(r.err.Error(), "deadline") {
		t.Errorf("canceled prepared machine: exit %d, err %v, want the deadline", r.code, r.err)
	}
}

// testReinject checks vm.Reinjector where a backend's machines have it: after a passed Run,
// the workspace is overlaid again onto what the command left (its own files stay, the
// source files it changed are the source's again), a child from the snapshot committed then
// holds exactly that without an Inject of its own, and Reinject is refused before Run.
func testReinject(t *testing.T, e *env) {
	m := e.create(e.spec(`echo changed > src.txt; echo made > made.txt; mkdir -p d; echo x > d/own.txt`))
	ri, ok := m.(vm.Reinjector)
	if !ok {
		t.Skip("the backend's machines do not implement vm.Reinjector")
	}
	ws := tree(t, map[string]file{"src.txt": {Content: "v1\n"}, "d/in.txt": {Content: "in\n"}})
	if err := ri.Reinject(t.Context(), ws); err == nil {
		t.Error("Reinject before Run succeeded")
	}
	e.inject(m, ws)
	if r := e.run(t.Context(), m); r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if err := ri.Reinject(t.Context(), ws); err != nil {
		t.Fatalf("Reinject: %v", err)
	}
	child := e.create(e.child(e.commit(m, true), `cat src.txt made.txt d/own.txt d/in.txt`))
	if r := e.run(t.Context(), child); r.code != 0 || r.stdout != "v1\nmade\nx\nin\n" {
		t.Errorf("child of the reinjected snapshot: exit %d, stdout %q (stderr %q), want the source over the parent's files", r.code, r.stdout, r.stderr)
	}
}
