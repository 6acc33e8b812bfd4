package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
)

// artifactsPipeline: build writes random bytes (so a copy from the wrong snapshot cannot
// match), their sha256 as computed inside the machine, a directory, and symlinks out of the
// workspace (to a file, to a directory, through a directory) and inside it; fails writes
// what its pattern names and fails. build is cached, so the second run is a hit.
func artifactsPipeline(img string) string {
	sep := ""
	if img != "" {
		sep = ","
	}
	return graph(0, []string{
		stepJSON("build", `mkdir -p dist/sub && head -c 100000 /dev/urandom > dist/app.bin && sha256sum dist/app.bin > dist/app.sha &&
			echo nested > dist/sub/n.txt && ln -s ../../.. dist/sub/up && ln -s /etc/passwd dist/passwd && ln -s /etc dist/etc &&
			ln -s app.bin dist/latest && echo src > src.txt`,
			img+sep+`"cache":{"policy":"forever","env_keys":[]},"artifacts":["dist/*","dist/etc/passwd","/workspace/dist/sub"]`),
		stepJSON("fails", `echo x > out.txt; exit 3`, img+sep+`"artifacts":["out.txt"]`),
	}, "")
}

type artifactRun struct {
	build     string // the build id
	artifacts map[string]events.StepArtifact
	hit       bool
	stderr    string
}

// readArtifactRun reads a run's JSON events: its build, whether the build step was a cache
// hit, its artifacts (only the build step may have any: a failed step copies nothing) and the
// build step's log after the run's stderr.
func readArtifactRun(t *testing.T, stdout, stderr string) artifactRun {
	t.Helper()
	ar := artifactRun{artifacts: map[string]events.StepArtifact{}, stderr: stderr}
	ids := map[string]string{}
	for _, ev := range parseEvents(t, stdout) {
		switch {
		case ev.BuildStart != nil:
			ar.build = ev.BuildStart.RunID
		case ev.StepQueued != nil:
			ids[ev.StepQueued.StepID] = ev.StepQueued.Key
		case ev.StepCacheHit != nil:
			ar.hit = ids[ev.StepCacheHit.StepID] == "build"
		case ev.StepArtifact != nil:
			if k := ids[ev.StepArtifact.StepID]; k != "build" {
				t.Errorf("step %s has artifact %s: a failed step copies nothing", k, ev.StepArtifact.Path)
			}
			ar.artifacts[ev.StepArtifact.Path] = *ev.StepArtifact
		case ev.StepLog != nil && ids[ev.StepLog.StepID] == "build":
			ar.stderr += ev.StepLog.Line + "\n"
		}
	}
	return ar
}

func TestArtifacts(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			img := `"image":"ubuntu:24.04"`
			if bc.name == "host" {
				img = ""
			}
			writeTree(t, e.srcDir, map[string]string{".hm/ci.json": artifactsPipeline(img)})
			run := func() artifactRun {
				t.Helper()
				r := e.run(append([]string{"run", "-k", "--format", "json"}, bc.args...)...)
				if r.code != 1 {
					t.Fatalf("exit %d, want 1 (fails fails):\n%s\n%s", r.code, r.stderr, r.stdout)
				}
				if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
					t.Errorf("left behind: %v", left)
				}
				return readArtifactRun(t, r.stdout, r.stderr)
			}
			first := run()
			second := run()
			if first.hit || !second.hit {
				t.Fatalf("cache hits: first %v, second %v; want false, true", first.hit, second.hit)
			}
			for _, ar := range []artifactRun{first, second} {
				checkArtifacts(t, e.srcDir, ar)
			}
			// The hit's artifacts are the cached snapshot's: the same random bytes.
			if a, b := first.artifacts["dist/app.bin"].SHA256, second.artifacts["dist/app.bin"].SHA256; a != b {
				t.Errorf("the cache hit's dist/app.bin has sha256 %s, the run's %s", b, a)
			}
			// Nothing was written outside the artifacts directory: the source dir holds the
			// pipeline and the two builds' directories only.
			var written []string
			_ = filepath.WalkDir(e.srcDir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(e.srcDir, p)
					if !strings.HasPrefix(rel, filepath.Join(".hm", "artifacts", first.build)) &&
						!strings.HasPrefix(rel, filepath.Join(".hm", "artifacts", second.build)) && rel != ".hm/ci.json" {
						written = append(written, rel)
					}
				}
				return nil
			})
			if len(written) > 0 {
				t.Errorf("written outside the builds' artifacts directories: %v", written)
			}
			// hm logs lists them.
			l := e.run("logs", second.build)
			if !strings.Contains(l.stdout, "[build] ↓ artifact dist/app.bin (97.7 KiB, sha256 "+second.artifacts["dist/app.bin"].SHA256[:12]+")") {
				t.Errorf("hm logs does not list the artifact:\n%s", l.stdout)
			}
		})
	}
}

