// Package sandboxinit is the sandbox backend's init: the code the hm binary runs when it
// re-executes itself as PID 1 of a step's namespaces. It lives in a package of its own with
// few dependencies so that its init function can take over early in the re-executed
// binary's package initialisation, before the initialisers of hm's heavier dependencies
// (registry clients, terminal UI, database) that the init would never use; re-executing
// hm is most of a trivial step's cost. See package sandbox.
package sandboxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Config is what the backend sends the init over its config pipe (ConfigFD).
type Config struct {
	Dir      string   // the machine directory: upper, work, merged, l/N
	Lowers   int      // number of l/N links, top first
	Cmd      string   // run as `sh -c Cmd`
	Env      []string // the step's complete environment
	Hostname string
	// Loopback brings lo up: the init has a network namespace of its own (Network
	// "none"; with the private network the backend's slirp4netns configures it).
	Loopback bool

	// ResolvConf is the host file bound read-only at /etc/resolv.conf; "" is the host's own.
	ResolvConf string
	// Binds are host directories bound read-write into the root, nosuid and nodev, after
	// everything else is mounted: the step's cache_dirs (vm.CacheDir).
	Binds []Bind

	// Confinement, applied after the root is set up and before the step's shell starts
	// (see confine.go).
	Seccomp  []byte   // the seccomp filter: struct sock_filter array, native layout
	CapMask  uint64   // the capabilities the step keeps
	Masked   []string // paths the step sees empty
	Readonly []string // paths the step sees read-only
	// NoDev: no device cgroup restricts the step, so every mount it can write to is
	// nodev and /dev is read-only, which makes a node it creates useless all the same.
	NoDev   bool
	Cgroup2 bool // mount the step's cgroup2 hierarchy, read-only, at /sys/fs/cgroup
	// Cgroup1 are the cgroup v1 hierarchies (their mount options: "pids", "cpu,cpuacct")
	// in which the step has a cgroup of its own, mounted read-only under a read-only
	// tmpfs at /sys/fs/cgroup.
	Cgroup1 []string
}

// Bind is a host directory Src seen at Dst, an absolute path inside the root.
type Bind struct {
	Src, Dst string
}

// Failure is what the init reports on its status pipe (StatusFD) when setup fails.
type Failure struct {
	Stage string `json:"stage"`
	Msg   string `json:"msg"`
	Errno int    `json:"errno,omitempty"`
}

// Report is the one JSON line the init writes on its status pipe: a setup failure (then
// it exits with ExitSetup), or, with Done, the end of the step: the shell exited with
// Exit and every process of the sandbox has been killed and reaped, so that the backend
// need not wait for the init's own exit and the kernel's teardown of its namespaces.
type Report struct {
	Failure
	Done bool `json:"done,omitempty"`
	Exit int  `json:"exit,omitempty"`
}

// Descriptors the init inherits from the backend.
const (
	ConfigFD = 3
	StatusFD = 4
	// MarkerFD is a memfd whose name says which state dir and machine cookie the init
	// belongs to (see package sandbox's reconcile): readable only through /proc/PID/fd,
	// which a step cannot read of the init, unlike its environment and command line.
	MarkerFD = 5
	// LifelineFD, when the backend passes one, is the write end of a pipe whose read end
	// a helper of the step (slirp4netns) watches: it ends with the init.
	LifelineFD = 6
)

// Arg0 is the command line (its only word) that makes the re-executed hm binary a
// sandbox init. Not an environment variable: nothing of hm's may be named in what a step
// can read of its init.
const Arg0 = "hm-sandbox-init"

// ExitSetup is the init's exit code when it could not set the sandbox up; its status pipe
// then says why.
const ExitSetup = 125

// init runs the sandbox init as soon as this package is initialised in a process started
// as one; see Maybe.
func init() { Maybe() }

// Maybe runs the sandbox init when this process was started as one, and never returns
// then; otherwise it returns at once. The package's init function calls it, so linking the
// package is enough; sandbox.MaybeInit calls it too, for clarity in main.
func Maybe() {
	if len(os.Args) != 1 || os.Args[0] != Arg0 {
		return
	}
	Trace("", "init: main")
	os.Exit(runInit())
}

