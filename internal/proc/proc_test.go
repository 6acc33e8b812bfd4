package proc

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestParseOwner(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Owner
		ok   bool
	}{
		{"123-456", Owner{PID: 123, Start: 456}, true},
		{"1-0", Owner{PID: 1}, true},
		{"123", Owner{}, false},
		{"-1-5", Owner{}, false},
		{"0-5", Owner{}, false},
		{"12-x", Owner{}, false},
		{"012-5", Owner{}, false},
		{"12-+5", Owner{}, false},
		{"12-5.abc", Owner{}, false},
	} {
		got, err := ParseOwner(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseOwner(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseOwner(%q) (-want +got):\n%s", tc.in, diff)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (a) b (c) S 1 777 777 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := stat{state: 'S', pgid: 777, flags: 4194304, start: 98765}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(stat{})); diff != "" {
		t.Errorf("parseStat (-want +got):\n%s", diff)
	}
	if _, err := parseStat([]byte("4242 (x) S 1")); err == nil {
		t.Error("parseStat of a truncated line succeeded")
	}
}

func TestOwnerAlive(t *testing.T) {
	me := Self()
	if me.PID != os.Getpid() || me.Start == 0 {
		t.Fatalf("Self() = %+v", me)
	}
	if !me.Alive() {
		t.Error("Self().Alive() = false")
	}
	// Same PID, other start time: what a reused PID looks like.
	if (Owner{PID: me.PID, Start: me.Start + 1}).Alive() {
		t.Error("owner with a different start time reported alive")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o, err := OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Alive() {
		t.Error("running child reported dead")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if o.Alive() {
		t.Error("exited child reported alive")
	}
}

func TestCookieOwner(t *testing.T) {
	me := Self()
	c := NewCookie(me)
	if got, ok := CookieOwner(c); !ok || got != me {
		t.Errorf("CookieOwner(%q) = %v, %v; want %v", c, got, ok, me)
	}
	if c2 := NewCookie(me); c2 == c {
		t.Errorf("two cookies are equal: %q", c)
	}
	for _, bad := range []string{"", "abc", "x.y", "12.ab"} {
		if _, ok := CookieOwner(bad); ok {
			t.Errorf("CookieOwner(%q) ok", bad)
		}
	}
}

// startTree starts a process tree carrying cookie: a plain background child, a daemon that
// ignores SIGTERM in its own session, and below that daemon a process with a scrubbed
// environment. It returns the PID of the scrubbed process once everything is running.
func startTree(t *testing.T, cookie string) (cmd *exec.Cmd, scrubbed int) {
	t.Helper()
	script := `
sh -c 'trap "" TERM; sleep 60' &
setsid sh -c 'trap "" TERM; env -i sleep 61 & echo scrubbed $!; wait' &
wait`
	cmd = exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), CookieVar+"="+cookie)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { KillCookie(cookie); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading marker: %v", err)
	}
	scrubbed, err = strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "scrubbed "))
	if err != nil {
		t.Fatalf("marker %q: %v", line, err)
	}
	return cmd, scrubbed
}

func TestKillCookie(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1) from util-linux")
	}
	cookie := NewCookie(Self())
	cmd, scrubbed := startTree(t, cookie)
	// pidfd of the scrubbed process: it carries no cookie, so only the group kill gets it.
	fd, err := unix.PidfdOpen(scrubbed, 0)
	if err != nil {
		t.Skipf("needs pidfd_open (Linux 5.3): %v", err)
	}
	defer unix.Close(fd)

	before := FindCookie(cookie)
	// sh, sleep 60's sh, the setsid sh (the sleeps may still be shells about to exec).
	if len(before) < 3 {
		t.Fatalf("FindCookie found %v, want at least 3 processes", before)
	}
	// The top shell is waiting for its children, so it is listed by both scans.
	if got := Cookies()[cookie]; !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("Cookies()[cookie] = %v, want it to hold the shell %d", got, cmd.Process.Pid)
	}
	if !slices.Contains(before, cmd.Process.Pid) {
		t.Errorf("FindCookie = %v, want it to hold the shell %d", before, cmd.Process.Pid)
	}
	other := NewCookie(Self())
	if n, all := KillCookie(other); n != 0 || !all {
		t.Errorf("KillCookie(unused cookie) = %d, %v; want 0, true", n, all)
	}
	// Processes killed by a group kill before their turn are not counted, hence >= 1.
	if n, all := KillCookie(cookie); n < 1 || !all {
		t.Errorf("KillCookie = %d, %v; want >= 1, true", n, all)
	}
	if left := FindCookie(cookie); len(left) != 0 {
		t.Errorf("after KillCookie, still running: %v", left)
	}
	// The scrubbed process dies with its group; a pidfd turns readable when it exits.
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Minute/time.Millisecond))
	if err != nil || n != 1 {
		t.Errorf("process without the cookie in the daemon's group survived (poll %d, %v)", n, err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("killed shell exited 0")
	}
}

