package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
)

// machine is one step's work directory and, while Run runs, its process tree.
type machine struct {
	b      *Backend
	spec   vm.Spec
	cookie string // HM_STEP_COOKIE of the step's processes; also the work dir's name
	work   string

	mu   sync.Mutex
	pgid int // the step's process group while its leader is not reaped, else 0
	// releases unlock the step's cache directories (cachedirs.go).
	releases []func()
	done     chan struct{} // closed when Run returns; nil before Run
	// stopped: Run's kill after the leader exited saw none of the step's processes left,
	// so nothing can carry the cookie any more and Destroy need not scan for it again.
	stopped bool
	vm.Lifecycle
}

// Run implements vm.Machine.
func (m *machine) Run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	cmd, streams, err := m.start(ctx, stdout, stderr)
	if err != nil {
		return -1, err
	}
	defer close(m.done)
	defer m.releaseCacheDirs() // after the kill below: no process of the step writes any more
	pid := cmd.Process.Pid

	exited := make(chan struct{})
	go func() { waitExited(pid); close(exited) }()
	aborted := false
	select {
	case <-exited:
	case <-ctx.Done():
		aborted = true
		m.kill()
		<-exited
	}
	// The leader has exited but is not reaped, so its PID and process group id cannot be
	// reused yet: kill whatever the step left running in the background, then reap.
	all := m.kill()
	m.mu.Lock()
	m.pgid = 0
	m.stopped = all
	destroyed := m.Destroyed
	m.mu.Unlock()
	waitErr := cmd.Wait()
	for _, s := range streams {
		s.exited.Store(true)
		_ = s.r.SetReadDeadline(time.Now().Add(drainIdle))
	}
	var outErr error
	for _, s := range streams {
		outErr = errors.Join(outErr, s.finish())
	}

	switch {
	case aborted:
		return -1, vm.RunAborted(ctx, "host")
	case destroyed:
		return -1, fmt.Errorf("host: run: %w: machine destroyed while running", errs.ErrCanceled)
	case waitErr != nil && !isExit(waitErr):
		return -1, fmt.Errorf("host: run: %w: %w", errs.ErrInfra, waitErr)
	case outErr != nil:
		return -1, fmt.Errorf("host: run: %w: writing output: %v", errs.ErrInfra, outErr)
	}
	code := exitCode(cmd.ProcessState)
	m.mu.Lock()
	m.Ran, m.Exit = true, code
	m.mu.Unlock()
	return code, nil
}

// start starts `sh -c CMD` in the work directory, in a process group of its own, with the
// step's cookie in its environment. Output goes through pipes of our own rather than
// exec.Cmd's, so that a process escaping the kill cannot hang Run by holding them open.
func (m *machine) start(ctx context.Context, stdout, stderr io.Writer) (*exec.Cmd, []*stream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.Destroyed:
		return nil, nil, fmt.Errorf("host: run: %w: machine destroyed", errs.ErrInfra)
	case m.done != nil || m.Committed:
		return nil, nil, fmt.Errorf("host: run: %w: Run called twice", errs.ErrInfra)
	case ctx.Err() != nil:
		return nil, nil, vm.RunAborted(ctx, "host")
	}
	cmd := exec.Command("/bin/sh", "-c", m.spec.Cmd)
	cmd.Dir = m.work
	// Later entries win (exec.Cmd keeps the last of duplicates), so the cookie cannot be
	// overridden by the step's environment.
	cmd.Env = append(slices.Clip(m.spec.Env), proc.CookieVar+"="+m.cookie)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.withCacheDirs(cmd); err != nil {
		return nil, nil, err
	}
	var streams []*stream
	// One lock for both streams: callers may pass the same writer as stdout and stderr.
	writeMu := &sync.Mutex{}
	closeAll := func() {
		for _, s := range streams {
			s.r.Close()
			s.w.Close()
		}
		m.releaseLocked()
	}
	for _, w := range []io.Writer{stdout, stderr} {
		r, pw, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("host: run: %w: %w", errs.ErrInfra, err)
		}
		if w == nil {
			w = io.Discard
		}
		streams = append(streams, &stream{r: r, w: pw, out: w, mu: writeMu, done: make(chan struct{})})
	}
	cmd.Stdout, cmd.Stderr = streams[0].w, streams[1].w
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("host: run: %w: start sh: %v", errs.ErrInfra, err)
	}
	for _, s := range streams {
		s.w.Close() // the step holds the only write ends now: EOF once it is all gone
		go s.copy()
	}
	m.pgid = cmd.Process.Pid
	m.done = make(chan struct{})
	return cmd, streams, nil
}

