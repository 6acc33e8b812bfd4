package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
)

// deadOwner returns the owner of a process that has exited.
func deadOwner(t *testing.T) proc.Owner {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o, err := proc.OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return o
}

// An hm process that died with a step running (faked: the machine's owner is a process
// that exits) leaves a sandbox init, its daemon, a machine directory, an ephemeral snapshot,
// trash and a cgroup; Reconcile from another hm removes all of it and keeps kept snapshots.
func TestReconcileAfterCrash(t *testing.T) {
	b := newBackend(t, Options{})
	ghost := deadOwner(t)
	crashed, err := New(b.state, b.store, Options{NoPull: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crashed.Close() })
	crashed.ownerOf = func(int) (proc.Owner, error) { return ghost, nil }

	kept, _ := mustRun(t, crashed, spec(`echo k > /k`))
	keptID := commit(t, crashed, kept, false)
	eph, _ := mustRun(t, crashed, spec(`echo e > /e`))
	ephID := commit(t, crashed, eph, true)
	if err := os.MkdirAll(filepath.Join(b.dir, "trash", proc.NewCookie(ghost), "x"), 0o755); err != nil {
		t.Fatal(err)
	}

	marker := randomHex()
	m := create(t, crashed, spec(stubborn+"sleep 1000", "HM_TEST_MARK="+marker))
	done, _ := startRun(t, context.Background(), m, "ready")
	if len(markedProcesses(marker)) == 0 || len(b.inits()[m.cookie]) == 0 {
		t.Fatal("the running step is not visible: the checks below would prove nothing")
	}

	// An hm on another state dir judges only its own: the step keeps running.
	other := newBackend(t, Options{})
	if err := other.Reconcile(context.Background()); err != nil {
		t.Fatalf("Reconcile of another state dir: %v", err)
	}
	if len(markedProcesses(marker)) == 0 {
		t.Fatal("the reconcile of another state dir killed this state dir's step")
	}

	if err := b.Reconcile(context.Background()); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if r := wait(t, done); r.err == nil {
		t.Errorf("Run of the reconciled machine = %d, nil; want an error", r.code)
	}
	if left := markedProcesses(marker); len(left) > 0 {
		t.Errorf("step processes %v survived Reconcile", left)
	}
	if left := leftovers(b, ghost); len(left) > 0 {
		t.Errorf("left behind by the dead owner after Reconcile: %v", left)
	}
	if ok, _ := b.SnapshotExists(context.Background(), ephID); ok {
		t.Error("ephemeral snapshot of a dead owner survived Reconcile")
	}
	if ok, _ := b.SnapshotExists(context.Background(), keptID); !ok {
		t.Error("Reconcile removed a kept snapshot")
	}
	// Kept snapshots of dead owners go only through PruneSnapshots, when unreferenced.
	removed, err := b.PruneSnapshots(context.Background(), func(string) bool { return false })
	if err != nil || len(removed) != 1 || removed[0] != keptID {
		t.Errorf("PruneSnapshots = %v, %v; want [%s]", removed, err, keptID)
	}
	if names, _ := statedir.List(filepath.Join(b.dir, "layers")); len(names) != 0 {
		t.Errorf("layers left after every snapshot went: %v", names)
	}
}

// kill -9 of a running step's init: Run reports an infrastructure error and the machine's
// processes are gone.
func TestInitKilled(t *testing.T) {
	b := newBackend(t, Options{})
	marker := randomHex()
	m := create(t, b, spec(stubborn+"sleep 1000", "HM_TEST_MARK="+marker))
	done, _ := startRun(t, context.Background(), m, "ready")
	m.mu.Lock()
	pid := m.init.proc.Pid
	m.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := wait(t, done)
	if !errors.Is(r.err, errs.ErrInfra) {
		t.Errorf("Run = %d, %v; want an infrastructure error", r.code, r.err)
	}
	if left := markedProcesses(marker); len(left) > 0 {
		t.Errorf("step processes %v survived their init", left)
	}
}

