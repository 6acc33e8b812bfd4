// Package vmtest is the conformance suite of the vm.Backend contract. Every VM backend's
// tests call Run with a Factory; the suite checks the lifecycle, output streaming, exit
// codes, snapshots, cancellation and cleanup as documented in package vm, and after every
// subtest asks the backend-specific Leftovers hook whether anything was left behind.
package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// Fixture is what a backend's test provides for one subtest.
type Fixture struct {
	// Backend is fresh for the subtest (its own state), already usable.
	Backend vm.Backend
	// Image is the image reference root steps use; it needs /bin/sh and coreutils-like
	// tools (seq, cat, readlink, sleep, mkdir, ln).
	Image string
	// Leftovers lists what the backend still holds that it should not once every machine
	// is destroyed: processes carrying hm cookies (host), containers (docker), mounts and
	// processes (sandbox). Snapshots are not leftovers. Required.
	Leftovers func() []string
	// IsolatedFS says the machine's whole filesystem is snapshotted, absolute paths such as
	// /opt included, and the workspace is at vm.Workdir. False for the host backend, where
	// only the workspace directory is.
	IsolatedFS bool
}

// Factory returns a fresh Fixture; it may register t.Cleanup for its own teardown and
// t.Skip when the backend is unavailable.
type Factory func(t *testing.T) Fixture

// hangGuard bounds how long the suite waits for a call that must return, so that a
// backend that hangs fails with a message instead of the test binary's timeout. It is not
// a timing assertion: every call the suite guards returns in well under a second normally.
const hangGuard = 2 * time.Minute

// Run runs the conformance suite against the backend f makes, one case after another.
func Run(t *testing.T, f Factory) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, newEnv(t, f))
		})
	}
}

// RunParallel is Run with the cases in parallel (t.Parallel), for a Factory whose every
// Fixture is a backend of its own (its own state dir). Each case's Leftovers must then list
// only what its own backend holds, since other cases run beside it. What a backend cannot
// tell apart from another's (the sandbox's step cgroups, named by the process's cookies) is
// for after: it lists what the cases left behind together, and runs once every case has
// ended and its Fixture has been torn down, so nothing of theirs is legitimately alive.
func RunParallel(t *testing.T, f Factory, after func() []string) {
	t.Cleanup(func() { // a parent's cleanups run once its parallel subtests have ended
		if left := after(); len(left) > 0 {
			t.Errorf("left behind by the cases together:\n  %s", strings.Join(left, "\n  "))
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, newEnv(t, f))
		})
	}
}

// env is one subtest's backend with helpers that fail the test on infrastructure errors.
type env struct {
	t     *testing.T
	fx    Fixture
	image string
}

func newEnv(t *testing.T, f Factory) *env {
	t.Helper()
	fx := f(t)
	if fx.Backend == nil || fx.Leftovers == nil {
		t.Fatal("vmtest: Fixture.Backend and Fixture.Leftovers are required")
	}
	// Registered first, so it runs last: after every Destroy and RemoveSnapshot below.
	t.Cleanup(func() {
		if left := fx.Leftovers(); len(left) > 0 {
			t.Errorf("left behind after the subtest:\n  %s", strings.Join(left, "\n  "))
		}
	})
	image, err := fx.Backend.ResolveImage(t.Context(), fx.Image)
	if err != nil {
		t.Fatalf("ResolveImage(%q): %v", fx.Image, err)
	}
	if image == "" {
		t.Fatalf("ResolveImage(%q) returned an empty id", fx.Image)
	}
	return &env{t: t, fx: fx, image: image}
}

// cleanupCtx outlives the test's context, which is canceled before cleanups run.
func cleanupCtx() context.Context { return context.Background() }

func (e *env) owner() vm.Owner {
	return vm.Owner{RunID: "vmtest", StepKey: e.t.Name(), PID: os.Getpid()}
}

// spec is a root step running cmd with the base environment plus env.
func (e *env) spec(cmd string, env ...string) vm.Spec {
	return vm.Spec{Image: e.image, Cmd: cmd, Env: append(slices.Clone(vm.BaseEnv), env...), Owner: e.owner()}
}

// child is a step from snapshot parent.
func (e *env) child(parent, cmd string, env ...string) vm.Spec {
	s := e.spec(cmd, env...)
	s.Image, s.Parent = "", parent
	return s
}

// create makes a machine and registers its Destroy, which must succeed.
func (e *env) create(spec vm.Spec) vm.Machine {
	e.t.Helper()
	m, err := e.fx.Backend.Create(e.t.Context(), spec)
	if err != nil {
		e.t.Fatalf("Create(%+v): %v", spec, err)
	}
	e.t.Cleanup(func() {
		if err := m.Destroy(cleanupCtx()); err != nil {
			e.t.Errorf("Destroy: %v", err)
		}
	})
	return m
}

func (e *env) inject(m vm.Machine, ws *source.Tree) {
	e.t.Helper()
	if err := m.Inject(e.t.Context(), ws); err != nil {
		e.t.Fatalf("Inject: %v", err)
	}
}

// result is what Run returned.
type result struct {
	stdout, stderr string
	code           int
	err            error
}

