package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const hostWarning = "hm: warning: the host backend runs steps on this machine with no isolation"

// threeSteps is a multi-step build: a root and two children starting from its snapshot.
func threeSteps(image string) string {
	return graph(0, []string{
		stepJSON("root", "echo root", `"image":"`+image+`"`),
		stepJSON("a", "echo a", ""),
		stepJSON("b", "echo b", ""),
	}, `[0,1,"builds_in"],[0,2,"builds_in"]`)
}

// The host backend's lack of isolation is said once per build, on stderr, in both output
// formats; the isolating backends say nothing of the kind.
func TestHostBackendWarning(t *testing.T) {
	backends := append([]backendCase{{name: "host", args: []string{"--backend", "host"}}}, extraBackends(t)...)
	for _, bc := range backends {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			ir := e.writeIR("p.json", threeSteps("ubuntu:24.04"))
			want := 0
			if bc.name == "host" {
				want = 1
			}
			for _, format := range []string{"human", "json"} {
				r := e.run(append([]string{"run", "--file", ir, "--format", format, "--no-cache"}, bc.args...)...)
				if r.code != 0 {
					t.Fatalf("exit %d\n%s", r.code, r.stderr)
				}
				if got := strings.Count(r.stderr, hostWarning); got != want {
					t.Errorf("--format %s: the warning %d times, want %d; stderr:\n%s", format, got, want, r.stderr)
				}
				if strings.Contains(r.stdout, "warning") {
					t.Errorf("--format %s: a warning on stdout:\n%s", format, r.stdout)
				}
			}
		})
	}
}

// --backend auto falls back to the host backend when there is no Docker daemon and the
// sandbox may not run (not root): it warns then too, and says why in the same line.
func TestAutoFallbackWarning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs hm as an unprivileged user, which needs root")
	}
	const nobody = 65534
	binDir := t.TempDir() // hmBin's own directory is private to root
	bin := filepath.Join(binDir, "hm")
	data, err := os.ReadFile(hmBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	ir := e.writeIR("p.json", threeSteps("host"))
	for _, d := range []string{binDir, e.stateDir, e.srcDir, filepath.Dir(ir), filepath.Dir(binDir), filepath.Dir(e.stateDir)} {
		os.Chmod(d, 0o755)
	}
	if err := os.Chown(e.stateDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, bin, "run", "--file", ir, "--backend", "auto")
	c.Dir = e.srcDir
	c.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "HM_STATE_DIR=" + e.stateDir, "CI=true", "NO_COLOR=1",
		"DOCKER_HOST=unix:///nonexistent/docker.sock", "XDG_CONFIG_HOME=/nonexistent"}
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("hm run --backend auto as nobody: %v\n%s", err, stderr.String())
	}
	// One line says both: no isolation, and why auto chose it.
	want := hostWarning + " (--backend auto: docker cannot run the `host` image; not root, so no sandbox)\n"
	if got := strings.Count(stderr.String(), want); got != 1 || strings.Count(stderr.String(), "warning") != 1 {
		t.Errorf("the warning %d times, want once %q; stderr:\n%s", got, want, stderr.String())
	}
}
