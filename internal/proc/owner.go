// Package proc holds the Linux process helpers hm's backends share: naming the hm process
// that owns state robustly across PID reuse, and killing every process a step started,
// however it tried to escape (new process group, new session, ignored SIGTERM).
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Owner names a live or dead process. A PID alone is not enough: PIDs are reused, and a
// stale state directory must not look owned by whatever process got the number since. The
// start time (clock ticks after boot, /proc/PID/stat field 22) disambiguates.
type Owner struct {
	PID   int
	Start uint64
}

// Self is the calling process.
func Self() Owner { return self() }

var self = sync.OnceValue(func() Owner {
	o, err := OwnerOf(os.Getpid())
	if err != nil {
		// /proc is not mounted: fall back to the PID alone; Alive then checks existence only.
		return Owner{PID: os.Getpid()}
	}
	return o
})

// OwnerOf returns the Owner of the process pid, which must exist now.
func OwnerOf(pid int) (Owner, error) {
	st, err := readStat(pid)
	if err != nil {
		return Owner{}, err
	}
	if st.state == 'Z' || st.state == 'X' {
		return Owner{}, fmt.Errorf("proc: process %d has exited", pid)
	}
	return Owner{PID: pid, Start: st.start}, nil
}

// Alive reports whether the process o names still runs. A zombie counts as dead: it has
// exited and merely waits for its parent. When /proc cannot be read for another reason
// than absence the answer is true, so that callers never destroy a live process's state.
func (o Owner) Alive() bool {
	if o.PID <= 0 {
		return false
	}
	st, err := readStat(o.PID)
	if errors.Is(err, fs.ErrNotExist) {
		// Without /proc every process would look dead.
		_, serr := os.Stat("/proc/self/stat")
		return serr != nil
	}
	if err != nil {
		return true
	}
	if st.state == 'Z' || st.state == 'X' {
		return false
	}
	return o.Start == 0 || st.start == o.Start
}

// String is the form ParseOwner reads back: "PID-START".
func (o Owner) String() string { return strconv.Itoa(o.PID) + "-" + strconv.FormatUint(o.Start, 10) }

// ParseOwner reads what Owner.String wrote.
func ParseOwner(s string) (Owner, error) {
	p, st, ok := strings.Cut(s, "-")
	if !ok {
		return Owner{}, fmt.Errorf("proc: owner %q: want PID-START", s)
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != p {
		return Owner{}, fmt.Errorf("proc: owner %q: bad PID", s)
	}
	start, err := strconv.ParseUint(st, 10, 64)
	if err != nil || strconv.FormatUint(start, 10) != st {
		return Owner{}, fmt.Errorf("proc: owner %q: bad start time", s)
	}
	return Owner{PID: pid, Start: start}, nil
}

type stat struct {
	state byte
	pgid  int
	flags uint64
	start uint64
}

// readStat parses /proc/PID/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted from the last ')'.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, errors.New("proc: malformed stat")
	}
	// Fields after the name start at field 3 (state); pgrp is field 5, flags field 9,
	// starttime field 22.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, errors.New("proc: malformed stat")
	}
	pgid, err1 := strconv.Atoi(f[2])
	flags, err2 := strconv.ParseUint(f[6], 10, 64)
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return stat{}, errors.New("proc: malformed stat")
	}
	return stat{state: f[0][0], pgid: pgid, flags: flags, start: start}, nil
}
