package host

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/vmtest"
)

func TestConformance(t *testing.T) {
	vmtest.Run(t, func(t *testing.T) vmtest.Fixture {
		b := New(t.TempDir())
		return vmtest.Fixture{Backend: b, Image: "debian:12", Leftovers: func() []string { return leftovers(b) }}
	})
}

// leftovers lists processes carrying a cookie of this test process, and work directories
// and trash that outlived their machines.
func leftovers(b *Backend) []string {
	var out []string
	me := proc.Self()
	for c, pids := range proc.Cookies() {
		if o, ok := proc.CookieOwner(c); ok && o == me {
			out = append(out, fmt.Sprintf("processes %v carrying cookie %s", pids, c))
		}
	}
	for _, sub := range []string{"work", "trash"} {
		names, err := statedir.List(filepath.Join(b.dir, sub))
		if err != nil {
			out = append(out, err.Error())
		}
		for _, n := range names {
			out = append(out, filepath.Join(sub, n))
		}
	}
	return out
}

func spec(cmd string) vm.Spec {
	return vm.Spec{Image: ImageID, Cmd: cmd, Env: vm.BaseEnv, Owner: vm.Owner{RunID: "t", PID: os.Getpid()}}
}

func childSpec(parent, cmd string) vm.Spec {
	s := spec(cmd)
	s.Image, s.Parent = "", parent
	return s
}

// mustRun creates a machine, runs cmd and expects exit 0.
func mustRun(t *testing.T, b *Backend, s vm.Spec) (*machine, string) {
	t.Helper()
	m, err := b.Create(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Destroy(context.Background()) })
	var out, stderr bytes.Buffer
	code, err := m.Run(t.Context(), &out, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("%q: exit %d, %v, stderr %q", s.Cmd, code, err, stderr.String())
	}
	return m.(*machine), out.String()
}

func TestResolveImage(t *testing.T) {
	b := New(t.TempDir())
	for _, ref := range []string{"debian:12", "alpine", ""} {
		if id, err := b.ResolveImage(t.Context(), ref); err != nil || id != ImageID {
			t.Errorf("ResolveImage(%q) = %q, %v", ref, id, err)
		}
	}
}

// A child writing in place (no truncation, chmod, append) must not modify the snapshot, and
// its files must not share inodes with it; hard links inside the tree stay linked.
func TestChildDoesNotModifySnapshot(t *testing.T) {
	b := New(t.TempDir())
	parent, _ := mustRun(t, b, spec(`printf 'abcdef' > f && ln f hard && chmod 640 f && mkdir d && chmod 750 d`))
	id, err := parent.Commit(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(b.dir, "snap", id)
	child, out := mustRun(t, b, childSpec(id, `
stat -c %i f hard | uniq | wc -l
printf 'X' | dd of=f bs=1 seek=0 conv=notrunc 2>/dev/null; chmod 600 f; echo more >> hard; cat f`))
	if want := "1\nXbcdefmore\n"; out != want {
		t.Errorf("child output %q, want %q (hard links inside the tree kept)", out, want)
	}
	got, err := os.ReadFile(filepath.Join(snap, "f"))
	if err != nil || string(got) != "abcdef" {
		t.Errorf("snapshot's f = %q, %v; want it unchanged", got, err)
	}
	for name, want := range map[string]os.FileMode{"f": 0o640, "d": os.ModeDir | 0o750} {
		if fi, err := os.Stat(filepath.Join(snap, name)); err != nil || fi.Mode() != want {
			t.Errorf("snapshot's %s mode = %v, %v; want %v", name, fi.Mode(), err, want)
		}
	}
	var s1, s2 syscall.Stat_t
	if err := syscall.Stat(filepath.Join(snap, "f"), &s1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(child.work, "f"), &s2); err != nil {
		t.Fatal(err)
	}
	if s1.Ino == s2.Ino {
		t.Error("child's f is a hard link to the snapshot's")
	}
}

// Daemons that leave the process group and ignore SIGTERM die with the step, whether it
// exits normally or is canceled, before Run returns.
func TestBackgroundProcessesDieWithRun(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1) from util-linux")
	}
	// The step waits until both daemons are set up, so they are not killed by luck while
	// still in the step's process group.
	const daemons = `setsid sh -c 'trap "" TERM; touch d1; exec sleep 60' &
sh -c 'trap "" TERM; touch d2; exec sleep 61' &
while [ ! -e d1 ] || [ ! -e d2 ]; do :; done;`
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancel), func(t *testing.T) {
			b := New(t.TempDir())
			cmd := daemons + " echo ready"
			if cancel {
				cmd += "; sleep 30"
			}
			vmm, err := b.Create(t.Context(), spec(cmd))
			if err != nil {
				t.Fatal(err)
			}
			m := vmm.(*machine)
			defer m.Destroy(context.Background())
			ctx, stop := context.WithCancel(t.Context())
			defer stop()
			out := &signalWriter{marker: "ready", seen: make(chan struct{})}
			if cancel {
				go func() { <-out.seen; stop() }()
			}
			code, err := m.Run(ctx, out, os.Stderr)
			if cancel != (err != nil) {
				t.Errorf("Run = %d, %v", code, err)
			}
			if pids := proc.FindCookie(m.cookie); len(pids) > 0 {
				t.Errorf("processes %v of the step still run after Run returned", pids)
			}
		})
	}
}

