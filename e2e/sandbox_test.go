package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

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
	for c, pids := range proc.Cookies() {
		if o, ok := proc.CookieOwner(c); ok && !o.Alive() {
			out = append(out, fmt.Sprintf("processes %v of a dead hm", pids))
		}
	}
	return out
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

// --network none cuts the sandbox off: only the loopback interface exists inside.
func TestSandboxNetworkNone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox backend needs root")
	}
	e := newEnv(t)
	doc := graph(0, []string{stepJSON("net", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort", `"image":"host"`)}, "")
	ir := e.writeIR("p.json", doc)
	for _, tt := range []struct {
		network string
		onlyLo  bool
	}{{"none", true}, {"host", false}} {
		r := e.run("run", "--file", ir, "--backend", "sandbox", "--network", tt.network, "--format", "json")
		if r.code != 0 {
			t.Fatalf("--network %s: exit %d\n%s", tt.network, r.code, r.stderr)
		}
		ifaces := view(t, parseEvents(t, r.stdout)).lines("net")
		if got := len(ifaces) == 1 && ifaces[0] == "lo"; got != tt.onlyLo {
			t.Errorf("--network %s: interfaces %v", tt.network, ifaces)
		}
	}
}
