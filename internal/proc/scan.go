package proc

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// scan is one pass over /proc reading the cookie of every other process.
//
// A clean scan (no process carrying the cookie) proves none is left only if no process
// carrying it can have been missed. Two ways to miss one, both closed here:
//
//   - A process in the middle of an execve, between switching to its new memory and the
//     kernel recording where the new environment is, reads as an empty environment. Every
//     process read as empty that is not a zombie, a kernel thread or exiting (none of which
//     can start a process) is unsure, and an unsure scan proves nothing.
//   - A process forking after /proc was listed and exiting before it was read: the child is
//     in no listing. So /proc is listed again after the reads and any PID not yet read is
//     read, until a listing names none; new processes get PIDs above every existing one
//     (the kernel allocates them cyclically), so a child forked behind the reads is in the
//     next listing. PID reuse within one scan (a wrap of pid_max in a millisecond) and
//     clone3's set_tid (CAP_SYS_ADMIN) are outside what this defends against.
//
// A process that deliberately scrubs the cookie from its environment escapes either way;
// the process-group kill covers the common form of that.
type scan struct {
	cookie string                       // the cookie looked for; "" with each
	each   func(pid int, cookie string) // called for every process carrying a cookie
	found  []int                        // processes carrying cookie
	unsure []int                        // read as an empty environment, perhaps mid-execve
	stable bool                         // a listing after the reads named no PID left unread
	read   map[int]bool
	buf    []byte
	list   func() ([]int, error) // listPIDs; tests hide a process from a listing
}

// maxListings bounds the listings of one scan: on a machine starting processes all the time
// they may never agree, and the scan is then not settled.
const maxListings = 5

func newScan(cookie string) *scan {
	return &scan{cookie: cookie, read: map[int]bool{}, list: listPIDs}
}

// settled reports whether the scan saw every process there was: see scan.
func (s *scan) settled() bool { return s.stable && len(s.unsure) == 0 }

func (s *scan) run() *scan {
	me := os.Getpid()
	for i := range maxListings {
		pids, err := s.list()
		if err != nil {
			return s // without /proc nothing is found, and nothing is settled
		}
		fresh := false
		for _, pid := range pids {
			if pid == me || s.read[pid] {
				continue
			}
			fresh = true
			s.read[pid] = true
			s.check(pid)
		}
		if !fresh && i > 0 {
			s.stable = true
			return s
		}
	}
	return s
}

func (s *scan) check(pid int) {
	env, err := s.environ(pid)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		// Gone, or without memory: a kernel thread, a zombie, a process past exit_mm.
		// None can start a process; the children of a gone one are in the next listing.
		return
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return // another user's process, not ours to read (nor to kill)
	case err != nil:
		s.unsure = append(s.unsure, pid)
		return
	case len(env) == 0:
		if mayBeExecing(pid) {
			s.unsure = append(s.unsure, pid)
		}
		return
	}
	c := cookieIn(env)
	switch {
	case c == "":
	case s.each != nil:
		s.each(pid, c)
	case c == s.cookie:
		s.found = append(s.found, pid)
	}
}

// Flags of /proc/PID/stat field 9 (include/linux/sched.h).
const (
	pfExiting = 0x00000004
	pfKthread = 0x00200000
)

// mayBeExecing reports whether a process that read as an empty environment could be in the
// middle of an execve rather than a zombie, exiting or a kernel thread (older kernels read
// those as empty rather than failing with ESRCH).
func mayBeExecing(pid int) bool {
	st, err := readStat(pid)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	return st.state != 'Z' && st.state != 'X' && st.flags&(pfExiting|pfKthread) == 0
}

// environ reads /proc/PID/environ into the scan's buffer, with raw system calls: a scan
// reads every process's, and os.ReadFile's stat, poller registration and fcntl calls would
// more than double its system calls.
func (s *scan) environ(pid int) ([]byte, error) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/environ", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if s.buf == nil {
		s.buf = make([]byte, 0, 16<<10)
	}
	b := s.buf[:0]
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		b = b[:len(b)+n]
	}
	s.buf = b
	return b, nil
}

// listPIDs lists the numeric entries of /proc.
func listPIDs() ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

var cookiePrefix = []byte(CookieVar + "=")

// envCookie returns the cookie in pid's environment, "" if none or unreadable.
func envCookie(pid int) string {
	env, err := newScan("").environ(pid)
	if err != nil {
		return ""
	}
	return cookieIn(env)
}

// cookieIn returns the cookie in an environment block, "" if none (or the last one, should a
// process have set it twice).
func cookieIn(env []byte) string {
	if !bytes.Contains(env, cookiePrefix) {
		return ""
	}
	c := ""
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, cookiePrefix); ok {
			c = string(v)
		}
	}
	return c
}
