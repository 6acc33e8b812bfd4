package sdk

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/modfile"

	"github.com/hmci/hm/internal/testutil"
)

// The SDK hm serves is the one in this repository, file for file: every non-test Go file of
// pipeline/ and of each package of this module it imports, nothing else.
func TestEmbeddedSDKIsTheRepositorys(t *testing.T) {
	root := testutil.RepoRoot()
	list := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./pipeline")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	want := map[string]string{}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("pipeline imports %s, outside this module: the SDK module would not build", dir)
		}
		names, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasSuffix(n, "_test.go") {
				continue
			}
			data, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := filepath.Rel(root, n)
			want[filepath.ToSlash(r)] = string(data)
		}
	}
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for n, data := range files {
		if n != "go.mod" {
			got[n] = string(data)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("embedded SDK differs from the repository (-repo +embedded); update the go:embed line in sdk.go:\n%s", diff)
	}
	mod, err := modfile.Parse("go.mod", files["go.mod"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if mod.Module.Mod.Path != ModulePath || len(mod.Require) != 0 {
		t.Errorf("SDK go.mod:\n%s", files["go.mod"])
	}
}

// Dir writes once per content, read-only, and a second call reuses the directory.
func TestDirWritesOnce(t *testing.T) {
	state := t.TempDir()
	dir, err := Dir(state)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "pipeline", "pipeline.go"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o222 != 0 {
		t.Errorf("SDK files are writable (%v): an edit there would be built silently", st.Mode())
	}
	again, err := Dir(state)
	if err != nil || again != dir {
		t.Fatalf("second Dir: %q, %v; want %q", again, err, dir)
	}
	entries, err := os.ReadDir(filepath.Join(state, "sdk"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{filepath.Base(dir)}, names); diff != "" {
		t.Errorf("state/sdk (-want +got):\n%s", diff)
	}
}

// The temporary go.mod keeps the user's module and requirements, requires and replaces the SDK
// (dropping a replacement of the user's own), and raises the go version to the SDK's.
func TestPrepareModFile(t *testing.T) {
	goVersion, err := GoVersion()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, goMod string
		wantGo      string
	}{
		{"old go", "module example.com/x\n\ngo 1.21\n\nrequire example.com/y v1.2.3\n", goVersion},
		{"newer go", "module example.com/x\n\ngo 9.0\n\nrequire example.com/y v1.2.3\n", "9.0"},
		{"own replacement", "module example.com/x\n\ngo 1.21\n\nrequire (\n\texample.com/y v1.2.3\n\tgithub.com/hmci/hm v0.1.0\n)\n\nreplace github.com/hmci/hm => ../hm\n", goVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := t.TempDir()
			if err := os.MkdirAll(filepath.Join(repo, ".hm"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(repo, "go.mod"), []byte(tt.goMod), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(repo, "go.sum"), []byte("example.com/y v1.2.3 h1:x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			state := t.TempDir()
			inv, err := Prepare(filepath.Join(repo, ".hm"), state)
			if err != nil {
				t.Fatal(err)
			}
			defer inv.Cleanup()
			sdkDir, err := Dir(state)
			if err != nil {
				t.Fatal(err)
			}
			modPath := filepath.Join(inv.tmp, "go.mod")
			if diff := cmp.Diff([]string{"run", "-modfile=" + modPath, "."}, inv.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			if inv.Dir != filepath.Join(repo, ".hm") {
				t.Errorf("dir %s", inv.Dir)
			}
			data, err := os.ReadFile(modPath)
			if err != nil {
				t.Fatal(err)
			}
			f, err := modfile.Parse(modPath, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			type req struct{ Path, Version string }
			var reqs []req
			for _, r := range f.Require {
				reqs = append(reqs, req{r.Mod.Path, r.Mod.Version})
			}
			var repls []string
			for _, r := range f.Replace {
				repls = append(repls, r.Old.Path+" => "+r.New.Path)
			}
			got := struct {
				Module, Go string
				Require    []req
				Replace    []string
			}{f.Module.Mod.Path, f.Go.Version, reqs, repls}
			want := got
			want.Module, want.Go = "example.com/x", tt.wantGo
			want.Require = []req{{"example.com/y", "v1.2.3"}, {ModulePath, version}}
			want.Replace = []string{ModulePath + " => " + sdkDir}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("go.mod (-want +got):\n%s\n%s", diff, data)
			}
			if sum, err := os.ReadFile(filepath.Join(inv.tmp, "go.sum")); err != nil || string(sum) != "example.com/y v1.2.3 h1:x\n" {
				t.Errorf("go.sum copy: %q, %v", sum, err)
			}
			if orig, _ := os.ReadFile(filepath.Join(repo, "go.mod")); string(orig) != tt.goMod {
				t.Errorf("the user's go.mod was changed:\n%s", orig)
			}
			inv.Cleanup()
			if _, err := os.Stat(inv.tmp); !os.IsNotExist(err) {
				t.Errorf("Cleanup left %s", inv.tmp)
			}
		})
	}
}

// hm's own module (its examples, its tests) builds against the working tree, unchanged.
func TestPrepareInHmsModule(t *testing.T) {
	hmDir := filepath.Join(testutil.RepoRoot(), "examples", "go-sdk", ".hm")
	inv, err := Prepare(hmDir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Cleanup()
	want := Invocation{Dir: hmDir, Args: []string{"run", "."}}
	if diff := cmp.Diff(want, inv, cmp.AllowUnexported(Invocation{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