func TestKillGroupRefusesOwnGroup(t *testing.T) {
	if err := KillGroup(syscall.Getpgrp()); err == nil {
		t.Error("KillGroup(own group) = nil")
	}
	if err := KillGroup(1); err == nil {
		t.Error("KillGroup(1) = nil")
	}
}

// TestScanSettles checks what makes a clean scan proof on its own (scan.settled) and what
// does not.
func TestScanSettles(t *testing.T) {
	cookie := NewCookie(Self())
	start := func(env []string, args ...string) *exec.Cmd {
		t.Helper()
		c := exec.Command(args[0], args[1:]...)
		c.Env = env
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	carrier := start([]string{CookieVar + "=" + cookie}, "sleep", "60")
	t.Cleanup(func() { carrier.Process.Kill(); carrier.Wait() })
	// Until it has exec'd: before, its environment is still this test's (no cookie).
	environ := func(pid int) string {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		return string(b)
	}
	for !strings.Contains(environ(carrier.Process.Pid), CookieVar+"="+cookie) {
		time.Sleep(time.Millisecond)
	}

	// A process forked after the listing, its parent gone before the reads: the listing
	// after the reads finds it.
	first := true
	s := newScan(cookie)
	s.list = func() ([]int, error) {
		pids, err := listPIDs()
		if first {
			first = false
			pids = slices.DeleteFunc(pids, func(p int) bool { return p == carrier.Process.Pid })
		}
		return pids, err
	}
	if got := s.run().found; !slices.Equal(got, []int{carrier.Process.Pid}) {
		t.Errorf("scan hiding the carrier from its first listing found %v, want [%d]", got, carrier.Process.Pid)
	}

	// Two listings agreeing, every process read with an environment: settled.
	s = newScan(NewCookie(Self()))
	s.list = func() ([]int, error) { return []int{carrier.Process.Pid}, nil }
	if s.run(); !s.settled() || len(s.found) != 0 {
		t.Errorf("scan of one process without the cookie: settled %v, found %v; want settled, none", s.settled(), s.found)
	}

	// A zombie reads as no environment and cannot start anything: not unsure.
	zombie := start(nil, "true")
	t.Cleanup(func() { zombie.Wait() })
	for st, err := readStat(zombie.Process.Pid); err != nil || st.state != 'Z'; st, err = readStat(zombie.Process.Pid) {
		time.Sleep(time.Millisecond)
	}
	other := NewCookie(Self())
	if s := newScan(other).run(); slices.Contains(s.unsure, zombie.Process.Pid) {
		t.Errorf("zombie %d counted unsure", zombie.Process.Pid)
	}

	// A live process with an empty environment could be one mid-execve: unsure, so the scan
	// is not settled, and KillCookie still ends (with its second scan).
	empty := start([]string{}, "sleep", "60")
	t.Cleanup(func() { empty.Process.Kill(); empty.Wait() })
	for b, err := os.ReadFile("/proc/" + strconv.Itoa(empty.Process.Pid) + "/environ"); err != nil || len(b) != 0; b, err = os.ReadFile("/proc/" + strconv.Itoa(empty.Process.Pid) + "/environ") {
		time.Sleep(time.Millisecond) // until it has exec'd
	}
	s = newScan(other).run()
	if !slices.Contains(s.unsure, empty.Process.Pid) || s.settled() {
		t.Errorf("scan with an empty-environment process %d: unsure %v, settled %v; want it unsure, not settled", empty.Process.Pid, s.unsure, s.settled())
	}
	if n, all := KillCookie(other); n != 0 || !all {
		t.Errorf("KillCookie(unused cookie) = %d, %v; want 0, true", n, all)
	}
}
