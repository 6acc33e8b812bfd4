package sandbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// Reconcile implements vm.Backend. For every hm process that no longer exists it kills the
// sandbox inits it left (the kernel then kills their namespaces' processes and unmounts
// their roots), detaches any mount left under the state dir, and removes its machines,
// ephemeral snapshots, trash and cgroups; then it deletes layers nothing uses and runs the
// image store's reconcile. What live hm processes hold is left alone.
func (b *Backend) Reconcile(ctx context.Context) error {
	dead := func(cookie string) bool {
		o, ok := proc.CookieOwner(cookie)
		return ok && !o.Alive()
	}
	for c, pids := range b.inits() {
		if dead(c) {
			for _, pid := range pids {
				killInit(pid, b.tag, c)
			}
		}
	}
	var errList []error
	// Nothing is mounted in hm's namespace by design; a mount found there all the same (an
	// older hm, a hand-made one) would keep a machine directory busy.
	for _, mp := range mountsUnder(b.dir) {
		if c := machineCookie(b.dir, mp); c != "" && dead(c) {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				errList = append(errList, fmt.Errorf("unmount %s: %v", mp, err))
			}
		}
	}
	for _, d := range []struct {
		sub   string
		owned func(name string) (cookie string, ok bool)
	}{
		{"machines", func(n string) (string, bool) { return n, true }},
		{"snaps", func(n string) (string, bool) {
			id, ok := strings.CutSuffix(n, ".json")
			if !ok {
				// A record being written: ".ID.tmp".
				id, ok = strings.CutSuffix(strings.TrimPrefix(n, "."), ".tmp")
			}
			if !ok {
				return "", false
			}
			return strings.CutPrefix(id, ephemeralPrefix)
		}},
		{"trash", func(n string) (string, bool) { return n, true }},
	} {
		names, err := statedir.List(filepath.Join(b.dir, d.sub))
		if err != nil {
			errList = append(errList, err)
			continue
		}
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("sandbox: reconcile: %w", err)
			}
			cookie, ok := d.owned(n)
			if !ok || !dead(cookie) {
				continue
			}
			p := filepath.Join(b.dir, d.sub, n)
			switch d.sub {
			case "trash":
				err = os.RemoveAll(p)
			case "snaps":
				err = os.Remove(p)
			default:
				err = b.discard(p)
			}
			if err != nil {
				errList = append(errList, err)
			}
		}
	}
	removeCgroups(b.cg.list(dead))
	errList = append(errList, b.gc())
	if b.store != nil {
		errList = append(errList, b.store.Reconcile(ctx))
	}
	if err := errors.Join(errList...); err != nil {
		return fmt.Errorf("sandbox: reconcile: %w: %w", errs.ErrInfra, err)
	}
	b.refill() // steps come next: have an init ready for the first
	return nil
}

// markerPrefix starts the name of an init's marker memfd: "hm-sandbox-init TAG COOKIE".
const markerPrefix = sandboxinit.Arg0 + " "

// stateTag names a state dir in init markers: short, and not the path itself.
func stateTag(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:8])
}

// inits lists the running sandbox inits of this backend's state dir by cookie. An init is
// known by its command line and its marker (sandboxinit.MarkerFD), which only a process
// allowed to ptrace it (hm, root on the host; never the step) can read; another state
// dir's hm (another user, a concurrent test suite) judges its own inits.
func (b *Backend) inits() map[string][]int {
	out := map[string][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cookie, ok := initMarker(pid, b.tag); ok {
			out[cookie] = append(out[cookie], pid)
		}
	}
	return out
}

// initMarker returns the cookie of pid when it is a sandbox init of the state dir tagged tag.
func initMarker(pid int, tag string) (string, bool) {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || string(cmdline) != sandboxinit.Arg0+"\x00" {
		return "", false
	}
	link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(sandboxinit.MarkerFD))
	if err != nil {
		return "", false
	}
	name, _ := strings.CutSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")
	rest, ok := strings.CutPrefix(name, markerPrefix+tag+" ")
	return rest, ok && rest != ""
}

// killInit SIGKILLs pid through a pidfd, after checking again that the pidfd names that
// init: never another process that got the number. The kernel then kills its namespace.
func killInit(pid int, tag, cookie string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if c, ok := initMarker(pid, tag); ok && c == cookie {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// machineCookie returns the cookie of the machine directory a path under dir belongs to.
func machineCookie(dir, p string) string {
	rel, err := filepath.Rel(filepath.Join(dir, "machines"), p)
	if err != nil || strings.HasPrefix(rel, "..") || rel == "." {
		return ""
	}
	return strings.Split(rel, string(filepath.Separator))[0]
}

// mountsUnder lists the mount points in this process's namespace at or below dir, deepest
// first (the order to unmount them in).
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, ok := octal(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}
