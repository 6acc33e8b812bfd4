package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/testutil"
)

// examples lists every directory of examples/ with the tools its pipeline needs and the steps
// it has.
var examples = map[string]struct {
	tools []string
	steps []string
}{
	"go":      {[]string{"go"}, []string{"deps", "vet", "test", "build", "smoke"}},
	"node":    {[]string{"node", "npm"}, []string{"install", "test", "build"}},
	"python":  {[]string{"python3"}, []string{"compile", "test", "report"}},
	"fan-out": {nil, []string{"prepare", "shard-1", "shard-2", "shard-3", "total"}},
	"go-sdk":  {[]string{"go"}, []string{"prepare", "shard-1", "shard-2", "shard-3", "total"}},
	"hello":   {nil, []string{"toolchain", "build", "test", "lint", "report"}},
}

func exampleDir(name string) string {
	return filepath.Join(testutil.RepoRoot(), "examples", name)
}

func TestEveryExampleIsTested(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join(testutil.RepoRoot(), "examples"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := examples[e.Name()]; e.IsDir() && !ok {
			t.Errorf("examples/%s is not in e2e/examples_test.go", e.Name())
		}
	}
}

// Each example runs green on the host backend, offline, as the README says.
func TestExamples(t *testing.T) {
	for name, ex := range examples {
		t.Run(name, func(t *testing.T) {
			for _, tool := range ex.tools {
				if _, err := exec.LookPath(tool); err != nil {
					t.Skipf("examples/%s needs %s, which is not installed: %v", name, tool, err)
				}
			}
			e := newEnv(t)
			v := passed(t, e.run("run", "-d", exampleDir(name), "--backend", "host", "--format", "json"))
			var got []string
			for _, key := range ex.steps {
				if _, ok := v.kinds[key]; ok {
					got = append(got, key)
				}
			}
			if diff := cmp.Diff(ex.steps, got); diff != "" || len(v.kinds) != len(ex.steps) {
				t.Errorf("steps run (-want +got):\n%s(%d steps ran)", diff, len(v.kinds))
			}
		})
	}
}

// The Go SDK example is the fan-out example's twin: same IR, byte for byte.
func TestGoSDKExampleIsFanOutTwin(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("needs go: %v", err)
	}
	e := newEnv(t)
	yamlIR := e.run("render", "-d", exampleDir("fan-out"))
	goIR := e.run("render", "-d", exampleDir("go-sdk"))
	if yamlIR.code != 0 || goIR.code != 0 {
		t.Fatalf("render: exit %d and %d\n%s%s", yamlIR.code, goIR.code, yamlIR.stderr, goIR.stderr)
	}
	if diff := cmp.Diff(yamlIR.stdout, goIR.stdout); diff != "" {
		t.Errorf("fan-out (YAML) and go-sdk (Go) render differently (-yaml +go):\n%s", diff)
	}
}
