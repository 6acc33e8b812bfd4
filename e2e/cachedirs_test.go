package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cache_dirs through the binary on every backend: what a step writes to its cache dir is
// there in the next run's step, absent from the committed snapshot, shared by concurrent
// steps without loss; hm cache dirs lists and clears it.
func TestCacheDir(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			// The host backend's path is the host's own (only the mount is private): a path
			// of this test's alone.
			dir := "/var/cache/hm-e2e"
			if !bc.isolated {
				dir = filepath.Join("/tmp", fmt.Sprintf("hm-e2e-cachedir-%d", os.Getpid()))
				t.Cleanup(func() { os.Remove(dir) })
			}
			cd := fmt.Sprintf(`"cache_dirs":[%q]`, dir)
			img := `"image":"ubuntu:24.04",` + cd
			const writers, files = 3, 100
			steps := []string{
				// Not cached: it runs every build and says what the last one left.
				stepJSON("count", fmt.Sprintf(`n=$(cat %[1]s/count 2>/dev/null || echo 0); echo seen=$n; echo $((n+1)) > %[1]s/count`, dir), img),
				// Cached: its snapshot is committed; the child starts from it without the
				// cache dir, and must not find its files.
				stepJSON("snap", fmt.Sprintf(`echo secret > %s/in-cache-only && echo kept > in-workspace`, dir),
					img+`,"cache":{"policy":"forever","env_keys":[]}`),
				stepJSON("child", fmt.Sprintf(`cat in-workspace; echo entries=$(ls -A %s 2>/dev/null | wc -l)`, dir), ""),
			}
			var edges []string
			edges = append(edges, `[1,2,"builds_in"]`)
			for i := range writers {
				steps = append(steps, stepJSON(fmt.Sprintf("w%d", i), fmt.Sprintf(
					`for j in $(seq %[2]d); do echo %[3]d-$j > %[1]s/w%[3]d-$j; echo %[3]d > %[1]s/s.tmp%[3]d && mv %[1]s/s.tmp%[3]d %[1]s/shared; done`,
					dir, files, i), img))
				edges = append(edges, fmt.Sprintf(`[%d,%d,"depends_on"]`, 3+i, 3+writers))
			}
			steps = append(steps, stepJSON("check", fmt.Sprintf(
				`echo files=$(cat %[1]s/w* | sort -u | wc -l) tmp=$(ls %[1]s | grep -c tmp) shared=$(cat %[1]s/shared)`, dir), img))
			writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, steps, strings.Join(edges, ","))})

			run := func() stepView {
				t.Helper()
				r := e.run(append([]string{"run", "--format", "json", "--parallelism", "4"}, bc.args...)...)
				if r.code != 0 {
					t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
				}
				return view(t, parseEvents(t, r.stdout))
			}
			line := func(v stepView, key string) string { return strings.Join(v.lines(key), "\n") }
			wantCheck := fmt.Sprintf("files=%d tmp=0 shared=", writers*files)

			v := run()
			if got := line(v, "count"); got != "seen=0" {
				t.Errorf("first run: count says %q, want seen=0", got)
			}
			if got := line(v, "child"); got != "kept\nentries=0" {
				t.Errorf("first run: child of the cached step says %q, want its workspace file and an empty cache dir", got)
			}
			if got := line(v, "check"); !strings.HasPrefix(got, wantCheck) {
				t.Errorf("first run: after %d concurrent writers: %q, want %q<one of them>", writers, got, wantCheck)
			}

			v = run()
			if got := line(v, "count"); got != "seen=1" {
				t.Errorf("second run: count says %q, want seen=1 (the first run's file)", got)
			}
			if got := line(v, "child"); got != "kept\nentries=0" {
				t.Errorf("second run: child of the cached step says %q", got)
			}
			if got := line(v, "check"); !strings.HasPrefix(got, wantCheck) {
				t.Errorf("second run: %q, want %q<one of them>", got, wantCheck)
			}
			if bc.name == "sandbox" {
				// The committed layers hold nothing written to the cache dir.
				_ = filepath.WalkDir(filepath.Join(e.stateDir, "sandbox", "layers"), func(p string, d fs.DirEntry, err error) error {
					if err == nil && d.Name() == "in-cache-only" {
						t.Errorf("a snapshot layer holds the cache dir's file: %s", p)
					}
					return nil
				})
			}
			if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}

			r := e.run("cache", "dirs", "ls", "--format", "json")
			var listed []struct {
				ID, Backend, Org, Pipeline, Path string
				SizeBytes                        int64 `json:"size_bytes"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || r.code != 0 {
				t.Fatalf("cache dirs ls --format json: exit %d, %v\n%s", r.code, err, r.stdout)
			}
			backend := bc.args[1]
			if len(listed) != 1 || listed[0].Pipeline != "ci" || listed[0].Path != dir || listed[0].Backend != backend ||
				listed[0].Org != "default" || listed[0].SizeBytes < writers*files {
				t.Errorf("cache dirs ls: %+v, want one %s directory of pipeline ci at %s holding the writers' files", listed, backend, dir)
			}
			if r := e.run("cache", "dirs", "ls"); !strings.Contains(r.stdout, dir) || !strings.Contains(r.stdout, "ci") {
				t.Errorf("cache dirs ls:\n%s", r.stdout)
			}
			// Prune keeps the most recently used / the recently used ones.
			for _, args := range [][]string{{"--keep", "1"}, {"--older-than", "1h"}} {
				if r := e.run(append([]string{"cache", "dirs", "prune"}, args...)...); r.code != 0 || !strings.Contains(r.stderr, "removed 0 cache directories") {
					t.Errorf("cache dirs prune %v: exit %d: %s", args, r.code, r.stderr)
				}
			}
			if r := e.run("cache", "dirs", "clean"); r.code != 0 || !strings.Contains(r.stderr, "removed 1 cache directories") {
				t.Errorf("cache dirs clean: exit %d: %s", r.code, r.stderr)
			}
			if backend == "docker" {
				out, err := exec.Command("docker", "volume", "ls", "-q", "--filter", "label=dev.hm.state="+e.stateDir).Output()
				if err != nil || strings.TrimSpace(string(out)) != "" {
					t.Errorf("volumes left after clean: %q, %v", out, err)
				}
			}
			if v := run(); line(v, "count") != "seen=0" {
				t.Errorf("after clean: count says %q, want seen=0", line(v, "count"))
			}
			if r := e.run("cache", "dirs", "clean"); r.code != 0 {
				t.Errorf("final clean: exit %d: %s", r.code, r.stderr)
			}
		})
	}
}