// A process that scrubbed its environment and left the session escapes the kill; holding
// the output pipes, it must not keep Run from returning with the output so far.
func TestEscapedProcessCannotHangRun(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1) from util-linux")
	}
	b := New(t.TempDir())
	// The escapee writes its PID once it has scrubbed its environment and left the session;
	// the step waits for that, so the kill cannot catch it before it escaped.
	m, out := mustRun(t, b, spec(`env -i setsid sh -c 'echo $$ > pid.tmp; mv pid.tmp pid; exec sleep 60' &
while [ ! -s pid ]; do :; done; cat pid; echo done`))
	lines := strings.Fields(out)
	if len(lines) != 2 || lines[1] != "done" {
		t.Fatalf("stdout %q", out)
	}
	pid, err := strconv.Atoi(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	_, err = proc.OwnerOf(pid)
	syscall.Kill(pid, syscall.SIGKILL) // the escapee is ours to clean up
	if err != nil {
		t.Errorf("the escapee %d was not running when Run returned, so this tested nothing: %v", pid, err)
	}
	if err := m.Destroy(t.Context()); err != nil {
		t.Error(err)
	}
}

func TestReconcileDeadOwner(t *testing.T) {
	dir := t.TempDir()
	me := proc.Self()
	dead := proc.Owner{PID: me.PID, Start: me.Start + 1} // our PID, reused by us: its owner is gone
	crashed := New(dir)
	crashed.ownerOf = func(int) (proc.Owner, error) { return dead, nil }
	live := New(dir)

	ephemeral, _ := mustRun(t, crashed, spec("echo e > f"))
	eID, err := ephemeral.Commit(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := mustRun(t, crashed, spec("echo k > f"))
	kID, err := kept.Commit(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := crashed.Create(t.Context(), spec("true"))
	if err != nil {
		t.Fatal(err)
	}
	// A step of the crashed run still running, with a daemon.
	running, err := crashed.Create(t.Context(), spec(`setsid sh -c 'trap "" TERM; touch d; exec sleep 60' &
while [ ! -e d ]; do :; done; echo ready; sleep 60`))
	if err != nil {
		t.Fatal(err)
	}
	out := &signalWriter{marker: "ready", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() { _, err := running.Run(context.Background(), out, os.Stderr); done <- err }()
	<-out.seen
	deadTrash := filepath.Join(dir, "host", "trash", proc.NewCookie(dead))
	if err := os.MkdirAll(filepath.Join(deadTrash, "half", "deleted"), 0o755); err != nil {
		t.Fatal(err)
	}
	liveMachine, err := live.Create(t.Context(), spec("true"))
	if err != nil {
		t.Fatal(err)
	}
	defer liveMachine.Destroy(context.Background())
	liveSnap, _ := mustRun(t, live, spec("true"))
	liveID, err := liveSnap.Commit(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}

	if err := live.Reconcile(t.Context()); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	<-done // the crashed run's step was killed, else this blocks
	if pids := proc.FindCookie(running.(*machine).cookie); len(pids) > 0 {
		t.Errorf("processes %v of the dead owner survived", pids)
	}
	for _, tc := range []struct {
		what string
		path string
		want bool
	}{
		{"dead owner's ephemeral snapshot", filepath.Join(dir, "host", "snap", eID), false},
		{"dead owner's kept snapshot", filepath.Join(dir, "host", "snap", kID), true},
		{"dead owner's idle work dir", idle.(*machine).work, false},
		{"dead owner's running work dir", running.(*machine).work, false},
		{"dead owner's trash", deadTrash, false},
		{"live owner's work dir", liveMachine.(*machine).work, true},
		{"live owner's ephemeral snapshot", filepath.Join(dir, "host", "snap", liveID), true},
	} {
		_, err := os.Lstat(tc.path)
		if got := err == nil; got != tc.want {
			t.Errorf("%s exists = %v after Reconcile, want %v", tc.what, got, tc.want)
		}
	}
	for _, m := range []vm.Machine{idle, running} {
		if err := m.Destroy(t.Context()); err != nil {
			t.Errorf("Destroy after Reconcile removed its work dir: %v", err)
		}
	}
}

func TestMisuse(t *testing.T) {
	b := New(t.TempDir())
	ctx := t.Context()
	failed, err := b.Create(ctx, spec("exit 2"))
	if err != nil {
		t.Fatal(err)
	}
	defer failed.Destroy(context.Background())
	if code, err := failed.Run(ctx, nil, nil); code != 2 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if _, err := failed.Run(ctx, nil, nil); err == nil {
		t.Error("second Run succeeded")
	}
	if _, err := failed.Commit(ctx, true); err == nil {
		t.Error("Commit after exit 2 succeeded")
	}
	for _, s := range []vm.Spec{childSpec("k-missing", "true"), childSpec("../../etc", "true"), {Cmd: "true"}} {
		if m, err := b.Create(ctx, s); err == nil {
			m.Destroy(ctx)
			t.Errorf("Create(%+v) succeeded", s)
		}
	}
	for _, id := range []string{"../../etc", "k-/x", "x-abc", "e-"} {
		if ok, err := b.SnapshotExists(ctx, id); ok || err != nil {
			t.Errorf("SnapshotExists(%q) = %v, %v", id, ok, err)
		}
		if err := b.RemoveSnapshot(ctx, id); err == nil {
			t.Errorf("RemoveSnapshot(%q) = nil for an id this backend cannot have made", id)
		}
	}
}

// signalWriter closes seen once the output contains marker.
type signalWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
	once   sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if bytes.Contains(w.buf.Bytes(), []byte(w.marker)) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}
