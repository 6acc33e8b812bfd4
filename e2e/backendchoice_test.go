package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// --backend auto runs where the pipeline's images are: an image imported into the sandbox's
// store runs on the sandbox even with a Docker daemon answering, and hm says so once; an
// image that is nowhere is one error naming where it looked, with the fix, exit 4, and
// nothing runs; the `host` pseudo-image on --backend docker is refused before the build.
func TestAutoChoosesBackendWithImage(t *testing.T) {
	if !sandboxAvailable(t) {
		t.Skip("needs the sandbox backend (root)")
	}
	if _, ok := dockerBackend(t); !ok {
		t.Skip("needs a Docker daemon, to show that auto does not pick it for an image it lacks")
	}
	const nowhere = "127.0.0.1:1/hm-e2e/nowhere:v1" // nothing listens on port 1: pulls fail at once
	tests := []struct {
		name, image string
		args        []string
		code        int
		// once: each of these appears exactly once on stderr; absent: never.
		once   []string
		absent []string
	}{
		{name: "imported image picks the sandbox", image: "busybox", code: 0,
			once: []string{"hm: backend sandbox: image busybox is in the sandbox's image store (docker has no such image)\n", "[a] ran\n"}},
		{name: "docker's image picks docker", image: testImage, code: 0,
			once: []string{"hm: backend docker: image " + testImage + " is in the Docker daemon\n"}},
		{name: "image nowhere", image: nowhere, code: 4,
			once: []string{
				"error[image_not_found]: image \"" + nowhere + "\" is in neither the Docker daemon nor the sandbox's image store and could not be pulled (docker: ",
				"\n  fix    import it with `hm image import FILE " + nowhere + "` (sandbox) or `docker load -i FILE.tar` (docker), or substitute an image you have with --map-image " + nowhere + "=IMAGE\n",
			},
			absent: []string{"[a]", "hm: backend"}},
		{name: "host image on docker", image: "host", args: []string{"--backend", "docker"}, code: 7,
			once: []string{
				"error[image_not_found]: the image `host` is the host's root filesystem, which the docker backend cannot run\n" +
					"  fix    run it with --backend sandbox (as root) or --backend host, or give docker an image with --map-image host=IMAGE\n",
			},
			absent: []string{"[a]"}},
	}
	tarball := busyboxTarball(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if r := e.run("image", "import", tarball, "busybox"); r.code != 0 {
				t.Fatalf("hm image import: exit %d\n%s", r.code, r.stderr)
			}
			doc := graph(0, []string{stepJSON("a", "echo ran", `"image":"`+tt.image+`"`)}, "")
			r := e.run(append([]string{"run", "--file", e.writeIR("p.json", doc), "--no-cache"}, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
			}
			for _, s := range tt.once {
				if n := strings.Count(r.stderr, s); n != 1 {
					t.Errorf("stderr has %q %d times, want once:\n%s", s, n, r.stderr)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(r.stderr, s) {
					t.Errorf("stderr has %q:\n%s", s, r.stderr)
				}
			}
			// The message is said once: no step log or chain_failed line repeats it.
			if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code != 0 && len(lines) != 2 {
				t.Errorf("an error of %d lines, want the error and its fix:\n%s", len(lines), r.stderr)
			}
		})
	}
}

// nobodyEnv is an env whose directories the unprivileged user 65534 may use, and a copy of
// hm it may run (t.TempDir's parent and hmBin's directory are private to root).
func nobodyEnv(t *testing.T) (*env, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop to an unprivileged user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux) to run hm unprivileged")
	}
	base, err := os.MkdirTemp("", "hm-e2e-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &env{t: t, stateDir: filepath.Join(base, "state"), srcDir: filepath.Join(base, "src")}
	for _, d := range []string{base, e.stateDir, e.srcDir} {
		os.MkdirAll(d, 0o777)
		os.Chmod(d, 0o777)
	}
	os.Chmod(base, 0o755)
	bin := filepath.Join(base, "hm")
	data, err := os.ReadFile(hmBin)
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return e, bin
}

// runAsNobody runs hm as uid 65534 with env (on top of a minimal environment).
func (e *env) runAsNobody(bin string, env []string, args ...string) result {
	e.t.Helper()
	c := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", bin}, args...)...)
	c.Dir = e.srcDir
	c.Env = append([]string{"PATH=/usr/bin:/bin", "CI=true", "NO_COLOR=1", "XDG_CONFIG_HOME=/nonexistent"}, env...)
	var out, stderr strings.Builder
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			e.t.Fatalf("hm %v: %v", args, err)
		}
	}
	return result{code: c.ProcessState.ExitCode(), stdout: out.String(), stderr: stderr.String()}
}