// checkArtifacts checks one build's artifacts: the events, the files and the manifest agree,
// the bytes are the machine's (its own sha256sum), and every symlink was refused.
func checkArtifacts(t *testing.T, srcDir string, ar artifactRun) {
	t.Helper()
	dir := filepath.Join(srcDir, ".hm", "artifacts", ar.build)
	paths := slices.Sorted(func(yield func(string) bool) {
		for p := range ar.artifacts {
			if !yield(p) {
				return
			}
		}
	})
	if d := cmp.Diff([]string{"dist/app.bin", "dist/app.sha", "dist/sub/n.txt"}, paths); d != "" {
		t.Errorf("artifacts (-want +got):\n%s", d)
	}
	for p, a := range ar.artifacts {
		b, err := os.ReadFile(filepath.Join(dir, "build", p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		h := sha256.Sum256(b)
		if hex.EncodeToString(h[:]) != a.SHA256 || int64(len(b)) != a.Size {
			t.Errorf("%s: %d bytes sha256 %x on disk, the event says %d bytes %s", p, len(b), h, a.Size, a.SHA256)
		}
	}
	sha, _ := os.ReadFile(filepath.Join(dir, "build", "dist", "app.sha"))
	if inside := strings.Fields(string(sha)); len(inside) == 0 || inside[0] != ar.artifacts["dist/app.bin"].SHA256 {
		t.Errorf("sha256sum inside the machine says %q, the copy's is %s", sha, ar.artifacts["dist/app.bin"].SHA256)
	}
	var m struct {
		Build string `json:"build"`
		Steps []struct {
			Key   string                `json:"key"`
			Dir   string                `json:"dir"`
			Files []events.StepArtifact `json:"files"`
		} `json:"steps"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.Build != ar.build || len(m.Steps) != 1 || m.Steps[0].Key != "build" || m.Steps[0].Dir != "build" || len(m.Steps[0].Files) != len(ar.artifacts) {
		t.Errorf("manifest %s", data)
	}
	for _, f := range m.Steps[0].Files {
		if a := ar.artifacts[f.Path]; a.SHA256 != f.SHA256 || a.Size != f.Size {
			t.Errorf("manifest lists %+v, the event %+v", f, a)
		}
	}
	// No symlink left the machine, and each was said to be refused.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink != 0 {
			t.Errorf("a symlink was copied: %s", p)
		}
		return nil
	})
	for _, p := range []string{"dist/passwd", "dist/etc", "dist/latest", "dist/sub/up"} {
		if !strings.Contains(ar.stderr, `artifact "`+p+`" is a symlink: not copied`) {
			t.Errorf("no refusal of %s in the step's log:\n%s", p, ar.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "fails")); err == nil {
		t.Error("the failed step has an artifacts directory")
	}
}

// --artifacts moves them; the step's key is escaped into one directory name; pruning the
// build's record removes them.
func TestArtifactsDirFlag(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{
		stepJSON("a/b", "echo hi > out.txt", `"artifacts":["out.txt"]`),
	}, "")})
	out := filepath.Join(t.TempDir(), "arts")
	r := e.run("run", "--backend", "host", "--artifacts", out)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	got, _ := filepath.Glob(filepath.Join(out, "*", "a%2Fb", "out.txt"))
	if len(got) != 1 {
		t.Fatalf("artifacts under %s: %v\n%s", out, got, r.stderr)
	}
	if b, _ := os.ReadFile(got[0]); string(b) != "hi\n" {
		t.Errorf("out.txt holds %q", b)
	}
	if !strings.Contains(r.stderr, "hm: artifacts in "+filepath.Dir(filepath.Dir(got[0]))) {
		t.Errorf("the run does not say where the artifacts are:\n%s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.srcDir, ".hm", "artifacts")); err == nil {
		t.Error(".hm/artifacts written despite --artifacts")
	}
	// Pruning the build's record removes its artifacts, and only them.
	if p := e.run("builds", "prune", "--keep", "0"); p.code != 0 {
		t.Fatalf("hm builds prune: exit %d\n%s", p.code, p.stderr)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(got[0]))); !os.IsNotExist(err) {
		t.Errorf("the pruned build's artifacts are still there: %v", err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("the artifacts directory itself went: %v", err)
	}
}
