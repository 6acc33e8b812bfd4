package proc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CookieVar is the environment variable that marks every process of a step. Descendants
// inherit it through fork and exec, also after setsid or setpgid, which is what makes it
// find daemonised children that a process-group kill misses. A process that execs with a
// scrubbed environment loses it; the process-group kill of KillCookie covers the common
// form of that (a daemon leading its own group).
const CookieVar = "HM_STEP_COOKIE"

// NewCookie returns a fresh cookie "OWNER.RANDOM" naming o as its owner, so that reconcile
// can tell which cookies belong to dead hm processes.
func NewCookie(o Owner) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("proc: crypto/rand: " + err.Error()) // never fails on Linux
	}
	return o.String() + "." + hex.EncodeToString(b[:])
}

// CookieOwner returns the owner a cookie from NewCookie names.
func CookieOwner(cookie string) (Owner, bool) {
	i := strings.LastIndexByte(cookie, '.')
	if i < 0 {
		return Owner{}, false
	}
	o, err := ParseOwner(cookie[:i])
	return o, err == nil
}

// FindCookie returns the PIDs of the processes whose environment carries cookie. Processes
// whose environment cannot be read (other users, when not root) are not reported.
func FindCookie(cookie string) []int {
	return newScan(cookie).run().found
}

// Cookies maps every cookie carried by a running process to the PIDs carrying it.
func Cookies() map[string][]int {
	m := map[string][]int{}
	sc := newScan("")
	sc.each = func(pid int, c string) { m[c] = append(m[c], pid) }
	sc.run()
	return m
}

// killTimeout bounds KillCookie when a process will not die (stuck in uninterruptible
// sleep on a dead NFS mount, say): the caller gets on with its cleanup instead of hanging.
const killTimeout = 10 * time.Second

// settleDelay is how long a scan that could not prove itself waits before the scan that
// counts as proof (see KillCookie).
const settleDelay = 5 * time.Millisecond

// KillCookie SIGKILLs every process carrying cookie, and the process group of each that
// leads one, until a scan finds none left: a process may fork while the scan runs, but a
// process with SIGKILL pending cannot fork, so this converges. It returns how many
// distinct processes were signalled, and whether it saw none left before its deadline
// (false: some would not die). It never signals the calling process or its group.
//
// A clean scan is proof when it is settled (scan.settled: no process read in the middle of
// an execve, none forked behind the scan's back). A scan that is clean but not settled is
// proof only with a second clean scan settleDelay later, which is what every clean scan
// needed before: that costs the delay only when something on the machine looked unsure.
func KillCookie(cookie string) (killed int, all bool) {
	seen := map[int]bool{}
	deadline := time.Now().Add(killTimeout)
	clean := false // the previous scan was clean, if unsettled, and settleDelay ago
	for {
		s := newScan(cookie).run()
		if time.Now().After(deadline) {
			return len(seen), len(s.found) == 0
		}
		if len(s.found) == 0 {
			if s.settled() || clean {
				return len(seen), true
			}
			clean = true
			time.Sleep(settleDelay)
			continue
		}
		clean = false
		for _, pid := range s.found {
			if killOne(pid, cookie) {
				seen[pid] = true
			}
		}
		// Killed processes keep a readable environment until they have finished exiting;
		// yield briefly instead of spinning on them.
		time.Sleep(time.Millisecond)
	}
}

// KillGroup SIGKILLs process group pgid. The caller must know the group is the step's: the
// group's leader is not yet reaped, so the number cannot have been reused.
func KillGroup(pgid int) error {
	if pgid <= 1 || pgid == syscall.Getpgrp() {
		return errors.New("proc: refusing to kill process group " + strconv.Itoa(pgid))
	}
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// killOne kills pid if it still carries cookie. A pidfd pins the process, so the check and
// the signal are about the same process even if pid is reused in between.
func killOne(pid int, cookie string) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false
		}
		fd = -1 // kernels before 5.3: fall back to kill(2)
	} else {
		defer unix.Close(fd)
	}
	if envCookie(pid) != cookie {
		return false
	}
	if st, err := readStat(pid); err == nil && st.pgid == pid {
		_ = KillGroup(pid) // a daemon's group holds children that may have dropped the cookie
	}
	if fd >= 0 {
		err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	} else {
		err = syscall.Kill(pid, syscall.SIGKILL)
	}
	return err == nil
}
