package sandbox

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/testutil"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/vmtest"
)

// TestMain lets the test binary serve as the sandbox init: Run re-executes /proc/self/exe.
func TestMain(m *testing.M) {
	MaybeInit()
	if os.Getenv(helperEnv) != "" {
		os.Exit(ownerHelper())
	}
	os.Exit(m.Run())
}

// busyboxPath is the static busybox the test images are made of (Debian: busybox-static).
const busyboxPath = "/bin/busybox"

// needSandbox skips t unless sandboxes can run here.
func needSandbox(t testing.TB) {
	t.Helper()
	testutil.NeedRoot(t)
	if _, err := os.Stat("/proc/self/ns/pid"); err != nil {
		t.Skip("needs PID namespaces: " + err.Error())
	}
}

// busyboxTar writes a rootfs tarball: bin/busybox with a symlink per applet, plus a few
// files the tests delete or shadow (/etc/imgdir/a, /etc/imgdir2/a, /etc/imgfile).
func busyboxTar(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skip("needs a static busybox at " + busyboxPath + " (apt-get install busybox-static)")
	}
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "etc/imgdir/", "etc/imgdir2/", "root/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, bin)
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			add(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
		}
	}
	for _, f := range []string{"etc/imgdir/a", "etc/imgdir2/a", "etc/imgfile"} {
		add(&tar.Header{Name: f, Typeflag: tar.TypeReg, Mode: 0o644, Size: 4}, []byte("img\n"))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newBackend returns a backend on a fresh state dir with the busybox image imported as
// "busybox".
func newBackend(t testing.TB, opts Options) *Backend {
	t.Helper()
	needSandbox(t)
	state := t.TempDir()
	store := imagestore.Open(state)
	if _, err := store.Import(context.Background(), busyboxTar(t), "busybox"); err != nil {
		t.Fatalf("import busybox: %v", err)
	}
	opts.NoPull = true
	b, err := New(state, store, opts)
	if err != nil {
		t.Fatal(err)
	}
	untrack := track(b)
	t.Cleanup(func() {
		b.Close()
		untrack()
	})
	return b
}

func TestConformance(t *testing.T) {
	needSandbox(t)
	for _, image := range []string{"busybox", imagestore.HostID} {
		t.Run(image, func(t *testing.T) {
			// In parallel: every case gets a backend (a state dir) of its own. A case checks
			// what its backend holds; the step cgroups and network helpers of all of them are
			// checked once they have all closed (a cgroup is named by the process's cookie,
			// whichever backend made it).
			var mu sync.Mutex
			var opened []*Backend
			vmtest.RunParallel(t, func(t *testing.T) vmtest.Fixture {
				b := newBackend(t, Options{})
				mu.Lock()
				opened = append(opened, b)
				mu.Unlock()
				return vmtest.Fixture{Backend: b, Image: image, IsolatedFS: true,
					Leftovers: func() []string { return backendLeftovers(b, proc.Self()) }}
			}, func() []string {
				seen := map[string]bool{}
				var out []string
				for _, b := range opened {
					for _, l := range leftovers(b, proc.Self()) {
						if !seen[l] {
							seen[l] = true
							out = append(out, l)
						}
					}
				}
				return out
			})
		})
	}
}

// leftovers lists what machines of owner left behind: running inits (the backend's spare
// excepted), mounts under the state dir, machine directories, trash, network helpers and
// step cgroups.
func leftovers(b *Backend, owner proc.Owner) []string {
	return append(backendLeftovers(b, owner), processLeftovers(b, owner)...)
}

// backendLeftovers is what of leftovers only b can hold: inits of its state dir, mounts under
// it, machine directories and trash. Another backend in this process never shows here.
func backendLeftovers(b *Backend, owner proc.Owner) []string {
	b.waitBackground() // what Destroy left to delete in the background is not left over
	b.waitRefill()     // a spare on its way is not left over either
	var out []string
	spare := b.sparePID()
	for c, pids := range b.inits() {
		if len(pids) == 1 && pids[0] == spare {
			continue // the spare init, waiting for the next step, holds nothing
		}
		if o, ok := proc.CookieOwner(c); ok && o == owner {
			out = append(out, fmt.Sprintf("sandbox inits %v of cookie %s", pids, c))
		}
	}
	for _, mp := range mountsUnder(b.state) {
		out = append(out, "mount "+mp)
	}
	for _, sub := range []string{"machines", "trash"} {
		names, err := statedir.List(filepath.Join(b.dir, sub))
		if err != nil {
			out = append(out, err.Error())
		}
		for _, n := range names {
			out = append(out, filepath.Join(sub, n))
		}
	}
	return out
}

// processLeftovers is what of leftovers belongs to the process rather than to b: network
// helpers and step cgroups, which carry only the cookie. The idle spares of b and of the
// other backends open in this process (see spares) hold nothing.
func processLeftovers(b *Backend, owner proc.Owner) []string {
	b.waitRefill()
	var out []string
	_, spareCookies := spares(b)
	live := map[int]bool{}
	for _, pids := range b.inits() {
		for _, pid := range pids {
			live[pid] = true
		}
	}
	// A network helper outlives nothing: it serves a live init, or it exits, which it does
	// on its own once the init is gone (its lifeline closes), perhaps a moment later.
	for helper, target := range slirpHelpers() {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", target)); err == nil && !live[target] {
			continue // another state dir's init, in this test process (another backend's spare)
		}
		if !live[target] && !exitsSoon(helper) {
			out = append(out, fmt.Sprintf("slirp4netns %d for the gone init %d", helper, target))
		}
	}
	for _, cg := range b.cg.list(func(c string) bool { o, _ := proc.CookieOwner(c); return o == owner && !spareCookies[c] }) {
		out = append(out, "cgroup "+cg)
	}
	return out
}

