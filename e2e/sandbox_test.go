package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/proc"
)

func init() {
	extraBackendFns = append(extraBackendFns, sandboxBusybox, sandboxHost)
}

// sandboxAvailable reports whether the sandbox backend can run here (root, a static busybox
// for the imported image).
func sandboxAvailable(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("skipping the sandbox backend: needs root (namespaces, overlayfs)")
		return false
	}
	return true
}

// sandboxBusybox runs on a busybox rootfs imported from a tarball with `hm image import`.
func sandboxBusybox(t *testing.T) (backendCase, bool) {
	if !sandboxAvailable(t) {
		return backendCase{}, false
	}
	tarball := busyboxTarball(t)
	return backendCase{
		name:      "sandbox",
		args:      []string{"--backend", "sandbox", "--map-image", "ubuntu:24.04=busybox"},
		leftovers: sandboxLeftovers,
		isolated:  true,
		setup: func(t *testing.T, e *env) {
			if r := e.run("image", "import", tarball, "busybox"); r.code != 0 {
				t.Fatalf("hm image import: exit %d\n%s", r.code, r.stderr)
			}
		},
	}, true
}

// sandboxHost runs on the `host` pseudo-image: the host's root filesystem, read-only.
func sandboxHost(t *testing.T) (backendCase, bool) {
	if !sandboxAvailable(t) {
		return backendCase{}, false
	}
	return backendCase{
		name:      "sandbox-host-image",
		args:      []string{"--backend", "sandbox", "--map-image", "ubuntu:24.04=host"},
		leftovers: sandboxLeftovers,
		isolated:  true,
	}, true
}

var (
	busyboxOnce sync.Once
	busyboxTar  string
	busyboxErr  string
)

// busyboxTarball builds a rootfs tarball from the static busybox once per test binary.
func busyboxTarball(t *testing.T) string {
	t.Helper()
	busyboxOnce.Do(func() {
		bb, err := exec.LookPath("busybox")
		if err != nil {
			busyboxErr = "no busybox (apt-get install busybox-static)"
			return
		}
		root, err := os.MkdirTemp("", "hm-e2e-busybox")
		if err != nil {
			busyboxErr = err.Error()
			return
		}
		for _, d := range []string{"bin", "tmp", "opt", "etc", "root", "workspace"} {
			os.MkdirAll(filepath.Join(root, d), 0o755)
		}
		data, err := os.ReadFile(bb)
		if err == nil {
			err = os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755)
		}
		if err != nil {
			busyboxErr = err.Error()
			return
		}
		list, err := exec.Command(bb, "--list").Output()
		if err != nil {
			busyboxErr = "busybox --list: " + err.Error()
			return
		}
		for _, app := range strings.Fields(string(list)) {
			if app != "busybox" {
				os.Symlink("busybox", filepath.Join(root, "bin", app))
			}
		}
		busyboxTar = root + ".tar"
		if out, err := exec.Command("tar", "-C", root, "-cf", busyboxTar, ".").CombinedOutput(); err != nil {
			busyboxErr = "tar: " + string(out)
		}
	})
	if busyboxErr != "" {
		t.Fatalf("building the busybox rootfs: %s", busyboxErr)
	}
	return busyboxTar
}

// sandboxLeftovers lists what sandbox builds of a state dir left: machines, trash, ephemeral
// snapshots, mounts under the state dir, and step processes of hm processes that are gone.
func sandboxLeftovers(t *testing.T, stateDir string) []string {
	t.Helper()
	var out []string
	for _, pattern := range []string{"sandbox/machines/*", "sandbox/trash/*", "sandbox/snaps/e-*"} {
		m, _ := filepath.Glob(filepath.Join(stateDir, pattern))
		out = append(out, m...)
	}
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], stateDir) {
				out = append(out, "mount "+f[4])
			}
		}
	}
	tag := stateTag(stateDir)
	for _, p := range sandboxHelpers(t) {
		if p.initCookie != "" {
			// This state dir's inits only (concurrent tests run their own), given a moment to
			// die with their hm (the parent-death signal).
			if o, ok := proc.CookieOwner(p.initCookie); ok && p.initTag == tag && !o.Alive() && !exitsWithin(p.pid, 10*time.Second) {
				out = append(out, fmt.Sprintf("sandbox init %d of a dead hm", p.pid))
			}
			continue
		}
		// A network helper exits on its own once its init is gone: give it a moment, waiting
		// on a pidfd.
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.slirpTarget)); err != nil && !exitsWithin(p.pid, 10*time.Second) {
			out = append(out, fmt.Sprintf("slirp4netns %d for the gone init %d", p.pid, p.slirpTarget))
		}
	}
	return out
}

// sandboxProc is a sandbox init (initCookie set) or a slirp4netns network helper.
type sandboxProc struct {
	pid         int
	initTag     string // the init's state dir, as its marker names it
	initCookie  string
	slirpTarget int
}

