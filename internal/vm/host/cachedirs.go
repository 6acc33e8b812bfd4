package host

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/cachedir"
	"github.com/hmci/hm/internal/errs"
)

// A step's cache directories (vm.Spec.CacheDirs) are directories of the state dir's
// cachedir store bind-mounted at their paths in a mount namespace of the step's own: the
// step's shell is started through hm itself (mountArg0), unshared from hm's mount namespace
// with every mount private (exec.Cmd's Unshareflags does that), which binds them, nosuid and
// nodev, and executes `sh -c CMD`. Nothing changes in the host's mount table; the host
// only keeps the (empty) mount points, made where missing. A bind rather than a symlink: a
// symlink would replace the host's own directory at that path for everyone, and outlive a
// killed hm. Mounting needs root (CAP_SYS_ADMIN); the host backend otherwise refuses
// cache_dirs rather than ignore them.

// mountArg0 makes the re-executed hm binary the mounting helper: argv is mountArg0, then
// pairs of host directory and path, then the step's command.
const mountArg0 = "hm-host-cachedirs"

func init() { maybeMountHelper() }

// maybeMountHelper runs the helper when this process was started as one, and never returns
// then.
func maybeMountHelper() {
	if len(os.Args) < 2 || os.Args[0] != mountArg0 || len(os.Args)%2 != 0 {
		return
	}
	args := os.Args[1:]
	for i := 0; i+1 < len(args)-1; i += 2 {
		if err := bindDir(args[i], args[i+1]); err != nil {
			fmt.Fprintf(os.Stderr, "hm: cache dir %s: %v\n", args[i+1], err)
			os.Exit(125)
		}
	}
	err := syscall.Exec("/bin/sh", []string{"sh", "-c", args[len(args)-1]}, os.Environ())
	fmt.Fprintf(os.Stderr, "hm: start sh: %v\n", err)
	os.Exit(127)
}

func bindDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, "")
}

// withCacheDirs makes cmd start through the mounting helper when the step has cache
// directories, which it takes from the store (released by releaseCacheDirs). Called with
// m.mu held, before cmd starts.
func (m *machine) withCacheDirs(cmd *exec.Cmd) error {
	if len(m.spec.CacheDirs) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return &errs.UnavailableError{Backend: "host", Missing: "root", Msg: "cache_dirs on the host backend need root: each step's directories are bind-mounted in a mount namespace of its own"}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("host: run: %w: %w", errs.ErrInfra, err)
	}
	args := []string{mountArg0}
	store := cachedir.Open(filepath.Dir(m.b.dir), "host")
	for _, d := range m.spec.CacheDirs {
		src, release, err := store.Use(d)
		if err != nil {
			m.releaseLocked()
			return fmt.Errorf("host: run: %w", err)
		}
		m.releases = append(m.releases, release)
		args = append(args, src, d.Path)
	}
	cmd.Path, cmd.Args = self, append(args, m.spec.Cmd)
	cmd.SysProcAttr.Unshareflags |= syscall.CLONE_NEWNS
	return nil
}

func (m *machine) releaseCacheDirs() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked()
}

func (m *machine) releaseLocked() {
	for _, r := range m.releases {
		r()
	}
	m.releases = nil
}