// run runs m to completion and fails the test on a Run error.
func (e *env) run(ctx context.Context, m vm.Machine) result {
	e.t.Helper()
	r := e.runAny(ctx, m, &safeBuffer{}, &safeBuffer{})
	if r.err != nil {
		e.t.Fatalf("Run: %v (stdout %q, stderr %q)", r.err, r.stdout, r.stderr)
	}
	return r
}

// runAny runs m with the given writers and returns whatever Run returned.
func (e *env) runAny(ctx context.Context, m vm.Machine, stdout, stderr *safeBuffer) result {
	e.t.Helper()
	return e.wait(e.start(ctx, m, stdout, stderr))
}

// start runs m in the background.
func (e *env) start(ctx context.Context, m vm.Machine, stdout, stderr *safeBuffer) <-chan result {
	ch := make(chan result, 1)
	go func() {
		code, err := m.Run(ctx, stdout, stderr)
		ch <- result{stdout: stdout.String(), stderr: stderr.String(), code: code, err: err}
	}()
	return ch
}

func (e *env) wait(ch <-chan result) result {
	e.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(hangGuard):
		e.t.Fatalf("Run did not return within %v", hangGuard)
		return result{}
	}
}

// commit commits m and registers the snapshot's removal.
func (e *env) commit(m vm.Machine, ephemeral bool) string {
	e.t.Helper()
	id, err := m.Commit(e.t.Context(), ephemeral)
	if err != nil {
		e.t.Fatalf("Commit: %v", err)
	}
	if id == "" {
		e.t.Fatal("Commit returned an empty id")
	}
	e.t.Cleanup(func() {
		if err := e.fx.Backend.RemoveSnapshot(cleanupCtx(), id); err != nil {
			e.t.Errorf("RemoveSnapshot(%s): %v", id, err)
		}
	})
	return id
}

// rootRun creates a root machine, optionally injects ws, runs cmd and expects exit 0.
func (e *env) rootRun(ws *source.Tree, cmd string) (vm.Machine, result) {
	e.t.Helper()
	m := e.create(e.spec(cmd))
	if ws != nil {
		e.inject(m, ws)
	}
	r := e.run(e.t.Context(), m)
	if r.code != 0 {
		e.t.Fatalf("%q exited %d, stderr %q", cmd, r.code, r.stderr)
	}
	return m, r
}

func (e *env) exists(id string) bool {
	e.t.Helper()
	ok, err := e.fx.Backend.SnapshotExists(e.t.Context(), id)
	if err != nil {
		e.t.Fatalf("SnapshotExists(%s): %v", id, err)
	}
	return ok
}

// file is one entry of a workspace fixture: content for a regular file, Link for a
// symlink, Dir for an (empty) directory.
type file struct {
	Content string
	Mode    fs.FileMode
	Link    string
	Dir     bool
}

// tree writes files into a temporary directory and describes it as a source.Tree, the way
// source.Pack would, without depending on its ignore rules.
func tree(t *testing.T, files map[string]file) *source.Tree {
	t.Helper()
	root := t.TempDir()
	ws := &source.Tree{Root: root}
	paths := map[string]bool{}
	for p, f := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case f.Dir:
			err = os.MkdirAll(full, 0o755)
		case f.Link != "":
			err = os.Symlink(f.Link, full)
		default:
			mode := f.Mode
			if mode == 0 {
				mode = 0o644
			}
			err = os.WriteFile(full, []byte(f.Content), mode)
			if err == nil {
				err = os.Chmod(full, mode) // past the umask
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		for d := p; d != "."; d = filepath.Dir(d) {
			paths[d] = true
		}
	}
	for p := range paths {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		e := source.Entry{Path: p, Mode: fi.Mode().Perm(), ModTime: fi.ModTime()}
		switch {
		case fi.IsDir():
			e.Type = source.TypeDir
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Type = source.TypeSymlink
			e.Link, _ = os.Readlink(filepath.Join(root, p))
		default:
			e.Type, e.Size = source.TypeFile, fi.Size()
			ws.Size += fi.Size()
		}
		ws.Entries = append(ws.Entries, e)
	}
	slices.SortFunc(ws.Entries, func(a, b source.Entry) int { return strings.Compare(a.Path, b.Path) })
	return ws
}

// safeBuffer is a bytes.Buffer that may be written while the test reads it. With marker set
// it closes seen once the output contains marker, for synchronising on the step's progress.
type safeBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
	delay  time.Duration // per Write, to play a slow consumer
}

func markerBuffer(marker string) *safeBuffer {
	return &safeBuffer{marker: marker, seen: make(chan struct{})}
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	if b.delay > 0 {
		time.Sleep(b.delay) // simulates a slow consumer; nothing waits on it
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.marker != "" && b.seen != nil && bytes.Contains(b.buf.Bytes(), []byte(b.marker)) {
		close(b.seen)
		b.seen = nil
	}
	return n, err
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitMarker blocks until the step printed the buffer's marker, or Run returned early.
func (e *env) waitMarker(b *safeBuffer, done <-chan result) {
	e.t.Helper()
	b.mu.Lock()
	seen := b.seen
	b.mu.Unlock()
	if seen == nil {
		return
	}
	select {
	case <-seen:
	case r := <-done:
		e.t.Fatalf("Run returned before printing %q: code %d, err %v, stderr %q", b.marker, r.code, r.err, r.stderr)
	case <-time.After(hangGuard):
		e.t.Fatalf("the step did not print %q within %v", b.marker, hangGuard)
	}
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}
