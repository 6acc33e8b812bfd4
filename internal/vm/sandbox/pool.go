package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// initProc is a started sandbox init: in its fresh namespaces, waiting for its config.
// Starting one means re-executing hm, whose runtime and package initialisation dominate a
// trivial step's cost, so the backend keeps one spare started ahead of need (see take).
type initProc struct {
	proc   *os.Process
	cookie string
	cfgW   *os.File // the config pipe; open until the init is gone, as its lifeline
	statR  *os.File // the init's setup report
	outR   *os.File // the step's stdout and stderr
	errR   *os.File
	exited chan struct{} // closed once the init is reaped; state is set then
	state  *os.ProcessState
	// cgroups are the step's cgroups, named by cookie, which the init joined before it
	// could read its config, hence before the step starts; made with the init, so that a
	// spare's are ready too.
	cgroups []string
	// slirp is the init's network helper (the private network), nil if none; it exits
	// with the init (its exit-fd is the init's lifeline pipe).
	slirp     *exec.Cmd
	slirpDone chan struct{} // closed once slirp is reaped; nil without slirp
	// devices: a devices cgroup restricts the init (see devicesRestricted).
	devices bool
}

// startInit starts an init carrying cookie: in its namespaces, in its cgroups, with its
// network configured, waiting for its config.
func (b *Backend) startInit(cookie string) (*initProc, error) {
	var files []*os.File // the child's ends, closed once it has them
	closeAll := func(fs ...*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	ip := &initProc{cookie: cookie, exited: make(chan struct{})}
	fail := func(err error) (*initProc, error) {
		closeAll(files...)
		ip.close()
		return nil, fmt.Errorf("sandbox: start init: %w: %w", errs.ErrInfra, err)
	}
	for _, p := range []struct{ ours **os.File }{{&ip.cfgW}, {&ip.statR}, {&ip.outR}, {&ip.errR}} {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		if p.ours == &ip.cfgW {
			*p.ours, files = w, append(files, r)
		} else {
			*p.ours, files = r, append(files, w)
		}
	}
	marker, err := newMarker(b.tag, cookie)
	if err != nil {
		return fail(err)
	}
	files = append(files, marker)
	extra := []*os.File{files[0], files[1], marker} // ConfigFD, StatusFD, MarkerFD
	net := b.network()
	var lifeR *os.File // the read end of the init's lifeline, for slirp4netns
	if net == NetworkPrivate {
		if b.slirp == "" {
			closeAll(files...)
			ip.close()
			return nil, errNoSlirp
		}
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		lifeR, files, extra = r, append(files, w), append(extra, w) // LifelineFD
		defer lifeR.Close()
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{sandboxinit.Arg0},
		Env:        initEnv(cookie),
		Stdout:     files[2],
		Stderr:     files[3],
		ExtraFiles: extra,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
		},
	}
	if net != NetworkHost {
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWNET
	}
	// PR_SET_PDEATHSIG fires when the thread that forked the init exits, not the process:
	// start and wait from a goroutine locked to its thread, so that thread outlives the init.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait() // a non-zero exit is read from the state
		ip.state = cmd.ProcessState
		close(ip.exited)
	}()
	err = <-started
	closeAll(files...)
	if err != nil {
		ip.close()
		return nil, startError(err)
	}
	ip.proc = cmd.Process
	ip.cgroups = b.cg.create(cookie, b.opts)
	joinCgroups(ip.cgroups, ip.proc.Pid)
	ip.devices = devicesRestricted(ip.cgroups, ip.proc.Pid)
	if lifeR != nil {
		if err := ip.startSlirp(b.slirp, lifeR); err != nil {
			ip.kill()
			return nil, err
		}
	}
	return ip, nil
}

// errNoSlirp is the sandbox without the program its default network needs.
var errNoSlirp = &errs.UnavailableError{Backend: "sandbox", Missing: "slirp4netns",
	Msg: "the sandbox's private network needs slirp4netns, which is not installed"}

// network is the steps' network mode.
func (b *Backend) network() NetworkMode {
	switch {
	case b.opts.NetworkNone:
		return NetworkNone
	case b.opts.Network == "":
		return NetworkPrivate
	}
	return b.opts.Network
}

