package e2e

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/testutil"
)

// runIn is e.run started in dir instead of the source dir.
func (e *env) runIn(dir string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	c.Dir = dir
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("hm %v: %v", args, err)
	}
	return r
}

// `hm --version` and `hm version` print the same line, with the commit the toolchain stamped
// (none in a git worktree, whose .git is a file the go command does not stamp from).
func TestVersion(t *testing.T) {
	e := newEnv(t)
	bi, err := buildinfo.ReadFile(hmBin)
	if err != nil {
		t.Fatal(err)
	}
	commit := "unknown"
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			commit = s.Value[:12]
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := e.run(args...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "hm ") || !strings.Contains(r.stdout, "(commit "+commit) ||
			!strings.HasSuffix(r.stdout, " "+bi.GoVersion+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
			t.Errorf("hm %v: exit %d, %q; want commit %s", args, r.code, r.stdout, commit)
		}
	}
}

// A build with no VCS stamp (a tarball, -buildvcs=false) says "devel" and the commit given
// with -ldflags.
func TestVersionLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hm")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin,
		"-ldflags", "-X github.com/hmci/hm/internal/cli.Commit=0123456789abcdef", "./cmd/hm")
	build.Dir = testutil.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "hm devel (commit 0123456789ab) " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Started in a subdirectory, hm uses the .hm/ above it, as git finds .git: the pipelines, the
// config and the workspace (the directory holding .hm/, not the subdirectory) come from there.
// A repository's top (.git) is a boundary.
func TestRunFromSubdirectory(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{
		".git/HEAD":         "ref: refs/heads/main\n",
		".hm/config.toml":   "backend = \"host\"\n",
		".hm/ci.json":       `{"version":"0","graph":{"nodes":[{"step":{"key":"ls","cmd":"ls; test -f src/deep/file.txt && echo found"}}],"edges":[]}}`,
		"src/deep/file.txt": "x\n",
		"top.txt":           "y\n",
		"nested/.git/HEAD":  "ref: refs/heads/main\n",
		"nested/sub/x.txt":  "z\n",
	})
	sub := filepath.Join(e.srcDir, "src", "deep")
	r := e.runIn(sub, "pipelines")
	if want := "SLUG  SOURCE       STEPS\nci    .hm/ci.json  1\n"; r.code != 0 || r.stdout != want {
		t.Errorf("hm pipelines in src/deep: exit %d (-want +got):\n%s%s", r.code, cmp.Diff(want, r.stdout), r.stderr)
	}
	if r := e.runIn(sub, "render", "ci"); r.code != 0 || !strings.Contains(r.stdout, `"key":"ls"`) {
		t.Errorf("hm render ci in src/deep: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	// No --backend: host comes from the found .hm/config.toml.
	r = e.runIn(sub, "run", "--format", "json")
	v := passed(t, r)
	if diff := cmp.Diff([]string{"nested", "src", "top.txt", "found"}, v.lines("ls")); diff != "" {
		t.Errorf("workspace of a run from src/deep (-want +got):\n%s", diff)
	}
	// -d names a directory the same way.
	if r := e.run("run", "-d", "src", "--format", "json"); r.code != 0 {
		t.Errorf("hm run -d src: exit %d: %s", r.code, r.stderr)
	}
	// A nested repository does not use its parent's pipelines.
	r = e.runIn(filepath.Join(e.srcDir, "nested", "sub"), "run", "--backend", "host")
	if r.code != 2 || !strings.Contains(r.stderr, "error[no_pipeline]: no pipeline found under .hm\n") {
		t.Errorf("run in a nested repository: exit %d, want no_pipeline under its own .hm:\n%s", r.code, r.stderr)
	}
}

// A bad config file's error names it by its path, the user's file as the repository's.
func TestConfigErrorNamesTheFile(t *testing.T) {
	e := newEnv(t)
	home := t.TempDir()
	writeTree(t, e.srcDir, map[string]string{".hm/config.toml": "parallelism = \"many\"\n", ".hm/ci.json": onePipeline})
	writeTree(t, home, map[string]string{"hm/config.toml": "backend = \n"})
	repoFile := filepath.Join(e.srcDir, ".hm", "config.toml")
	userFile := filepath.Join(home, "hm", "config.toml")

	r := e.runEnv([]string{"XDG_CONFIG_HOME=" + home}, "run", "--backend", "host")
	if r.code != 2 || !strings.Contains(r.stderr, "error[config]: invalid config "+userFile+":1:") {
		t.Errorf("bad user config: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if err := os.Remove(userFile); err != nil {
		t.Fatal(err)
	}
	r = e.runIn(filepath.Join(e.srcDir, ".hm"), "run", "--backend", "host")
	if r.code != 2 || !strings.Contains(r.stderr, "error[config]: invalid config "+repoFile) || !strings.Contains(r.stderr, "  fix    ") {
		t.Errorf("bad repository config, run from .hm/: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
