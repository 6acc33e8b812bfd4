package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/testutil"
)

// runEnv is e.run with extra environment (K=V) for hm.
func (e *env) runEnv(extra []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	c.Env = append(c.Env, extra...)
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

// passed asserts a JSON-format run passed and returns its events by step.
func passed(t *testing.T, r result) stepView {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s\nstdout:\n%s", r.code, r.stderr, truncate(r.stdout))
	}
	v := view(t, parseEvents(t, r.stdout))
	if v.buildEnd == nil || v.buildEnd.ExitCode != 0 {
		t.Fatalf("build did not pass: %+v", v.buildEnd)
	}
	for key, kinds := range v.kinds {
		if v.status[key] != 0 || !contains(kinds, "step_end") && !contains(kinds, "step_cache_hit") {
			t.Errorf("step %s did not pass: %v (exit %d)", key, compact(kinds), v.status[key])
		}
	}
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

const yamlPipeline = `# lineage, a fan-out, ordering, a continue_on_failure barrier and a cache
slug: ci
env: {GREETING: hello}
steps:
  - key: setup
    run: mkdir -p tools && echo "$GREETING" > tools/greeting
    cache: forever
    steps:
      - key: build
        run: cat tools/greeting > out.txt && cat out.txt
        steps:
          - {key: test, run: grep -qx hello out.txt && echo tests pass}
      - {key: lint, run: test -f tools/greeting && echo lint ok, env: {GREETING: bye}}
  - wait: {continue_on_failure: true}
  - key: report
    run: echo "report $GREETING"
`

func TestYAMLPipeline(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.yaml": yamlPipeline, ".hm/other.yml": "steps: [{key: x, run: 'true'}]\n"})

	r := e.run("pipelines")
	want := "SLUG   SOURCE         STEPS\nci     .hm/ci.yaml    5\nother  .hm/other.yml  1\n"
	if diff := cmp.Diff(want, r.stdout); diff != "" || r.code != 0 {
		t.Errorf("hm pipelines exit %d (-want +got):\n%s", r.code, diff)
	}
	r = e.run("render", "ci")
	var doc map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &doc) != nil || doc["version"] != "0" {
		t.Fatalf("hm render ci: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	v := passed(t, e.run("run", "ci", "--backend", "host", "--format", "json"))
	for key, want := range map[string][]string{
		"build": {"hello"}, "test": {"tests pass"}, "lint": {"lint ok"}, "report": {"report hello"},
	} {
		if diff := cmp.Diff(want, v.lines(key)); diff != "" {
			t.Errorf("%s output (-want +got):\n%s", key, diff)
		}
	}
	// The second run reuses setup's snapshot: its key is the same.
	v = passed(t, e.run("run", "ci", "--backend", "host", "--format", "json"))
	if !contains(v.kinds["setup"], "step_cache_hit") {
		t.Errorf("setup was not a cache hit on the second run: %v", compact(v.kinds["setup"]))
	}
}

func TestYAMLErrorsThroughCLI(t *testing.T) {
	tests := []struct {
		name, yaml string
		args       []string
		code       int
		stderr     string
	}{
		{"malformed", "steps:\n  - key: a\n    run: \"echo\n", []string{"run", "--backend", "host"}, 7,
			"error[yaml_syntax]: .hm/ci.yaml:3:10: could not find end character of double-quoted text\n  fix    "},
		{"bad indentation", "steps:\n  - key: a\n    run: echo\n   bad: x\n", []string{"render"}, 7,
			"error[yaml_syntax]: .hm/ci.yaml:4:4: "},
		{"unknown field", "steps:\n  - key: a\n    command: echo\n", []string{"run", "--backend", "host"}, 7,
			"error[yaml_invalid]: .hm/ci.yaml:3:5: unknown field \"command\" in a step\n  fix    "},
		{"cycle", "steps:\n  - {key: a, run: x, after: b}\n  - {key: b, run: y, after: a}\n", []string{"run", "--backend", "host"}, 7,
			"error[ir_cycle]: .hm/ci.yaml: steps form a cycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			writeTree(t, e.srcDir, map[string]string{".hm/ci.yaml": tt.yaml})
			r := e.run(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("exit %d, want %d; stderr:\n%s\nwant it to contain:\n%s", r.code, tt.code, r.stderr, tt.stderr)
			}
			if strings.Contains(r.stdout, "build_start") {
				t.Errorf("an invalid pipeline started a build")
			}
		})
	}
}

func TestInit(t *testing.T) {
	e := newEnv(t)
	r := e.run("init")
	if r.code != 0 || !strings.Contains(r.stdout, "template minimal") {
		t.Fatalf("hm init: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	passed(t, e.run("run", "--backend", "host", "--format", "json"))

	r = e.run("init", "--template", "go")
	if r.code != 2 || !strings.Contains(r.stderr, "error[init_exists]") || !strings.Contains(r.stderr, "  fix    ") {
		t.Errorf("second hm init: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	r = e.run("init", "--template", "cobol", "-d", t.TempDir())
	if r.code != 2 || !strings.Contains(r.stderr, `unknown template "cobol"`) {
		t.Errorf("unknown template: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// Each template runs as is in a tiny project of its kind, with the tools of this machine.
func TestInitTemplatesRun(t *testing.T) {
	projects := map[string]struct {
		tools []string
		files map[string]string
	}{
		"go": {[]string{"go"}, map[string]string{
			"go.mod":       "module example.com/t\n\ngo 1.22\n",
			"main.go":      "package main\n\nfunc main() { println(add(1, 2)) }\n\nfunc add(a, b int) int { return a + b }\n",
			"main_test.go": "package main\n\nimport \"testing\"\n\nfunc TestAdd(t *testing.T) {\n\tif add(1, 2) != 3 {\n\t\tt.Fatal(\"add\")\n\t}\n}\n",
		}},
		"node": {[]string{"node", "npm"}, map[string]string{
			"package.json":     `{"name": "t", "version": "1.0.0", "private": true, "scripts": {"test": "node --test test/"}}` + "\n",
			"test/add.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\ntest('add', () => assert.strictEqual(1 + 2, 3));\n",
		}},
		"python": {[]string{"python3"}, map[string]string{
			"pyproject.toml":    "[project]\nname = \"t\"\nversion = \"0.1.0\"\n",
			"t/__init__.py":     "def add(a, b):\n    return a + b\n",
			"tests/__init__.py": "",
			"tests/test_add.py": "import unittest\n\nfrom t import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n",
		}},
		"rust": {[]string{"cargo"}, map[string]string{
			"Cargo.toml": "[package]\nname = \"t\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
			"src/lib.rs": "/// Adds.\npub fn add(a: i32, b: i32) -> i32 { a + b }\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn add() { assert_eq!(super::add(1, 2), 3); }\n}\n",
		}},
		"c": {[]string{"gcc", "make"}, map[string]string{
			"Makefile": "add: add.c\n\tgcc -o add add.c\n\ntest: add\n\t./add | grep -x 3\n",
			"add.c":    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 1 + 2); return 0; }\n",
		}},
	}
	for name, p := range projects {
		t.Run(name, func(t *testing.T) {
			for _, tool := range p.tools {
				if _, err := exec.LookPath(tool); err != nil && !cargoInHome(tool) {
					t.Skipf("the %s template needs %s, which is not installed: %v", name, tool, err)
				}
			}
			e := newEnv(t)
			writeTree(t, e.srcDir, p.files)
			args := []string{"init"}
			if name == "c" { // not detected from the files
				args = append(args, "--template", "c")
			}
			r := e.run(args...)
			if r.code != 0 || !strings.Contains(r.stdout, "template "+name) {
				t.Fatalf("hm init: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			passed(t, e.run("run", "--backend", "host", "--format", "json"))
		})
	}
}

// cargoInHome reports whether cargo is where the rust template looks for it.
func cargoInHome(tool string) bool {
	if tool != "cargo" {
		return false
	}
	_, err := exec.LookPath("/root/.cargo/bin/cargo")
	return err == nil
}

// A harmont Python pipeline renders through python3 and the harmont package (a stand-in on
// PYTHONPATH here) and runs; without the package, hm says what is missing.
func TestPythonDSLPassThrough(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skipf("needs python3: %v", err)
	}
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.py": `import harmont as hm


@hm.pipeline("ci", env={"CI": "true"})
def ci():
    return [hm.sh("build", "echo built > out.txt"), hm.sh("test", "cat out.txt", builds_in="build"),
            hm.wait(continue_on_failure=True), hm.sh("notify", "echo notified")]
`})
	fake := "PYTHONPATH=" + filepath.Join(testutil.RepoRoot(), "internal", "frontend", "testdata", "pyfake")
	r := e.runEnv([]string{fake}, "pipelines")
	if r.code != 0 || !strings.Contains(r.stdout, "ci    .hm/ci.py  3") {
		t.Errorf("hm pipelines: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	v := passed(t, e.runEnv([]string{fake}, "run", "--backend", "host", "--format", "json"))
	if diff := cmp.Diff([]string{"built"}, v.lines("test")); diff != "" {
		t.Errorf("test output (-want +got):\n%s", diff)
	}

	if exec.Command("python3", "-c", "import harmont").Run() == nil {
		t.Skip("the harmont package is installed here, so it cannot be missing")
	}
	r = e.runEnv([]string{"PYTHONPATH=" + t.TempDir()}, "run", "--backend", "host")
	if r.code != 4 || !strings.Contains(r.stderr, "error[harmont_missing]: .hm/ci.py needs the harmont Python package") ||
		!strings.Contains(r.stderr, "pip install harmont") {
		t.Errorf("missing harmont: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