// runInit is the sandbox's PID 1: it sets the root up in its fresh namespaces, starts the
// step's shell, and once the shell has exited kills and reaps every process of the
// namespace, reports the shell's status and exits with it. Should the init die early, its
// exit makes the kernel kill whatever else still runs in the namespace.
func runInit() int {
	// Credentials, the seccomp filter and the cgroup namespace are per thread: everything
	// the init does happens on this one, which also forks the step's shell. (Package
	// initialisation runs locked to the main thread already; this says so.)
	runtime.LockOSThread()
	// Die with the hm process. The config pipe checks below close the window between the
	// fork and this call.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	// Not dumpable: the step, which runs with fewer capabilities than the init and as
	// the same user, cannot ptrace it or read its /proc entries (environ, fd, mem).
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	for _, fd := range []int{ConfigFD, StatusFD, MarkerFD, LifelineFD} {
		unix.CloseOnExec(fd) // EBADF for descriptors not passed: harmless
	}
	status := os.NewFile(StatusFD, "status")
	fail := func(stage string, err error) int {
		f := Failure{Stage: stage, Msg: stage + ": " + err.Error()}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			f.Errno = int(errno)
		}
		_ = json.NewEncoder(status).Encode(Report{Failure: f})
		return ExitSetup
	}
	// Everything that does not depend on the step is done before waiting for it: a spare
	// init is ready ahead of need.
	//
	// As PID 1 a signal without a handler is ignored anyway; with handlers the Go runtime
	// would die of them. Either way the step's `kill 1` must not end the sandbox early.
	signal.Notify(make(chan os.Signal, 1), unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
		unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	// Nothing mounted here may propagate back to hm's namespace.
	privErr := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	// Decoding and encoding once builds encoding/json's caches for these types now rather
	// than while the step waits.
	_ = json.Unmarshal([]byte(`{"Dir":"","Env":[]}`), new(Config))
	_, _ = json.Marshal(Report{})
	Trace("", "init: waiting for config")
	var cfg Config
	if err := json.NewDecoder(os.NewFile(ConfigFD, "config")).Decode(&cfg); err != nil {
		return fail("config", err)
	}
	if privErr != nil {
		return fail("mount namespace", privErr)
	}
	Trace("", "init: config read")
	// The backend keeps the config pipe's write end open until the init is gone: a hang-up means
	// hm died before PR_SET_PDEATHSIG was armed.
	fds := []unix.PollFd{{Fd: ConfigFD, Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 0); n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
		return ExitSetup
	}
	if stage, err := setupRoot(&cfg); err != nil {
		return fail(stage, err)
	}
	Trace("", "init: root set up")
	if stage, err := confine(&cfg); err != nil {
		return fail(stage, err)
	}
	Trace("", "init: confined")
	sh, err := os.StartProcess("/bin/sh", []string{"sh", "-c", cfg.Cmd}, &os.ProcAttr{
		Dir:   "/workspace",
		Env:   cfg.Env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return fail("exec", fmt.Errorf("the image has no usable /bin/sh: %w", err))
	}
	Trace("", "init: shell started")
	code := waitShell(sh.Pid)
	Trace("", "init: shell reaped")
	// The step is over: kill what it left running and reap everything, then report. Again
	// after each reaped process, for any child forked while the first kill went round.
	for {
		_ = unix.Kill(-1, unix.SIGKILL) // from PID 1: every process of the namespace but itself
		_, err := unix.Wait4(-1, nil, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			break // ECHILD: nothing is left in the namespace
		}
	}
	os.Stdout.Close() // the backend's copy of the output ends here
	os.Stderr.Close()
	_ = json.NewEncoder(status).Encode(Report{Done: true, Exit: code})
	Trace("", "init: reported")
	return code
}

// waitShell reaps processes until the shell is reaped and returns its status.
func waitShell(pid int) int {
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 255 // ECHILD: cannot happen before the shell is reaped
		}
		if wpid == pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// overlayOptions are added to every overlay mount: no index, redirects or metacopy, so that
// an upper directory is a plain, self-contained layer that can be stacked under later steps
// and flattened by copying (see flatten); volatile, so that unmounting does not sync the
// upper filesystem (hm never fsyncs a step's writes: a machine lost to a crash is deleted
// by reconcile, and the upper directory is never mounted as an upper again).
// Kernels without these options get a plain mount.
const overlayOptions = ",index=off,redirect_dir=off,metacopy=off,volatile"

// setupRoot mounts the step's root and pivots into it. It returns the failing stage.
func setupRoot(cfg *Config) (string, error) {
	// The backend moved the init into the step's cgroups before sending the config: a
	// cgroup namespace now makes them the step's root, so that /proc/self/cgroup and the
	// cgroupfs show neither the host's hierarchy nor the cookie naming the step's cgroups.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return "cgroup namespace", err
	}
	if err := unix.Chdir(cfg.Dir); err != nil {
		return "machine dir", err
	}
	// Relative lower paths through the l/N links keep the option string short (one page
	// at most) whatever the state dir's path and the chain's length.
	lower := make([]string, cfg.Lowers)
	for i := range lower {
		lower[i] = "l/" + strconv.Itoa(i)
		// Alone, the host's root can be the lower layer itself (saves a mount); under
		// snapshot layers it cannot, see mountHostRoot.
		if t, _ := os.Readlink(lower[i]); t == "/" && cfg.Lowers > 1 {
			if err := mountHostRoot(); err != nil {
				return "host root", err
			}
			lower[i] = hostRootDir
		}
	}
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=upper,workdir=work"
	var rootFlags uintptr
	if cfg.NoDev {
		rootFlags = unix.MS_NODEV
	}
	if err := unix.Mount("overlay", "merged", "overlay", rootFlags, opts+overlayOptions); err != nil {
		if err2 := unix.Mount("overlay", "merged", "overlay", rootFlags, opts); err2 != nil {
			return "overlay", fmt.Errorf("mount overlay: %w", err)
		}
	}
	Trace("", "init: overlay mounted")
	root, err := openRoot(cfg.Dir + "/merged")
	if err != nil {
		return "rootfs", err
	}
	if stage, err := root.mountAll(cfg); err != nil {
		return stage, err
	}
	Trace("", "init: mounted all")
	// pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only
	// the new root, with no directory for the old one written into the step's layer.
	if err := unix.Chdir(cfg.Dir + "/merged"); err != nil {
		return "pivot_root", err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return "pivot_root", err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return "pivot_root", err
	}
	if err := unix.Chdir("/"); err != nil {
		return "pivot_root", err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return "hostname", err
	}
	if cfg.Loopback {
		if err := loopbackUp(); err != nil {
			return "network", err
		}
	}
	return "", nil
}

// hostRootDir is where the host image's root is mounted in the machine directory.
const hostRootDir = "host"

// mountHostRoot mounts the host's root filesystem read-only at hostRootDir for use as a
// lower layer. Not "/" itself: overlayfs refuses lower layers inside other lower layers
// ("overlapping lowerdir path"), and every snapshot layer of the state dir is inside "/"
// when the state dir is on the root filesystem. A read-only overlay of "/" is a
// filesystem of its own, so the layers are no longer inside it. Its second, empty layer
// (overlayfs wants two lower layers without an upper one) is a tmpfs for the same reason.
func mountHostRoot() error {
	for _, d := range []string{hostRootDir, hostRootDir + "-empty"} {
		if err := unix.Mkdir(d, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	if err := unix.Mount("tmpfs", hostRootDir+"-empty", "tmpfs", unix.MS_RDONLY, "size=4k"); err != nil {
		return err
	}
	return unix.Mount("overlay", hostRootDir, "overlay", unix.MS_RDONLY, "lowerdir=/:"+hostRootDir+"-empty")
}

// loopbackUp brings lo up in a fresh network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
