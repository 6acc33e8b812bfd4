package vmtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/vm"
)

var cases = []struct {
	name string
	fn   func(t *testing.T, e *env)
}{
	{"Output", testOutput},
	{"ExitCodes", testExitCodes},
	{"Env", testEnv},
	{"Workspace", testWorkspace},
	{"ChildFromSnapshot", testChild},
	{"IsolatedFS", testIsolatedFS},
	{"Snapshots", testSnapshots},
	{"DestroyIdempotent", testDestroy},
	{"Cancel", testCancel},
	{"Deadline", testDeadline},
	{"DestroyAbortsRun", testDestroyAbortsRun},
	{"Concurrent", testConcurrent},
	{"LargeOutputSlowConsumer", testLargeOutput},
	{"FailingCommand", testFailing},
	{"Reconcile", testReconcile},
	{"PruneSnapshotsSparesLiveOwners", testPruneLive},
	{"SnapshotSize", testSnapshotSize},
	{"Continue", testContinue},
	{"Prepare", testPrepare},
	{"Reinject", testReinject},
	{"ListSnapshots", testListSnapshots},
	{"Artifacts", testArtifacts},
	{"CacheDirs", testCacheDirs},
}

// SnapshotSize counts what the step wrote: a 256 KiB file makes the snapshot at least that
// big, and not absurdly bigger.
func testSnapshotSize(t *testing.T, e *env) {
	m, _ := e.rootRun(nil, "head -c 262144 /dev/zero > big")
	id := e.commit(m, false)
	n, err := e.fx.Backend.SnapshotSize(t.Context(), id)
	if err != nil {
		t.Fatalf("SnapshotSize: %v", err)
	}
	if n < 262144 || n > 64<<20 {
		t.Errorf("SnapshotSize = %d bytes, want about 256 KiB", n)
	}
}

// A kept snapshot committed by a live hm process may be about to be registered: PruneSnapshots
// must leave it, whatever keep says, and must never touch ephemeral snapshots.
func testPruneLive(t *testing.T, e *env) {
	ctx := t.Context()
	kept, _ := e.rootRun(nil, "echo x > f")
	keptID := e.commit(kept, false)
	eph, _ := e.rootRun(nil, "echo y > f")
	ephID := e.commit(eph, true)
	removed, err := e.fx.Backend.PruneSnapshots(ctx, func(string) bool { return false })
	if err != nil {
		t.Fatalf("PruneSnapshots: %v", err)
	}
	for _, id := range removed {
		if id == keptID || id == ephID {
			t.Errorf("PruneSnapshots removed %s, owned by this live process", id)
		}
	}
	if !e.exists(keptID) || !e.exists(ephID) {
		t.Errorf("snapshots of a live owner are gone (kept %v, ephemeral %v)", e.exists(keptID), e.exists(ephID))
	}
}

func testOutput(t *testing.T, e *env) {
	m := e.create(e.spec(`printf 'out1\nout2\n'; printf 'err1\n' >&2; printf 'out3'; printf 'err2' >&2`))
	r := e.run(t.Context(), m)
	want := result{stdout: "out1\nout2\nout3", stderr: "err1\nerr2"}
	if diff := cmp.Diff(want, r, cmp.AllowUnexported(result{})); diff != "" {
		t.Errorf("Run (-want +got):\n%s", diff)
	}
}

func testExitCodes(t *testing.T, e *env) {
	for _, tc := range []struct {
		cmd  string
		want int
	}{
		{"true", 0},
		{"exit 3", 3},
		{"hm-vmtest-no-such-command", 127},
	} {
		m := e.create(e.spec(tc.cmd))
		if r := e.run(t.Context(), m); r.code != tc.want {
			t.Errorf("%q exited %d, want %d (stderr %q)", tc.cmd, r.code, tc.want, r.stderr)
		}
	}
}