// Not root and no Docker daemon: auto falls back to the host backend, and its one warning
// says why.
func TestAutoFallbackSaysWhy(t *testing.T) {
	e, bin := nobodyEnv(t)
	ir := filepath.Join(e.srcDir, "p.json")
	if err := os.WriteFile(ir, []byte(threeSteps("ubuntu:24.04")), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.runAsNobody(bin, []string{"HM_STATE_DIR=" + e.stateDir, "HOME=" + e.stateDir, "DOCKER_HOST=unix:///nonexistent/docker.sock"},
		"run", "--file", ir, "--backend", "auto")
	want := hostWarning + " (--backend auto: no Docker daemon answers at unix:///nonexistent/docker.sock; not root, so no sandbox)\n"
	if r.code != 0 || strings.Count(r.stderr, want) != 1 || strings.Count(r.stderr, "warning") != 1 {
		t.Errorf("exit %d; want exit 0 and once %q, stderr:\n%s", r.code, want, r.stderr)
	}
}

// A state dir hm cannot write serves a build whose steps are all cached (with a warning); any
// other build is error[state_dir], exit 4, with the fix, before anything runs; `hm cache ls`
// only reads, and works on it.
func TestReadOnlyStateDir(t *testing.T) {
	e, bin := nobodyEnv(t)
	doc := graph(0, []string{stepJSON("a", "echo ran", `"image":"host","cache":{"policy":"forever","env_keys":[]}`)}, "")
	ir := filepath.Join(e.srcDir, "p.json")
	if err := os.WriteFile(ir, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	uncached := filepath.Join(e.srcDir, "uncached.json")
	if err := os.WriteFile(uncached, []byte(graph(0, []string{stepJSON("u", "echo ran", `"image":"host"`)}, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	// Root fills the cache, then the state dir is root's alone: read-only to nobody.
	if r := e.run("run", "--file", ir, "--backend", "host"); r.code != 0 {
		t.Fatalf("filling the cache: exit %d\n%s", r.code, r.stderr)
	}
	os.Remove(filepath.Join(e.stateDir, "registry.db.lock")) // reading must not need it
	if err := os.Chmod(e.stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	unwritableHome := filepath.Join(e.stateDir, "home") // under root's 0755 state dir
	os.Mkdir(unwritableHome, 0o755)
	tests := []struct {
		name string
		env  []string
		ir   string
		dir  string // the state dir the error names
	}{
		{"HM_STATE_DIR read-only, a step to run", []string{"HM_STATE_DIR=" + e.stateDir, "HOME=/nonexistent"}, uncached, e.stateDir},
		{"unwritable HOME", []string{"HOME=" + unwritableHome}, ir, filepath.Join(unwritableHome, ".cache", "hm")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.runAsNobody(bin, tt.env, "run", "--file", tt.ir, "--backend", "host")
			wantErr := "error[state_dir]: hm cannot write its state directory " + tt.dir + ": "
			wantFix := "\n  fix    set HM_STATE_DIR to a writable directory with free space (hm keeps snapshots and the cache there)\n"
			if r.code != 4 || !strings.Contains(r.stderr, wantErr) || !strings.HasSuffix(r.stderr, wantFix) || strings.Contains(r.stderr, "[u] ran") {
				t.Errorf("exit %d, want 4 and %q…%q, nothing run; stderr:\n%s", r.code, wantErr, wantFix, r.stderr)
			}
		})
	}
	t.Run("HM_STATE_DIR read-only, all cached", func(t *testing.T) {
		r := e.runAsNobody(bin, []string{"HM_STATE_DIR=" + e.stateDir, "HOME=/nonexistent"}, "run", "--file", ir, "--backend", "host")
		if r.code != 0 || !strings.Contains(r.stderr, "[a] cached") || !strings.Contains(r.stderr, "only cached steps can be used") {
			t.Errorf("exit %d, want 0, a hit and the warning; stderr:\n%s", r.code, r.stderr)
		}
	})
	r := e.runAsNobody(bin, []string{"HM_STATE_DIR=" + e.stateDir}, "cache", "ls")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 2 || !strings.Contains(lines[1], " a ") {
		t.Errorf("hm cache ls on a read-only state dir: exit %d, want the header and step a's entry; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}
