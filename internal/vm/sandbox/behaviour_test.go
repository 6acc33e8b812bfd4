package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// hangGuard bounds waits for things that must happen, so a hang fails with a message.
const hangGuard = 2 * time.Minute

// markerWriter closes seen once the output contains marker.
type markerWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
}

func newMarkerWriter(marker string) *markerWriter {
	return &markerWriter{marker: marker, seen: make(chan struct{})}
}

func (w *markerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.buf.Write(p)
	if w.seen != nil && bytes.Contains(w.buf.Bytes(), []byte(w.marker)) {
		close(w.seen)
		w.seen = nil
	}
	return n, nil
}

func (w *markerWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type runResult struct {
	code int
	err  error
}

// startRun runs m in the background and waits until it printed marker.
func startRun(t *testing.T, ctx context.Context, m vm.Machine, marker string) (<-chan runResult, *markerWriter) {
	t.Helper()
	out := newMarkerWriter(marker)
	seen := out.seen // Write sets the field to nil
	done := make(chan runResult, 1)
	go func() {
		code, err := m.Run(ctx, out, out)
		done <- runResult{code, err}
	}()
	select {
	case <-seen:
	case r := <-done:
		t.Fatalf("Run returned before printing %q: %d, %v, output %q", marker, r.code, r.err, out.String())
	case <-time.After(hangGuard):
		t.Fatalf("step did not print %q", marker)
	}
	return done, out
}

func wait(t *testing.T, done <-chan runResult) runResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(hangGuard):
		t.Fatal("Run did not return")
		return runResult{}
	}
}

