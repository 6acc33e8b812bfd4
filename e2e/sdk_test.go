package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sdkPipeline = `package main

import "github.com/hmci/hm/pipeline"

func main() {
	pipeline.Main(pipeline.New("sdk",
		pipeline.Sh("hello", "echo hello from the SDK").Cache(pipeline.OnChange("data.txt")),
	).DefaultImage("host"))
}
`

// A Go pipeline in a repository outside hm's module renders and runs with the SDK of the hm
// binary, offline and with an empty module cache: nothing is fetched, and the repository's
// files are left as they were.
func TestGoSDKOutsideHmsModule(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"own module", map[string]string{"go.mod": "module example.com/x\n\ngo 1.22\n", "main.go": "package main\n\nfunc main() {}\n"}},
		{"module in .hm", map[string]string{".hm/go.mod": "module example.com/ci\n\ngo 1.22\n"}},
		{"no module", map[string]string{"README": "not a Go repository\n"}},
		// A go.work of the user's (say, for editors) does not change what hm renders.
		{"with go.work", map[string]string{"go.mod": "module example.com/x\n\ngo 1.22\n", "go.work": "go 1.22\n\nuse .\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			files := map[string]string{".hm/pipeline.go": sdkPipeline, "data.txt": "x\n"}
			for k, v := range tt.files {
				files[k] = v
			}
			writeTree(t, e.srcDir, files)
			goEnv := []string{"GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local", "GOMODCACHE=" + t.TempDir()}

			r := e.runEnv(goEnv, "pipelines")
			if want := "SLUG  SOURCE           STEPS\nsdk   .hm/pipeline.go  1\n"; r.stdout != want || r.code != 0 {
				t.Fatalf("hm pipelines: exit %d (-want +got):\n%s\nstderr:\n%s", r.code, cmp.Diff(want, r.stdout), r.stderr)
			}
			v := passed(t, e.runEnv(goEnv, "run", "--backend", "host", "--format", "json"))
			if diff := cmp.Diff([]string{"hello from the SDK"}, stepOutput(v.lines("hello"))); diff != "" {
				t.Errorf("hello output (-want +got):\n%s", diff)
			}
			// on_change found data.txt: the program was told the source directory.
			if v := passed(t, e.runEnv(goEnv, "run", "--backend", "host", "--format", "json")); !contains(v.kinds["hello"], "step_cache_hit") {
				t.Errorf("second run was not a cache hit: %v", compact(v.kinds["hello"]))
			}
			got := map[string]string{}
			err := filepath.WalkDir(e.srcDir, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				data, err := os.ReadFile(p)
				rel, _ := filepath.Rel(e.srcDir, p)
				got[filepath.ToSlash(rel)] = string(data)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(files, got); diff != "" {
				t.Errorf("the repository changed (-before +after):\n%s", diff)
			}
		})
	}
}

// `hm sdk path` prints the SDK module hm renders with, which an editor's go.work can use.
func TestSDKPath(t *testing.T) {
	e := newEnv(t)
	r := e.run("sdk", "path")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	dir := r.stdout[:len(r.stdout)-1]
	if rel, err := filepath.Rel(e.stateDir, dir); err != nil || filepath.Dir(rel) != "sdk" {
		t.Errorf("sdk path %q is not under the state dir %s", dir, e.stateDir)
	}
	for _, f := range []string{"go.mod", "pipeline/pipeline.go"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("sdk path: %v", err)
		}
	}
}

// stepOutput drops hm's own lines (the cache-miss explanation) from a step's log.
func stepOutput(lines []string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "hm: ") {
			out = append(out, l)
		}
	}
	return out
}