func spec(cmd string, env ...string) vm.Spec {
	return vm.Spec{Image: "busybox", Cmd: cmd, Env: append(append([]string{}, vm.BaseEnv...), env...),
		Owner: vm.Owner{RunID: "t", PID: os.Getpid()}}
}

func childSpec(parent, cmd string) vm.Spec {
	s := spec(cmd)
	s.Image, s.Parent = "", parent
	return s
}

// resolved returns s with its image resolved.
func resolved(t testing.TB, b *Backend, s vm.Spec) vm.Spec {
	t.Helper()
	if s.Image != "" {
		id, err := b.ResolveImage(context.Background(), s.Image)
		if err != nil {
			t.Fatal(err)
		}
		s.Image = id
	}
	return s
}

// create makes a machine and registers its Destroy.
func create(t testing.TB, b *Backend, s vm.Spec) *machine {
	t.Helper()
	m, err := b.Create(context.Background(), resolved(t, b, s))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return m.(*machine)
}

// mustRun runs a machine of s to exit 0 and returns it with its stdout.
func mustRun(t testing.TB, b *Backend, s vm.Spec) (*machine, string) {
	t.Helper()
	m := create(t, b, s)
	var out, errOut bytes.Buffer
	code, err := m.Run(context.Background(), &out, &errOut)
	if err != nil || code != 0 {
		t.Fatalf("%q: exit %d, %v, stderr %q", s.Cmd, code, err, errOut.String())
	}
	return m, out.String()
}

// commit commits m and registers the snapshot's removal.
func commit(t testing.TB, b *Backend, m *machine, ephemeral bool) string {
	t.Helper()
	id, err := m.Commit(context.Background(), ephemeral)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	t.Cleanup(func() { b.RemoveSnapshot(context.Background(), id) })
	return id
}

// slirpHelpers maps this process's slirp4netns helpers to the init PIDs they serve.
func slirpHelpers() map[int]int {
	out := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		args, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		words := strings.Split(strings.TrimSuffix(string(args), "\x00"), "\x00")
		if len(words) < 3 || filepath.Base(words[0]) != "slirp4netns" {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) < 2 || f[1] != strconv.Itoa(os.Getpid()) {
			continue // another process's helper
		}
		helper, err1 := strconv.Atoi(e.Name())
		target, err2 := strconv.Atoi(words[len(words)-2])
		if err1 == nil && err2 == nil {
			out[helper] = target
		}
	}
	return out
}

// exitsSoon reports whether pid exits within hangGuard, waiting on a pidfd.
func exitsSoon(pid int) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // gone already
	}
	defer unix.Close(fd)
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(hangGuard.Milliseconds()))
	return err == nil && n == 1
}
