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

// mountAll mounts /proc, /dev, /tmp, /sys (read-only) and the host's resolver files inside
// the root, and masks or makes read-only what cfg names. It returns the failing stage.
func (r *rootfs) mountAll(cfg *Config) (string, error) {
	fd, err := r.dir("/proc")
	if err == nil {
		err = mountAt(fd, "proc", "proc", nosuid|nodev|noexec, "")
	}
	if err != nil {
		return "mount /proc", err
	}
	if err := r.mountDev(cfg.NoDev); err != nil {
		return "mount /dev", err
	}
	fd, err = r.dir("/tmp")
	if err == nil {
		err = mountAt(fd, "tmpfs", "tmpfs", nosuid|nodev, "mode=1777")
	}
	if err != nil {
		return "mount /tmp", err
	}
	if fd, err := r.dir("/sys"); err == nil {
		// Best effort: some hosts refuse sysfs in a new namespace, and few steps need it.
		if mountAt(fd, "sysfs", "sysfs", unix.MS_RDONLY|nosuid|nodev|noexec, "") == nil {
			if err := r.mountCgroups(cfg); err != nil {
				return "mount /sys/fs/cgroup", err
			}
		}
	}
	if stage, err := r.confinePaths(cfg); err != nil {
		return stage, err
	}
	resolv := cfg.ResolvConf
	if resolv == "" {
		resolv = "/etc/resolv.conf"
	}
	for _, f := range [][2]string{{resolv, "/etc/resolv.conf"}, {"/etc/hosts", "/etc/hosts"}} {
		if _, err := os.Stat(f[0]); err != nil {
			continue
		}
		if err := r.bindReadOnly(f[0], f[1]); err != nil {
			return "mount " + f[1], err
		}
	}
	if fd, err := r.dir("/workspace"); err != nil {
		return "mkdir /workspace", err
	} else {
		unix.Close(fd)
	}
	for _, b := range cfg.Binds {
		if err := r.bindDir(b.Src, b.Dst); err != nil {
			return "mount cache dir " + b.Dst, err
		}
	}
	return "", nil
}

// bindDir bind-mounts the host directory src onto dst inside the root (made when missing,
// resolved inside the root: an image's symlink cannot point it at the host), read-write but
// nosuid and nodev: whatever the step leaves there, no device node or setuid binary of it
// works, in this step or a later one.
func (r *rootfs) bindDir(src, dst string) error {
	fd, err := r.dir(dst)
	if err != nil {
		return err
	}
	if err := mountAt(fd, src, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	fd, err = r.open(dst, unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	return mountAt(fd, "", "", unix.MS_BIND|unix.MS_REMOUNT|nosuid|nodev, "")
}

// mountCgroups mounts the step's own cgroups (the cgroup namespace's root) read-only at
// /sys/fs/cgroup: what a runtime reads to size itself to its limits, and what shows a
// step its pids, memory and CPU limits.
func (r *rootfs) mountCgroups(cfg *Config) error {
	const ro = unix.MS_RDONLY | nosuid | nodev | noexec
	if !cfg.Cgroup2 && len(cfg.Cgroup1) == 0 {
		return nil
	}
	fd, err := r.open("/sys/fs/cgroup", unix.O_DIRECTORY)
	if err != nil {
		return nil // a sysfs without it
	}
	if cfg.Cgroup2 {
		return mountAt(fd, "cgroup2", "cgroup2", ro, "")
	}
	if err := mountAt(fd, "tmpfs", "tmpfs", nosuid|nodev|noexec, "size=4k,mode=755"); err != nil {
		return err
	}
	dir, err := r.open("/sys/fs/cgroup", unix.O_DIRECTORY) // the tmpfs now
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	for _, h := range cfg.Cgroup1 {
		if err := unix.Mkdirat(dir, h, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("cgroup", fdPath(dir)+"/"+h, "cgroup", ro, h); err != nil {
			return fmt.Errorf("cgroup %s: %w", h, err)
		}
	}
	return unix.Mount("", fdPath(dir), "", unix.MS_REMOUNT|ro, "size=4k,mode=755")
}

// confinePaths masks cfg.Masked and makes cfg.Readonly read-only, as Docker does. The step
// has no CAP_SYS_ADMIN (and seccomp refuses mount and umount), so it cannot undo either.
func (r *rootfs) confinePaths(cfg *Config) (string, error) {
	null, err := r.open("/dev/null", 0)
	if err != nil {
		return "mask", err
	}
	defer unix.Close(null)
	for _, p := range cfg.Masked {
		if err := r.mask(p, null); err != nil {
			return "mask " + p, err
		}
	}
	for _, p := range cfg.Readonly {
		if err := r.readonly(p); err != nil {
			return "read-only " + p, err
		}
	}
	return "", nil
}

// mask covers p: an empty read-only tmpfs on a directory, the null device on anything else.
// A path the root lacks is skipped.
func (r *rootfs) mask(p string, null int) error {
	fd, err := r.open(p, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return mountAt(fd, "tmpfs", "tmpfs", unix.MS_RDONLY|nosuid|nodev|noexec, "size=4k,mode=555")
	}
	return mountAt(fd, fdPath(null), "", unix.MS_BIND, "")
}

// readonly bind-mounts p onto itself, read-only. A path the root lacks is skipped.
func (r *rootfs) readonly(p string) error {
	fd, err := r.open(p, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := mountAt(fd, fdPath(fd), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	// Remounting needs the new mount itself: resolve the path again, which now crosses it.
	fd, err = r.open(p, 0)
	if err != nil {
		return err
	}
	return mountAt(fd, "", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|nosuid|nodev|noexec, "")
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
// standard symlinks; readOnly then makes the tmpfs read-only, so that no node can be
// created there (with no device cgroup, the only place a node could work).
func (r *rootfs) mountDev(readOnly bool) error {
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
	if readOnly {
		return unix.Mount("", fdPath(dev), "", unix.MS_REMOUNT|unix.MS_RDONLY|nosuid|noexec, "mode=755,size=65536k")
	}
	return nil
}