// helperEnv makes the test binary play an hm process that runs one step and then waits to
// be killed: HM_SANDBOX_TEST_HELPER=STATE_DIR, the step's marker in HM_TEST_MARK.
const helperEnv = "HM_SANDBOX_TEST_HELPER"

func ownerHelper() int {
	ctx := context.Background()
	state := os.Getenv(helperEnv)
	b, err := New(state, imagestore.Open(state), Options{NoPull: true})
	if err != nil {
		println(err.Error())
		return 1
	}
	id, err := b.ResolveImage(ctx, "busybox")
	if err != nil {
		println(err.Error())
		return 1
	}
	s := spec(stubborn+"sleep 1000", "HM_TEST_MARK="+os.Getenv("HM_TEST_MARK"))
	s.Image = id
	m, err := b.Create(ctx, s)
	if err != nil {
		println(err.Error())
		return 1
	}
	_, err = m.Run(ctx, os.Stdout, os.Stderr) // prints ready, then blocks until killed
	println("Run returned:", err)
	return 1
}

// kill -9 of the hm process while a step runs: the kernel kills the step's init
// (PR_SET_PDEATHSIG) and with it the whole sandbox; Reconcile at the next start removes the
// machine's directory and cgroups.
func TestOwnerKilled(t *testing.T) {
	b := newBackend(t, Options{})
	marker := randomHex()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), helperEnv+"="+b.state, "HM_TEST_MARK="+marker)
	// Our own pipe, so that cmd.Wait returns as soon as the helper is reaped rather than
	// when the sandbox, which inherits it, lets go of it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	out := newMarkerWriter("ready")
	seen := out.seen
	copied := make(chan struct{})
	go func() { io.Copy(out, r); close(copied) }()
	select {
	case <-seen:
	case <-copied:
		t.Fatalf("helper exited: %s", out.String())
	case <-time.After(hangGuard):
		t.Fatalf("helper's step never got ready: %s", out.String())
	}
	owner, err := proc.OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var inits []int
	for c, pids := range b.inits() {
		if o, ok := proc.CookieOwner(c); ok && o == owner {
			inits = append(inits, pids...)
		}
	}
	// The step's init, and the helper's spare init if it has one by now.
	if len(inits) == 0 || len(markedProcesses(marker)) == 0 {
		t.Fatalf("inits %v, step processes %v: the checks below would prove nothing", inits, markedProcesses(marker))
	}
	fds := make([]int, len(inits))
	for i, pid := range inits {
		if fds[i], err = unix.PidfdOpen(pid, 0); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[i])
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The parent-death signal is sent while the parent exits, before it can be reaped: by
	// now the init is dead, exiting, or has SIGKILL pending. (Anything else that kills
	// orphans, such as another hm's reconcile, comes later.)
	for i, pid := range inits {
		if !dyingOrGone(pid) {
			t.Errorf("init %d is alive and has no SIGKILL pending after its hm was killed and reaped", pid)
		}
		// A pidfd turns readable when its process exits.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fds[i]), Events: unix.POLLIN}}, int(hangGuard/time.Millisecond))
		if err != nil || n != 1 {
			t.Fatalf("init %d outlived its killed hm (poll %d, %v)", pid, n, err)
		}
	}
	<-copied // every holder of the pipe is gone
	if left := markedProcesses(marker); len(left) > 0 {
		t.Errorf("step processes %v outlived their killed hm", left)
	}
	if len(leftovers(b, owner)) == 0 {
		t.Fatal("the killed hm left no machine directory: Reconcile below would prove nothing")
	}
	if err := b.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(b, owner); len(left) > 0 {
		t.Errorf("left behind after Reconcile: %v", left)
	}
}

// dyingOrGone reports whether pid has exited, is exiting (PF_EXITING) or has SIGKILL
// pending.
func dyingOrGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if f[0] == "Z" || f[0] == "X" {
		return true
	}
	const pfExiting = 0x4
	if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
		return true
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "SigPnd" && k != "ShdPnd" {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && mask&(1<<(syscall.SIGKILL-1)) != 0 {
			return true
		}
	}
	return false
}