// sandboxHelpers lists the sandbox inits (told by their command line and marker memfd,
// "hm-sandbox-init TAG COOKIE") and slirp4netns helpers running on this machine.
func sandboxHelpers(t *testing.T) []sandboxProc {
	t.Helper()
	var out []sandboxProc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		words := strings.Split(strings.TrimSuffix(string(args), "\x00"), "\x00")
		switch {
		case string(args) == "hm-sandbox-init\x00":
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/5", pid))
			if f := strings.Fields(strings.TrimPrefix(link, "/memfd:")); err == nil && len(f) >= 3 {
				out = append(out, sandboxProc{pid: pid, initTag: f[1], initCookie: f[2]})
			}
		case len(words) > 2 && filepath.Base(words[0]) == "slirp4netns":
			if target, err := strconv.Atoi(words[len(words)-2]); err == nil {
				out = append(out, sandboxProc{pid: pid, slirpTarget: target})
			}
		}
	}
	return out
}

// exitsWithin reports whether pid exits within d, waiting on a pidfd.
func exitsWithin(pid int, d time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // gone already
	}
	defer unix.Close(fd)
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(d.Milliseconds()))
	return err == nil && n == 1
}

// Not root: the sandbox backend refuses with sandbox_unavailable (exit 4) and says what to do;
// auto falls back to another backend.
func TestSandboxNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop to an unprivileged user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to run hm unprivileged")
	}
	// t.TempDir's parent is private to root: build world-accessible dirs of our own.
	base, err := os.MkdirTemp("", "hm-e2e-nonroot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &env{t: t, stateDir: filepath.Join(base, "state"), srcDir: filepath.Join(base, "src")}
	for _, d := range []string{base, e.stateDir, e.srcDir, filepath.Dir(hmBin)} {
		os.MkdirAll(d, 0o777)
		os.Chmod(d, 0o777)
	}
	ir := filepath.Join(e.srcDir, "p.json")
	if err := os.WriteFile(ir, []byte(graph(0, []string{stepJSON("hi", "echo hi", `"image":"host"`)}, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(backend string) result {
		c := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", hmBin, "run", "--file", ir, "--backend", backend)
		c.Dir = e.srcDir
		c.Env = append(os.Environ(), "HM_STATE_DIR="+e.stateDir, "CI=true", "HOME="+e.stateDir)
		var out, stderr strings.Builder
		c.Stdout, c.Stderr = &out, &stderr
		c.Run()
		return result{code: c.ProcessState.ExitCode(), stdout: out.String(), stderr: stderr.String()}
	}
	r := run("sandbox")
	if r.code != 4 || !strings.Contains(r.stderr, "error[sandbox_unavailable]") || !strings.Contains(r.stderr, "  fix    ") {
		t.Errorf("unprivileged --backend sandbox: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	// A host-image pipeline under auto skips docker and, without the sandbox, runs on host.
	if r := run("auto"); r.code != 0 || !strings.Contains(r.stderr, "[hi] hi") {
		t.Errorf("unprivileged auto: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// The sandbox's networks: by default a namespace of the step's own whose only interfaces
// are loopback and slirp4netns' tap0 (outbound access, nothing of the host's); --network
// none leaves only loopback; --network host is the host's own namespace.
func TestSandboxNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox backend needs root")
	}
	e := newEnv(t)
	doc := graph(0, []string{stepJSON("net", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort", `"image":"host"`)}, "")
	ir := e.writeIR("p.json", doc)
	hostIfaces := stable(hostInterfaces(t))
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"lo", "tap0"}},
		{[]string{"--network", "private"}, []string{"lo", "tap0"}},
		{[]string{"--network", "none"}, []string{"lo"}},
		{[]string{"--network", "host"}, hostIfaces},
	} {
		args := append([]string{"run", "--file", ir, "--backend", "sandbox", "--format", "json"}, tt.args...)
		r := e.run(args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d\n%s", tt.args, r.code, r.stderr)
		}
		// Docker's veth pairs come and go with concurrent containers: they are left out.
		if diff := cmp.Diff(tt.want, stable(view(t, parseEvents(t, r.stdout)).lines("net"))); diff != "" {
			t.Errorf("%v: interfaces (-want +got):\n%s", tt.args, diff)
		}
	}
	if left := sandboxLeftovers(t, e.stateDir); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// stateTag is how a sandbox init's marker names its state dir (package sandbox's stateTag):
// the first 8 bytes of the sha256 of STATE/sandbox, the state dir's real path.
func stateTag(stateDir string) string {
	dir, err := filepath.EvalSymlinks(stateDir)
	if err != nil {
		dir = stateDir
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	sum := sha256.Sum256([]byte(filepath.Join(dir, "sandbox")))
	return hex.EncodeToString(sum[:8])
}