// startSlirp gives the init's network namespace outbound access through slirp4netns, a
// user-space TCP/IP stack (what rootless Docker and Podman use): nothing changes on the
// host, no interface, route or firewall rule, and nothing is left if hm dies, since it
// exits when the init's lifeline (lifeR's write end, held by the init alone) closes. Its
// own sandbox and seccomp filter confine it; it refuses connections to the host's
// loopback. It returns once the namespace is configured (tap0 10.0.2.100/24, default route
// and DNS forwarder at 10.0.2.2/10.0.2.3).
func (ip *initProc) startSlirp(path string, lifeR *os.File) error {
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: network: %w: %w", errs.ErrInfra, err)
	}
	defer readyR.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(path, "--configure", "--mtu=65520", "--disable-host-loopback",
		"--enable-sandbox", "--enable-seccomp", "--exit-fd=3", "--ready-fd=4",
		strconv.Itoa(ip.proc.Pid), "tap0")
	cmd.ExtraFiles = []*os.File{lifeR, readyW}
	cmd.Stderr = &stderr
	// A mount namespace of its own, made recursively private before the exec: its sandbox
	// makes only "/" private and then detaches the old root, which unmounted every shared
	// mount below on the host too (dockerd's overlays: e2e TestSandboxLeavesDockerMounts).
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWNS}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("sandbox: network: %w: starting slirp4netns: %w", errs.ErrInfra, err)
	}
	ip.slirp = cmd
	var b [1]byte
	if n, _ := readyR.Read(b[:]); n != 1 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("sandbox: network: %w: slirp4netns failed: %s", errs.ErrInfra, strings.TrimSpace(stderr.String()))
	}
	ip.slirpDone = make(chan struct{})
	go func() { _ = cmd.Wait(); close(ip.slirpDone) }() // it exits with the init
	return nil
}

// newMarker makes the init's marker (sandboxinit.MarkerFD): an empty memfd whose name
// carries the state dir's tag and the cookie.
func newMarker(tag, cookie string) (*os.File, error) {
	fd, err := unix.MemfdCreate(markerPrefix+tag+" "+cookie, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "marker"), nil
}

// close closes the parent's pipe ends.
func (ip *initProc) close() {
	for _, f := range []*os.File{ip.cfgW, ip.statR, ip.outR, ip.errR} {
		if f != nil {
			f.Close()
		}
	}
}

// dead reports whether the init has exited (killed while waiting as a spare, say).
func (ip *initProc) dead() bool {
	select {
	case <-ip.exited:
		return true
	default:
		return false
	}
}

// kill SIGKILLs an init no machine has taken, waits until it is reaped and removes its
// cgroups.
func (ip *initProc) kill() {
	_ = ip.proc.Kill() // through a pidfd: never another process that got the number
	<-ip.exited
	ip.waitHelpers()
	ip.close()
	removeCgroups(ip.cgroups)
}

// waitHelpers waits, once the init has exited, for its network helper to be gone too.
func (ip *initProc) waitHelpers() {
	if ip.slirpDone != nil {
		<-ip.slirpDone
	}
}

// drainIdle bounds how long the step's output is read after its init has exited. Every
// process holding the pipes dies with the PID namespace, so this only matters if a step
// handed its output descriptors to a process outside the sandbox.
const drainIdle = 30 * time.Second

// copyOutput copies the step's stdout and stderr to the writers (nil: discarded) until the
// pipes close; wait waits for that after the init has exited.
func (ip *initProc) copyOutput(stdout, stderr io.Writer) (wait func() error) {
	if stdout != nil && sameWriter(stdout, stderr) {
		// One writer for both streams gets one Write at a time, as with exec.Cmd.
		lw := &lockedWriter{w: stdout}
		stdout, stderr = lw, lw
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for _, s := range []struct {
		r *os.File
		w io.Writer
	}{{ip.outR, stdout}, {ip.errR, stderr}} {
		w := s.w
		if w == nil {
			w = io.Discard
		}
		wg.Go(func() {
			_, err := io.Copy(w, s.r)
			if errors.Is(err, os.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				err = nil // cut off by wait, below
			}
			errc <- err
		})
	}
	return func() error {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(drainIdle):
			_ = ip.outR.SetReadDeadline(time.Now())
			_ = ip.errR.SetReadDeadline(time.Now())
			<-done
		}
		return errors.Join(<-errc, <-errc)
	}
}