func testEnv(t *testing.T, e *env) {
	m := e.create(e.spec(`printf '%s|%s|%s' "$FOO" "$DUP" "$PATH"`, "FOO=bar baz", "DUP=1", "DUP=2"))
	r := e.run(t.Context(), m)
	want := "bar baz|2|"
	for _, kv := range vm.BaseEnv {
		if p, ok := strings.CutPrefix(kv, "PATH="); ok {
			want += p
		}
	}
	if r.stdout != want {
		t.Errorf("stdout = %q, want %q (later Env entries win)", r.stdout, want)
	}
}

func testWorkspace(t *testing.T, e *env) {
	ws := tree(t, map[string]file{
		"hello.txt":     {Content: "hello\n"},
		"bin/tool.sh":   {Content: "#!/bin/sh\necho tool\n", Mode: 0o755},
		"deep/a/b/c.md": {Content: "c\n"},
		"link":          {Link: "hello.txt"},
		"dangling":      {Link: "nowhere/x"},
		"empty/dir":     {Dir: true},
	})
	cmd := `cat hello.txt; ./bin/tool.sh; cat deep/a/b/c.md; readlink link; cat link; readlink dangling
test -d empty/dir && echo emptydir; test -L link && echo islink; test -x bin/tool.sh && echo exec`
	if e.fx.IsolatedFS {
		cmd += "; pwd"
	}
	m := e.create(e.spec(cmd))
	e.inject(m, ws)
	r := e.run(t.Context(), m)
	want := "hello\ntool\nc\nhello.txt\nhello\nnowhere/x\nemptydir\nislink\nexec\n"
	if e.fx.IsolatedFS {
		want += vm.Workdir + "\n"
	}
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d, stdout %q, want %q (stderr %q)", r.code, r.stdout, want, r.stderr)
	}
}

func testChild(t *testing.T, e *env) {
	parentWS := tree(t, map[string]file{"src.txt": {Content: "v1\n"}, "old.txt": {Content: "old\n"}})
	parent, _ := e.rootRun(parentWS, `cat src.txt > seen.txt && echo out > out.txt &&
mkdir -p gen/empty && echo g > gen/g.txt && ln -s gen/g.txt glink && chmod 755 out.txt`)
	snap := e.commit(parent, false)

	// The re-injected source overwrites and adds; what the parent wrote, and old.txt, which
	// the new source no longer has, stay.
	childWS := tree(t, map[string]file{"src.txt": {Content: "v2\n"}, "new.txt": {Content: "new\n"}})
	c1 := e.create(e.child(snap, `cat src.txt seen.txt out.txt gen/g.txt glink old.txt new.txt
readlink glink; test -d gen/empty && echo empty; test -x out.txt && echo exec
echo mutated > out.txt; echo more >> gen/g.txt; rm old.txt; echo v3 > src.txt`))
	e.inject(c1, childWS)
	r := e.run(t.Context(), c1)
	want := "v2\nv1\nout\ng\ng\nold\nnew\ngen/g.txt\nempty\nexec\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("child: exit %d, stdout %q, want %q (stderr %q)", r.code, r.stdout, want, r.stderr)
	}

	// Writing in place in one child must not reach the snapshot its siblings start from.
	c2 := e.create(e.child(snap, `cat src.txt out.txt gen/g.txt old.txt`))
	r = e.run(t.Context(), c2)
	if want := "v1\nout\ng\nold\n"; r.code != 0 || r.stdout != want {
		t.Errorf("second child: exit %d, stdout %q, want %q: a child changed the parent's snapshot",
			r.code, r.stdout, want)
	}
}

func testIsolatedFS(t *testing.T, e *env) {
	if !e.fx.IsolatedFS {
		t.Skip("backend snapshots only the workspace (IsolatedFS false)")
	}
	parent, _ := e.rootRun(nil, `mkdir -p /opt/hm-vmtest && echo parent > /opt/hm-vmtest/f`)
	snap := e.commit(parent, true)
	c := e.create(e.child(snap, `cat /opt/hm-vmtest/f`))
	if r := e.run(t.Context(), c); r.code != 0 || r.stdout != "parent\n" {
		t.Errorf("child: exit %d, stdout %q, want the parent's /opt file", r.code, r.stdout)
	}
	fresh := e.create(e.spec(`test -e /opt/hm-vmtest/f && echo leaked || echo clean`))
	if r := e.run(t.Context(), fresh); r.stdout != "clean\n" {
		t.Errorf("fresh root step sees the other step's /opt file: %q", r.stdout)
	}
}