// kill SIGKILLs the step's process group and every process carrying its cookie (daemons
// that left the group with setsid included); true when it saw none left.
func (m *machine) kill() bool {
	m.mu.Lock()
	if m.pgid > 0 {
		_ = proc.KillGroup(m.pgid)
	}
	m.mu.Unlock()
	_, all := proc.KillCookie(m.cookie)
	return all
}

// waitExited blocks until pid has exited, without reaping it.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

func isExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}

// exitCode is the shell convention: the exit status, or 128+N for death by signal N.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// Commit implements vm.Machine: the work directory is renamed into the snapshot store,
// which is atomic, so a snapshot is never seen half-written.
func (m *machine) Commit(ctx context.Context, ephemeral bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.CommitAllowed(); err != nil {
		return "", fmt.Errorf("host: commit: %w", err)
	}
	// The owner in an ephemeral id lets reconcile drop it once the run is dead.
	// The cookie names the owner, so PruneSnapshots can tell a snapshot a live hm is about to
	// register from an orphan.
	id := keptPrefix + m.cookie
	if ephemeral {
		id = ephemeralPrefix + m.cookie
	}
	if err := os.Rename(m.work, filepath.Join(m.b.dir, "snap", id)); err != nil {
		return "", fmt.Errorf("host: commit: %w: %w", errs.ErrInfra, err)
	}
	m.Committed = true
	return id, nil
}

// Destroy implements vm.Machine. Idempotent; it may run concurrently with Run, which it
// aborts, and waits for before deleting the work directory under it.
func (m *machine) Destroy(ctx context.Context) error {
	m.mu.Lock()
	m.Destroyed = true
	done := m.done
	// Before Run nothing was started, and Run will not start now; after a Run that saw
	// its processes gone, none can be left: a process carrying the cookie is only ever
	// started by another one. Only a running step, or one that outlived Run's kill, is
	// killed here.
	settled := done == nil || m.stopped
	m.mu.Unlock()
	if !settled {
		m.kill()
	}
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("host: destroy: waiting for Run: %w", ctx.Err())
		}
	}
	m.mu.Lock()
	committed := m.Committed
	m.mu.Unlock()
	if committed {
		return nil
	}
	if err := m.b.discard(m.work); err != nil {
		return fmt.Errorf("host: destroy: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// drainIdle is how long Run keeps reading output after the step is gone and killed. Only a
// process that escaped the kill (scrubbed environment and its own session) can still hold
// the pipes then; waiting for it to close them could take forever.
const drainIdle = 2 * time.Second

// stream copies one of the step's output pipes to its writer.
type stream struct {
	r, w   *os.File
	out    io.Writer
	mu     *sync.Mutex // serialises writes to out with the other stream's
	exited atomic.Bool
	done   chan struct{}
	err    error
}

func (s *stream) copy() {
	defer close(s.done)
	buf := make([]byte, 64<<10)
	for {
		// The deadline only bounds waiting for data that does not come: a slow writer
		// delays the next Read, and the deadline is renewed right before it.
		if s.exited.Load() {
			_ = s.r.SetReadDeadline(time.Now().Add(drainIdle))
		}
		n, err := s.r.Read(buf)
		if n > 0 && s.err == nil {
			s.mu.Lock()
			_, s.err = s.out.Write(buf[:n]) // on error: keep draining, the step must not block
			s.mu.Unlock()
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if s.exited.Load() {
				return
			}
		case err != nil:
			return
		}
	}
}

// finish waits for the copy to reach EOF, or the idle bound once exited is set.
func (s *stream) finish() error {
	<-s.done
	s.r.Close()
	return s.err
}
