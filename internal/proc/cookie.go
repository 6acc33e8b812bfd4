package proc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
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
	var pids []int
	eachEnv(func(pid int, c string) {
		if c == cookie {
			pids = append(pids, pid)
		}
	})
	return pids
}

// Cookies maps every cookie carried by a running process to the PIDs carrying it.
func Cookies() map[string][]int {
	m := map[string][]int{}
	eachEnv(func(pid int, c string) { m[c] = append(m[c], pid) })
	return m
}

// killTimeout bounds KillCookie when a process will not die (stuck in uninterruptible
// sleep on a dead NFS mount, say): the caller gets on with its cleanup instead of hanging.
const killTimeout = 10 * time.Second

// KillCookie SIGKILLs every process carrying cookie, and the process group of each that
// leads one, until a scan finds none left: a process may fork while the scan runs, but a
// process with SIGKILL pending cannot fork, so this converges. It returns how many
// distinct processes were signalled. It never signals the calling process or its group.
func KillCookie(cookie string) (killed int) {
	seen := map[int]bool{}
	deadline := time.Now().Add(killTimeout)
	clean := 0
	for {
		pids := FindCookie(cookie)
		if time.Now().After(deadline) {
			return len(seen)
		}
		if len(pids) == 0 {
			// A process in the middle of execve can read as having no environment for an
			// instant; only a second clean scan a little later is proof that none is left.
			if clean++; clean == 2 {
				return len(seen)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		clean = 0
		for _, pid := range pids {
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

// eachEnv calls fn for every other process carrying a cookie.
func eachEnv(fn func(pid int, cookie string)) {
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	me := os.Getpid()
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid == me {
			continue
		}
		if c := envCookie(pid); c != "" {
			fn(pid, c)
		}
	}
}

var cookiePrefix = []byte(CookieVar + "=")

// envCookie returns the cookie in pid's environment, "" if none (or the last one, should a
// process have set it twice).
func envCookie(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil || !bytes.Contains(b, cookiePrefix) {
		return ""
	}
	c := ""
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, cookiePrefix); ok {
			c = string(v)
		}
	}
	return c
}