func testSnapshots(t *testing.T, e *env) {
	ctx := t.Context()
	b := e.fx.Backend
	ids := map[string]bool{}
	for _, ephemeral := range []bool{false, true} {
		m, _ := e.rootRun(nil, "echo x > f")
		id, err := m.Commit(ctx, ephemeral)
		if err != nil {
			t.Fatalf("Commit(ephemeral=%v): %v", ephemeral, err)
		}
		if ids[id] {
			t.Fatalf("Commit returned id %q twice", id)
		}
		ids[id] = true
		// The snapshot outlives its machine.
		if err := m.Destroy(ctx); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
		if !e.exists(id) {
			t.Fatalf("SnapshotExists(%s) = false after Commit and Destroy", id)
		}
		if err := b.RemoveSnapshot(ctx, id); err != nil {
			t.Fatalf("RemoveSnapshot: %v", err)
		}
		if e.exists(id) {
			t.Errorf("SnapshotExists(%s) = true after RemoveSnapshot", id)
		}
		if err := b.RemoveSnapshot(ctx, id); err != nil {
			t.Errorf("second RemoveSnapshot: %v, want nil", err)
		}
		if m, err := b.Create(ctx, e.child(id, "true")); err == nil {
			m.Destroy(cleanupCtx())
			t.Errorf("Create from removed snapshot %s succeeded", id)
		}
	}
}

func testDestroy(t *testing.T, e *env) {
	ctx := t.Context()
	for _, ran := range []bool{false, true} {
		m, err := e.fx.Backend.Create(ctx, e.spec("echo x > f"))
		if err != nil {
			t.Fatal(err)
		}
		if ran {
			e.run(ctx, m)
		}
		for i := range 2 {
			if err := m.Destroy(ctx); err != nil {
				t.Errorf("Destroy #%d (after run: %v): %v", i+1, ran, err)
			}
		}
	}
}

// tree of a step that must die: a TERM-ignoring background process holding the output
// pipes, and the foreground sleep.
const stubborn = `sh -c 'trap "" TERM; sleep 60' & echo ready; sleep 30`

func testCancel(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	m := e.create(e.spec(stubborn))
	out := markerBuffer("ready")
	done := e.start(ctx, m, out, &safeBuffer{})
	e.waitMarker(out, done)
	cancel()
	r := e.wait(done)
	if r.err == nil || !errors.Is(r.err, context.Canceled) {
		t.Errorf("Run after cancel = %d, %v; want an error wrapping context.Canceled", r.code, r.err)
	}
}

func testDeadline(t *testing.T, e *env) {
	m := e.create(e.spec(stubborn))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	r := e.runAny(ctx, m, &safeBuffer{}, &safeBuffer{})
	if r.err == nil || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("Run past its deadline = %d, %v; want an error wrapping context.DeadlineExceeded", r.code, r.err)
	}
}

func testDestroyAbortsRun(t *testing.T, e *env) {
	m := e.create(e.spec(stubborn))
	out := markerBuffer("ready")
	done := e.start(t.Context(), m, out, &safeBuffer{})
	e.waitMarker(out, done)
	if err := m.Destroy(cleanupCtx()); err != nil {
		t.Errorf("Destroy during Run: %v", err)
	}
	if r := e.wait(done); r.err == nil && r.code == 0 {
		t.Error("Run aborted by Destroy reported success")
	}
}

func testConcurrent(t *testing.T, e *env) {
	const n = 8
	ctx := t.Context()
	b := e.fx.Backend
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errc <- concurrentChain(ctx, b, e, i)
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
}