// markedProcesses lists host processes whose environment holds the marker variable.
func markedProcesses(marker string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(env, []byte("HM_TEST_MARK="+marker)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stubborn starts a daemon that ignores SIGTERM and has left the step's session, waits
// until it runs sleep, and prints ready.
const stubborn = `setsid sh -c 'trap "" TERM; exec sleep 1000' & pid=$!
while [ "$(cat /proc/$pid/comm 2>/dev/null)" != sleep ]; do :; done; echo ready; `

// Whatever ends a step, its daemons that ignore SIGTERM are gone by the time Run returns,
// and the machine leaves no mount, process, directory or cgroup once destroyed.
func TestStubbornDaemonDiesWithStep(t *testing.T) {
	b := newBackend(t, Options{})
	for _, tc := range []struct {
		name string
		tail string // shell after the daemon runs
		end  func(cancel context.CancelFunc, m vm.Machine)
		code int // wanted exit code, -1 for a Run error
	}{
		{"success", "exit 0", nil, 0},
		{"failure", "exit 3", nil, 3},
		{"cancel", "sleep 1000", func(cancel context.CancelFunc, m vm.Machine) { cancel() }, -1},
		{"destroy", "sleep 1000", func(cancel context.CancelFunc, m vm.Machine) { m.Destroy(context.Background()) }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker := randomHex()
			m := create(t, b, spec(stubborn+tc.tail, "HM_TEST_MARK="+marker))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done, out := startRun(t, ctx, m, "ready")
			if tc.end != nil {
				if len(markedProcesses(marker)) == 0 {
					t.Fatal("the step's processes are not visible from the host: the check below would prove nothing")
				}
				tc.end(cancel, m)
			}
			r := wait(t, done)
			if tc.code >= 0 && (r.err != nil || r.code != tc.code) {
				t.Errorf("Run = %d, %v; want %d (output %q)", r.code, r.err, tc.code, out.String())
			}
			if tc.code < 0 && r.err == nil {
				t.Errorf("Run = %d, nil; want an error", r.code)
			}
			if left := markedProcesses(marker); len(left) > 0 {
				t.Errorf("processes %v of the step still run after Run returned", left)
			}
			if err := m.Destroy(context.Background()); err != nil {
				t.Errorf("Destroy: %v", err)
			}
			if left := leftovers(b, proc.Self()); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

func TestDeadlineKillsTree(t *testing.T) {
	b := newBackend(t, Options{})
	marker := randomHex()
	m := create(t, b, spec(stubborn+"sleep 1000", "HM_TEST_MARK="+marker))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out bytes.Buffer
	_, err := m.Run(ctx, &out, &out)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want DeadlineExceeded (output %q)", err, out.String())
	}
	if !strings.Contains(out.String(), "ready") {
		t.Fatalf("the daemon never started (output %q): the check below would prove nothing", out.String())
	}
	if left := markedProcesses(marker); len(left) > 0 {
		t.Errorf("processes %v still run after the deadline", left)
	}
}

// The step sees its own namespaces and the promised mounts.
func TestIsolation(t *testing.T) {
	b := newBackend(t, Options{})
	cmd := `hostname; awk '/^PPid/ {print $2}' /proc/$$/status; tr '\0' ' ' < /proc/1/cmdline; echo
pwd; test -c /dev/null && echo > /dev/null && echo devnull
head -c 4 /dev/urandom | wc -c
grep -c ' /tmp tmpfs ' /proc/mounts
echo x > /etc/hosts 2>/dev/null && echo hosts-writable || echo hosts-readonly
test -f /etc/resolv.conf && echo resolv
echo t > /tmp/t; mkdir -p /opt && echo o > /opt/o`
	m, out := mustRun(t, b, spec(cmd))
	want := "hm\n1\nhm-sandbox-init \n/workspace\ndevnull\n4\n1\nhosts-readonly\nresolv\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	snap := commit(t, b, m, true)
	_, out = mustRun(t, b, childSpec(snap, `test -e /tmp/t && echo tmp-kept || echo tmp-gone; cat /opt/o`))
	if want := "tmp-gone\no\n"; out != want {
		t.Errorf("child stdout %q, want %q (/tmp is a tmpfs, /opt is snapshotted)", out, want)
	}
	if resolv, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		_, out = mustRun(t, b, spec(`cat /etc/resolv.conf`))
		if out != string(resolv) {
			t.Errorf("/etc/resolv.conf in the sandbox = %q, want the host's %q", out, resolv)
		}
	}
}

// With the host image the step sees the host's files but not hm's state dir, and its
// writes land in its own layer, not on the host.
func TestHostImage(t *testing.T) {
	needSandbox(t)
	// Outside /tmp, which the sandbox covers with its own tmpfs anyway.
	state, err := os.MkdirTemp("/var/tmp", "hm-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	if err := os.WriteFile(filepath.Join(state, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := New(state, imagestore.Open(state), Options{NoPull: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	host, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skip("host has no /etc/os-release")
	}
	marker := filepath.Join("/etc", "hm-sandbox-test-"+randomHex())
	s := spec(`cat /etc/os-release; ls -A ` + state + `; echo w > ` + marker + `; rm /etc/os-release`)
	s.Image = imagestore.HostID
	m, out := mustRun(t, b, s)
	if out != string(host) {
		t.Errorf("stdout %q, want the host's /etc/os-release and an empty state dir", out)
	}
	if _, err := os.Stat(marker); err == nil {
		os.Remove(marker)
		t.Errorf("the step wrote %s on the host", marker)
	}
	if _, err := os.Stat("/etc/os-release"); err != nil {
		t.Errorf("the step deleted the host's /etc/os-release: %v", err)
	}
	snap := commit(t, b, m, true)
	_, out = mustRun(t, b, childSpec(snap, `cat `+marker+`; test -e /etc/os-release || echo deleted`))
	if want := "w\ndeleted\n"; out != want {
		t.Errorf("child stdout %q, want %q", out, want)
	}
}

// Each network mode's interfaces: the private default has loopback and slirp4netns' tap0
// with its route out, none only loopback, host the host's own.
func TestNetworkModes(t *testing.T) {
	for _, tc := range []struct {
		mode Options
		want string
	}{
		{Options{}, "lo tap0 default via 10.0.2.2"},
		{Options{Network: NetworkPrivate}, "lo tap0 default via 10.0.2.2"},
		{Options{Network: NetworkNone}, "lo"},
		{Options{NetworkNone: true}, "lo"},
	} {
		t.Run(fmt.Sprintf("%+v", tc.mode), func(t *testing.T) {
			b := newBackend(t, tc.mode)
			_, out := mustRun(t, b, spec(`tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' '; ip route | grep default | cut -d' ' -f1-3`))
			if got := strings.Join(strings.Fields(out), " "); got != tc.want {
				t.Errorf("interfaces and route %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("host", func(t *testing.T) {
		b := newBackend(t, Options{Network: NetworkHost})
		_, out := mustRun(t, b, spec(`readlink /proc/self/ns/net`))
		own, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != own {
			t.Errorf("the step's network namespace is %s, the host's %s", got, own)
		}
	})
}

// Without slirp4netns the private network cannot work: the backend refuses as unavailable,
// naming what is missing, rather than running steps without a network or on the host's;
// the other networks do not need it.
func TestPrivateNetworkWithoutSlirp(t *testing.T) {
	needSandbox(t)
	t.Setenv("PATH", "/nonexistent")
	state := t.TempDir()
	_, err := New(state, imagestore.Open(state), Options{})
	var ue *errs.UnavailableError
	if !errors.As(err, &ue) || ue.Missing != "slirp4netns" {
		t.Errorf("New without slirp4netns = %v, want an UnavailableError missing slirp4netns", err)
	}
	for _, n := range []NetworkMode{NetworkNone, NetworkHost} {
		b, err := New(state, imagestore.Open(state), Options{Network: n, NoPrestart: true})
		if err != nil {
			t.Errorf("New with network %s without slirp4netns: %v", n, err)
			continue
		}
		b.Close()
	}
}

// The step runs with Docker's default capabilities (nothing inheritable or ambient), under
// seccomp, and cannot read its init's environment, marker or config pipe.
func TestConfinedStep(t *testing.T) {
	b := newBackend(t, Options{})
	_, out := mustRun(t, b, spec(`grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|Seccomp):' /proc/self/status | tr -s '\t ' ' '
cat /proc/1/environ >/dev/null 2>&1 && echo environ readable
readlink /proc/1/fd/5 && echo marker readable
cat /proc/1/fd/3 </dev/null >/dev/null 2>&1 && echo config pipe open
true`))
	want := "CapInh: 0000000000000000\nCapPrm: 00000000a80425fb\nCapEff: 00000000a80425fb\n" +
		"CapBnd: 00000000a80425fb\nCapAmb: 0000000000000000\nSeccomp: 2\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("step's view (-want +got):\n%s", diff)
	}
}

func TestUnavailableWithoutRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: the check cannot fail here")
	}
	_, err := New(t.TempDir(), imagestore.Open(t.TempDir()), Options{})
	var e *errs.UnavailableError
	if !errors.As(err, &e) || e.Backend != "sandbox" || !errors.Is(err, errs.ErrUnavailable) {
		t.Errorf("New as non-root = %v, want an UnavailableError of the sandbox", err)
	}
}

// An image neither in the store nor pullable is an *errs.ImageError with its fields and the
// pull's cause, and no CLI advice: the CLI writes the fix line.
func TestResolveImageMissing(t *testing.T) {
	needSandbox(t)
	state := t.TempDir()
	b, err := New(state, imagestore.Open(state), Options{})
	if err != nil {
		t.Fatal(err)
	}
	const ref = "127.0.0.1:1/hm-test/nope:v1" // nothing listens on port 1: the pull fails at once
	_, err = b.ResolveImage(t.Context(), ref)
	var e *errs.ImageError
	if !errors.As(err, &e) || !errors.Is(err, errs.ErrImageNotFound) {
		t.Fatalf("ResolveImage(%s) = %v, want an *errs.ImageError of class ErrImageNotFound", ref, err)
	}
	if e.Ref != ref || e.Backend != "sandbox" || e.Where != errs.InStore || e.Err == nil {
		t.Errorf("error = %+v; want ref, backend sandbox, looked for in the store, with the pull's cause", e)
	}
	if strings.Contains(err.Error(), "hm image") || strings.Contains(err.Error(), "--") {
		t.Errorf("error %q gives CLI advice", err)
	}
}

func TestSetupErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		status      string
		unavailable bool
	}{
		{`{"stage":"mount /proc","msg":"mount /proc: operation not permitted","errno":1}`, true},
		{`{"stage":"overlay","msg":"overlay: mount overlay: invalid argument","errno":22}`, true},
		{`{"stage":"exec","msg":"exec: the image has no usable /bin/sh: no such file or directory","errno":2}`, false},
	} {
		var r sandboxinit.Report // as the init writes it
		if err := json.Unmarshal([]byte(tc.status), &r); err != nil {
			t.Fatal(err)
		}
		err := setupError(r.Failure)
		var e *errs.UnavailableError
		got := errors.As(err, &e) && e.Backend == "sandbox" && errors.Is(err, errs.ErrUnavailable)
		if got != tc.unavailable {
			t.Errorf("setupError(%s) = %v; sandbox_unavailable %v, want %v", tc.status, err, got, tc.unavailable)
		}
		if !tc.unavailable && !errors.Is(err, errs.ErrInfra) {
			t.Errorf("setupError(%s) = %v, want ErrInfra", tc.status, err)
		}
	}
}

func TestMissingShell(t *testing.T) {
	b := newBackend(t, Options{})
	m, _ := mustRun(t, b, spec(`rm /bin/sh`))
	snap := commit(t, b, m, true)
	c := create(t, b, childSpec(snap, `true`))
	_, err := c.Run(context.Background(), nil, nil)
	if !errors.Is(err, errs.ErrInfra) || !strings.Contains(err.Error(), "/bin/sh") {
		t.Errorf("Run without /bin/sh = %v, want an infrastructure error naming /bin/sh", err)
	}
}

func TestMountPathUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/t\04`: `/t\04`} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// The backend keeps one init started ahead of need; a step takes it, a new one is started
// behind it, and Close kills the spare. NoPrestart starts none.
func TestSpareInit(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, Options{})
	if err := b.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitRefill()
	spare := b.sparePID()
	if spare == 0 {
		t.Fatal("no spare init after Reconcile")
	}
	m := create(t, b, spec(`echo ready; sleep 1000`))
	runCtx, cancel := context.WithCancel(ctx)
	done, _ := startRun(t, runCtx, m, "ready")
	m.mu.Lock()
	used := m.init.proc.Pid
	m.mu.Unlock()
	cancel()
	wait(t, done)
	if used != spare {
		t.Errorf("the step ran in init %d, not in the spare %d", used, spare)
	}
	b.waitRefill()
	next := b.sparePID()
	if next == 0 || next == spare {
		t.Fatalf("spare after a step = %d (was %d), want a new one", next, spare)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(next)); err == nil {
		t.Errorf("spare init %d still exists after Close", next)
	}

	b = newBackend(t, Options{NoPrestart: true})
	if err := b.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	mustRun(t, b, spec(`true`))
	b.waitRefill()
	if pid := b.sparePID(); pid != 0 {
		t.Errorf("NoPrestart backend has spare init %d", pid)
	}
}

// A running step is in cgroups of its own with the configured limits.
func TestCgroups(t *testing.T) {
	b := newBackend(t, Options{PidsMax: 77, MemoryMax: 256 << 20})
	if len(b.cg.parents) == 0 {
		t.Skip("no usable memory or pids cgroup controller here")
	}
	m := create(t, b, spec(`echo ready; sleep 1000`))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, _ := startRun(t, ctx, m, "ready")
	m.mu.Lock()
	dirs, pid := m.cgroups, m.init.proc.Pid
	m.mu.Unlock()
	if len(dirs) != len(b.cg.parents) {
		t.Errorf("step cgroups %v, want one under each of %v", dirs, b.cg.parents)
	}
	limits := map[string]string{"pids.max": "77", "memory.max": "268435456", "memory.limit_in_bytes": "268435456"}
	checked := 0
	for _, d := range dirs {
		procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil || !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid)) {
			t.Errorf("%s/cgroup.procs = %q, %v; want the init %d", d, procs, err, pid)
		}
		for file, want := range limits {
			got, err := os.ReadFile(filepath.Join(d, file))
			if err != nil {
				continue // the controller is not in this hierarchy
			}
			checked++
			if strings.TrimSpace(string(got)) != want {
				t.Errorf("%s/%s = %q, want %s", d, file, got, want)
			}
		}
	}
	if checked < 2 {
		t.Errorf("checked %d limits, want memory and pids", checked)
	}
	cancel()
	wait(t, done)
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("step cgroup %s left after Run", d)
		}
	}
}

// Run returns once the step's processes are gone, possibly before its init has exited and
// so unmounted the step's overlay. A step on the layer committed from it waits for that
// init: overlayfs must not find a lower layer still in use as an upper directory.
func TestRunWaitsForBusyLayer(t *testing.T) {
	b := newBackend(t, Options{})
	ctx := context.Background()
	parent, _ := mustRun(t, b, spec("echo parent > /f"))
	id, err := parent.Commit(ctx, true)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	snap, err := b.readSnap(id)
	if err != nil {
		t.Fatal(err)
	}
	layer := snap.Layers[0]
	// Hold the layer busy as if the parent's init were still exiting, whatever it did.
	hold := make(chan struct{})
	b.markBusy(layer, hold)
	waiting := make(chan string, 1)
	b.busy.mu.Lock()
	b.busy.waiting = func(l string) { waiting <- l }
	b.busy.mu.Unlock()

	child := create(t, b, childSpec(id, "cat /f"))
	type result struct {
		code int
		err  error
		out  string
	}
	done := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		code, err := child.Run(ctx, &out, &out)
		done <- result{code, err, out.String()}
	}()
	select {
	case l := <-waiting:
		if l != layer {
			t.Errorf("Run waited for layer %s, want %s", l, layer)
		}
	case r := <-done:
		t.Fatalf("the child ran (%d, %v) while its layer was busy", r.code, r.err)
	}
	child.mu.Lock()
	started := child.init != nil
	child.mu.Unlock()
	if started {
		t.Error("the child's init was taken while its layer was busy")
	}
	close(hold)
	if r := <-done; r.err != nil || r.code != 0 || r.out != "parent\n" {
		t.Errorf("child Run = %d, %v, output %q; want 0, nil, \"parent\\n\"", r.code, r.err, r.out)
	}
}
