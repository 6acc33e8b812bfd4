package sandboxinit

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

// rootfs is the step's merged root, before pivot_root. Paths inside it are resolved with
// openat2(RESOLVE_IN_ROOT), so that an image's symlinks (/etc/resolv.conf -> /run/...,
// or a hostile /tmp -> /etc) resolve inside the root and never reach the host's files;
// mounts then target the resolved /proc/self/fd/N.
type rootfs struct {
	fd int
}

func openRoot(dir string) (*rootfs, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &rootfs{fd: fd}, nil
}

// fdPath names an open descriptor for mount(2).
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// open resolves p inside the root.
func (r *rootfs) open(p string, flags uint64) (int, error) {
	return unix.Openat2(r.fd, p, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | flags,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// dir resolves directory p inside the root, creating it and its parents when missing.
func (r *rootfs) dir(p string) (int, error) {
	fd, err := r.open(p, unix.O_DIRECTORY)
	if !errors.Is(err, unix.ENOENT) || p == "/" || p == "." {
		return fd, err
	}
	parent, err := r.dir(path.Dir(p))
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(parent, path.Base(p), 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	return r.open(p, unix.O_DIRECTORY)
}

// file resolves file p inside the root, creating an empty one when missing. A dangling
// symlink (the host image's /etc/resolv.conf -> /run/systemd/..., say) is replaced by a
// file: the bind mount needs something to land on.
func (r *rootfs) file(p string) (int, error) {
	fd, err := r.open(p, 0)
	if !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, err := r.dir(path.Dir(p))
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	create := func() error {
		f, err := unix.Openat(parent, path.Base(p), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(f)
		}
		return err
	}
	if err := create(); errors.Is(err, unix.EEXIST) {
		if err := unix.Unlinkat(parent, path.Base(p), 0); err != nil {
			return -1, err
		}
		if err := create(); err != nil {
			return -1, err
		}
	} else if err != nil {
		return -1, err
	}
	return r.open(p, 0)
}

// mountAt mounts onto what fd names and closes fd.
func mountAt(fd int, source, fstype string, flags uintptr, data string) error {
	defer unix.Close(fd)
	return unix.Mount(source, fdPath(fd), fstype, flags, data)
}

const (
	nosuid = unix.MS_NOSUID
	nodev  = unix.MS_NODEV
	noexec = unix.MS_NOEXEC
)

// mountAll mounts /proc, /dev, /tmp, /sys (read-only, when the image has it), the host's
// resolver files and the hidden directories inside the root. It returns the failing stage.
func (r *rootfs) mountAll(cfg *Config) (string, error) {
	fd, err := r.dir("/proc")
	if err == nil {
		err = mountAt(fd, "proc", "proc", nosuid|nodev|noexec, "")
	}
	if err != nil {
		return "mount /proc", err
	}
	if err := r.mountDev(); err != nil {
		return "mount /dev", err
	}
	fd, err = r.dir("/tmp")
	if err == nil {
		err = mountAt(fd, "tmpfs", "tmpfs", nosuid|nodev, "mode=1777")
	}
	if err != nil {
		return "mount /tmp", err
	}
	if fd, err := r.open("/sys", unix.O_DIRECTORY); err == nil {
		// Best effort: some hosts refuse sysfs in a new namespace, and few steps need it.
		_ = mountAt(fd, "sysfs", "sysfs", unix.MS_RDONLY|nosuid|nodev|noexec, "")
	}
	for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
		if _, err := os.Stat(f); err != nil {
			continue
		}
		if err := r.bindReadOnly(f, f); err != nil {
			return "mount " + f, err
		}
	}
	for _, h := range cfg.Hide {
		fd, err := r.open(h, unix.O_DIRECTORY)
		if err != nil {
			continue // not visible in this root
		}
		if err := mountAt(fd, "tmpfs", "tmpfs", unix.MS_RDONLY|nosuid|nodev|noexec, "size=4k,mode=755"); err != nil {
			return "hide " + h, err
		}
	}
	if fd, err := r.dir("/workspace"); err != nil {
		return "mkdir /workspace", err
	} else {
		unix.Close(fd)
	}
	return "", nil
}

// bindReadOnly bind-mounts the host file src onto dst inside the root, read-only.
func (r *rootfs) bindReadOnly(src, dst string) error {
	fd, err := r.file(dst)
	if err != nil {
		return err
	}
	if err := mountAt(fd, src, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	// Remounting needs the new mount itself: resolve the path again, which now crosses it.
	fd, err = r.open(dst, 0)
	if err != nil {
		return err
	}
	return mountAt(fd, "", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|nosuid|nodev|noexec, "")
}

// devices are made in the sandbox's /dev like the host's: same type and number, mode 0666.
// Device nodes rather than bind mounts: a mount costs more to make and to tear down.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// mountDev puts a fresh tmpfs on /dev with the usual devices, /dev/pts, /dev/shm and the
// standard symlinks.
func (r *rootfs) mountDev() error {
	fd, err := r.dir("/dev")
	if err != nil {
		return err
	}
	if err := mountAt(fd, "tmpfs", "tmpfs", nosuid|noexec, "mode=755,size=65536k"); err != nil {
		return err
	}
	dev, err := r.open("/dev", unix.O_DIRECTORY) // the tmpfs now
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	in := func(name string) string { return fdPath(dev) + "/" + name }
	for _, d := range devices {
		var st unix.Stat_t
		if err := unix.Stat("/dev/"+d, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
			continue
		}
		if err := unix.Mknodat(dev, d, unix.S_IFCHR|0o666, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d, err)
		}
		// mknod applies the umask, which the step's shell inherits and so stays as it is.
		if err := unix.Fchmodat(dev, d, 0o666, 0); err != nil {
			return fmt.Errorf("chmod /dev/%s: %w", d, err)
		}
	}
	if err := unix.Mkdirat(dev, "pts", 0o755); err != nil {
		return err
	}
	// Optional: a private devpts instance for steps that allocate terminals.
	if unix.Mount("devpts", in("pts"), "devpts", nosuid|noexec, "newinstance,ptmxmode=0666,mode=0620") == nil {
		if err := unix.Symlinkat("pts/ptmx", dev, "ptmx"); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(dev, "shm", 0o1777); err != nil {
		return err
	}
	if err := unix.Mount("shm", in("shm"), "tmpfs", nosuid|nodev, "mode=1777"); err != nil {
		return err
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := unix.Symlinkat(target, dev, name); err != nil {
			return err
		}
	}
	return nil
}