// concurrentChain runs a root step and a child of it, without touching t (not allowed off
// the test goroutine for fatal errors).
func concurrentChain(ctx context.Context, b vm.Backend, e *env, i int) (err error) {
	n := strconv.Itoa(i)
	var cleanups []func()
	defer func() {
		for j := len(cleanups) - 1; j >= 0; j-- {
			cleanups[j]()
		}
	}()
	runStep := func(spec vm.Spec) (vm.Machine, string, error) {
		m, err := b.Create(ctx, spec)
		if err != nil {
			return nil, "", err
		}
		cleanups = append(cleanups, func() {
			if derr := m.Destroy(cleanupCtx()); derr != nil && err == nil {
				err = derr
			}
		})
		var out safeBuffer
		code, err := m.Run(ctx, &out, &safeBuffer{})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d", code)
		}
		return m, out.String(), err
	}
	root, out, err := runStep(e.spec(`echo "$N" > n.txt; echo "$N"`, "N="+n))
	if err != nil || out != n+"\n" {
		return fmt.Errorf("machine %d root: stdout %q, %v", i, out, err)
	}
	snap, err := root.Commit(ctx, true)
	if err != nil {
		return fmt.Errorf("machine %d commit: %v", i, err)
	}
	cleanups = append(cleanups, func() { b.RemoveSnapshot(cleanupCtx(), snap) })
	_, out, err = runStep(e.child(snap, "cat n.txt"))
	if err != nil || out != n+"\n" {
		return fmt.Errorf("machine %d child: stdout %q, want %q, %v", i, out, n+"\n", err)
	}
	return nil
}

func testLargeOutput(t *testing.T, e *env) {
	const outLines, errLines = 750_000, 50_000 // ~5.1 MB and ~0.3 MB
	m := e.create(e.spec(fmt.Sprintf("seq 1 %d & seq 1 %d >&2; wait", outLines, errLines)))
	stdout := &safeBuffer{delay: time.Millisecond}
	stderr := &safeBuffer{delay: time.Millisecond}
	r := e.runAny(t.Context(), m, stdout, stderr)
	if r.err != nil || r.code != 0 {
		t.Fatalf("Run = %d, %v", r.code, r.err)
	}
	if want := seqOutput(outLines); r.stdout != want {
		t.Errorf("stdout: got %d bytes, want %d (incomplete or corrupt)", len(r.stdout), len(want))
	}
	if want := seqOutput(errLines); r.stderr != want {
		t.Errorf("stderr: got %d bytes, want %d (incomplete or corrupt)", len(r.stderr), len(want))
	}
}

func testFailing(t *testing.T, e *env) {
	m := e.create(e.spec(`echo partial > f; sh -c 'trap "" TERM; sleep 60' & echo failing >&2; exit 1`))
	r := e.run(t.Context(), m)
	if r.code != 1 || r.stderr != "failing\n" {
		t.Errorf("exit %d, stderr %q; want 1, %q", r.code, r.stderr, "failing\n")
	}
	// Destroy (registered by create) must succeed and leave nothing, background job included.
}

func testReconcile(t *testing.T, e *env) {
	ctx := t.Context()
	if err := e.fx.Backend.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile on a fresh backend: %v", err)
	}
	// A machine of a live owner, created but not yet run, still works after a reconcile.
	pending := e.create(e.spec("cat in.txt"))
	e.inject(pending, tree(t, map[string]file{"in.txt": {Content: "in\n"}}))
	if err := e.fx.Backend.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if r := e.run(ctx, pending); r.code != 0 || r.stdout != "in\n" {
		t.Errorf("machine created before Reconcile: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// What a live owner holds survives a reconcile, ephemeral or not.
	for _, ephemeral := range []bool{false, true} {
		m, _ := e.rootRun(nil, "echo x > f")
		id := e.commit(m, ephemeral)
		if err := e.fx.Backend.Reconcile(ctx); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		if !e.exists(id) {
			t.Errorf("Reconcile removed snapshot %s (ephemeral %v) of a live owner", id, ephemeral)
		}
		c := e.create(e.child(id, "cat f"))
		if r := e.run(ctx, c); r.stdout != "x\n" {
			t.Errorf("child of reconciled snapshot: stdout %q", r.stdout)
		}
	}
}
