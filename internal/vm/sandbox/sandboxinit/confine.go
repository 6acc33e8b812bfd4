package sandboxinit

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// confine applies the step's confinement to the init's thread, which then forks the step's
// shell: the seccomp filter first (loading it needs CAP_SYS_ADMIN, or no_new_privs, which
// Docker does not set either), then the capability sets cut to cfg.CapMask. The shell, run
// as root, gets exactly those capabilities after execve (its permitted set is the bounding
// set, cut), and so does anything it runs, setuid binaries included. The other threads of the init keep theirs: they never run step code,
// and the init is not dumpable, so the step cannot reach them.
func confine(cfg *Config) (string, error) {
	if len(cfg.Seccomp) > 0 {
		if err := loadSeccomp(cfg.Seccomp); err != nil {
			return "seccomp", err
		}
	}
	if err := dropCaps(cfg.CapMask); err != nil {
		return "capabilities", err
	}
	return "", nil
}

// loadSeccomp installs filter, a struct sock_filter array, on the calling thread.
func loadSeccomp(filter []byte) error {
	const size = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(filter)%size != 0 || len(filter)/size > 0xffff {
		return errors.New("malformed seccomp filter")
	}
	insts := unsafe.Slice((*unix.SockFilter)(unsafe.Pointer(unsafe.SliceData(filter))), len(filter)/size)
	prog := unix.SockFprog{Len: uint16(len(insts)), Filter: &insts[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return errno
	}
	return nil
}

// dropCaps cuts the bounding, permitted and effective sets of the calling thread to mask
// and empties the inheritable and ambient sets, as Docker does (an inheritable set would
// let file capabilities of a step's binaries grant more than the bounding set intends).
func dropCaps(mask uint64) error {
	for c := 0; ; c++ {
		// PR_CAPBSET_READ fails with EINVAL past the kernel's last capability.
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err != nil {
			break
		}
		if mask&(1<<c) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return err
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	lo, hi := uint32(mask), uint32(mask>>32)
	data := [2]unix.CapUserData{
		{Effective: lo, Permitted: lo},
		{Effective: hi, Permitted: hi},
	}
	return unix.Capset(&hdr, &data[0])
}
