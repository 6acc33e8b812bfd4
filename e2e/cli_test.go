package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const onePipeline = `{"version":"0","graph":{"nodes":[{"step":{"key":"hello","cmd":"echo hi"}}],"edges":[]}}`

func TestDiscoveryAndCommands(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{
		".hm/ci.json":      onePipeline,
		".hm/release.json": `{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"true"}},{"step":{"key":"b","cmd":"true"}}],"edges":[]}}`,
	})
	r := e.run("pipelines")
	want := "SLUG     SOURCE            STEPS\nci       .hm/ci.json       1\nrelease  .hm/release.json  2\n"
	if diff := cmp.Diff(want, r.stdout); diff != "" || r.code != 0 {
		t.Errorf("hm pipelines exit %d (-want +got):\n%s", r.code, diff)
	}
	r = e.run("render", "ci")
	if r.stdout != onePipeline || r.code != 0 {
		t.Errorf("hm render ci = %q (exit %d)", r.stdout, r.code)
	}
	r = e.run("run", "--backend", "host")
	if r.code != 2 || !strings.Contains(r.stderr, "error[pipeline_ambiguous]") || !strings.Contains(r.stderr, "ci, release") {
		t.Errorf("ambiguous run: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	r = e.run("run", "nope", "--backend", "host")
	if r.code != 2 || !strings.Contains(r.stderr, `no pipeline "nope"`) || !strings.Contains(r.stderr, "  fix    ") {
		t.Errorf("unknown pipeline: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	r = e.run("run", "ci", "--backend", "host")
	if r.code != 0 || !strings.Contains(r.stderr, "[hello] hi") {
		t.Errorf("hm run ci: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	r = e.run("version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hm ") {
		t.Errorf("hm version: %q", r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	e := newEnv(t)
	ir := e.writeIR("p.json", onePipeline)
	tests := []struct {
		args    []string
		code    int
		mention string
	}{
		{[]string{"run", "--file", ir, "--bogus"}, 2, "unknown flag"},
		{[]string{"run", "--file", ir, "--format", "xml"}, 2, `unknown output format "xml"`},
		{[]string{"run", "--file", ir, "--map-image", "nofrom"}, 2, "--map-image"},
		{[]string{"run", "--file", ir, "-e", "=x"}, 2, "-e"},
		{[]string{"run", "--file", ir, "--timeout", "soon"}, 2, "--timeout"},
		{[]string{"run", "--file", ir, "--parallelism", "-1"}, 2, "parallelism"},
		{[]string{"run", "--file", ir, "--backend", "kvm"}, 2, `unknown backend "kvm"`},
		{[]string{"run", "--file", ir, "--backend", "cloud"}, 2, "needs the hm server's URL"},
		{[]string{"run", "--file", "/does/not/exist.json"}, 2, "cannot read"},
		{[]string{"run", "--file", ir, "-d", "/does/not/exist"}, 2, "does not exist"},
		{[]string{"run"}, 2, "error[no_pipeline]"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := e.run(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.mention) || !strings.HasPrefix(r.stderr, "error[") {
				t.Errorf("exit %d (want %d), stderr:\n%s", r.code, tt.code, r.stderr)
			}
		})
	}
}

// The workspace honours .gitignore, excludes .git and .hm, and keeps symlinks and empty dirs;
// all state lands under HM_STATE_DIR.
func TestWorkspaceAndStateDir(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{
		".gitignore":        "*.log\nbuild/\n",
		"src/main.c":        "int main;\n",
		"debug.log":         "noise\n",
		"build/out.o":       "obj\n",
		"sub/.gitignore":    "secret.txt\n",
		"sub/secret.txt":    "x\n",
		"sub/kept.txt":      "y\n",
		".git/config":       "[core]\n",
		".git/info/exclude": "local-only\n",
		"local-only":        "z\n",
		".hm/ci.json":       `{"version":"0","graph":{"nodes":[{"step":{"key":"ls","cmd":"find . | sort"}}],"edges":[]}}`,
	})
	if err := os.Symlink("src/main.c", filepath.Join(e.srcDir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(e.srcDir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := e.run("run", "--backend", "host", "--format", "json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	v := view(t, parseEvents(t, r.stdout))
	want := []string{".", "./.gitignore", "./empty", "./link", "./src", "./src/main.c", "./sub", "./sub/.gitignore", "./sub/kept.txt"}
	if diff := cmp.Diff(want, v.lines("ls")); diff != "" {
		t.Errorf("workspace (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(e.stateDir)
	if err != nil || len(entries) == 0 {
		t.Errorf("nothing under HM_STATE_DIR (%v)", err)
	}
}