// sameWriter reports whether a and b are the same writer; writers of types that cannot be
// compared are taken to differ.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// pool holds the spare init.
type pool struct {
	mu       sync.Mutex
	spare    *initProc
	starting chan struct{} // closed when the refill in flight is done; nil if none
	closed   bool
	wg       sync.WaitGroup // the refill in flight
}

// takeInit returns an init for a machine whose processes carry cookie: the spare when the
// machine belongs to this process (the spare's cookie names this process, which reconcile
// needs to be the owner), else a fresh one. The caller refills the pool once the step is
// over: a spare starting during the step would compete with it for the CPU, one starting
// after it overlaps the engine's work between steps.
func (b *Backend) takeInit(cookie string, mine bool) (*initProc, error) {
	var ip *initProc
	if mine {
		b.pool.mu.Lock()
		// A spare on its way is at least as close to ready as a new start would be.
		if starting := b.pool.starting; b.pool.spare == nil && starting != nil {
			b.pool.mu.Unlock()
			<-starting
			b.pool.mu.Lock()
		}
		ip, b.pool.spare = b.pool.spare, nil
		b.pool.mu.Unlock()
		if ip != nil && ip.dead() {
			ip.kill() // reaped already: this only releases it
			ip = nil
		}
	}
	if ip != nil {
		return ip, nil
	}
	return b.startInit(cookie)
}

// refill starts a spare init in the background unless there is one or one is starting.
func (b *Backend) refill() {
	b.pool.mu.Lock()
	if b.pool.closed || b.pool.spare != nil || b.pool.starting != nil || b.opts.NoPrestart {
		b.pool.mu.Unlock()
		return
	}
	starting := make(chan struct{})
	b.pool.starting = starting
	b.pool.wg.Add(1) // under the lock: Close cannot be waiting yet
	b.pool.mu.Unlock()
	go func() {
		defer b.pool.wg.Done()
		ip, err := b.startInit(proc.NewCookie(proc.Self()))
		b.pool.mu.Lock()
		b.pool.starting = nil
		close(starting)
		closed := b.pool.closed
		if err == nil && !closed {
			b.pool.spare = ip
		}
		b.pool.mu.Unlock()
		if err == nil && closed {
			ip.kill()
		}
		// On error the next take starts an init itself and reports why it cannot.
	}()
}

// waitRefill waits for the spare init being started, if any.
func (b *Backend) waitRefill() { b.pool.wg.Wait() }

// sparePID is the spare init's PID, 0 if none.
func (b *Backend) sparePID() int {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	if b.pool.spare == nil {
		return 0
	}
	return b.pool.spare.proc.Pid
}

// spareCookie is the spare init's cookie, which also names its cgroups; "" if none.
func (b *Backend) spareCookie() string {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	if b.pool.spare == nil {
		return ""
	}
	return b.pool.spare.cookie
}

// Close kills the spare init and waits for the deletions of destroyed machines' files.
// Machines keep working; no new spare is started. Exiting hm without Close is fine too:
// the spare dies with it, and reconcile deletes what is left in the trash.
func (b *Backend) Close() error {
	defer b.waitBackground()
	b.pool.mu.Lock()
	b.pool.closed = true
	ip := b.pool.spare
	b.pool.spare = nil
	b.pool.mu.Unlock()
	if ip != nil {
		ip.kill()
	}
	b.pool.wg.Wait()
	return nil
}

// initEnv is the init's environment: nothing of hm's (the init's environment is the one
// thing of it a step could hope to read), unless tracing is on.
func initEnv(cookie string) []string {
	env := []string{"GOMAXPROCS=1", "GOGC=off"}
	if t := os.Getenv(sandboxinit.TraceEnv); t != "" {
		env = append(env, sandboxinit.TraceEnv+"="+t, proc.CookieVar+"="+cookie)
	}
	return env
}
