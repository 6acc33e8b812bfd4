package frontend

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
)

type found struct {
	Slug, Name, Path string
	Kind             Kind
	Err              string // error code, "" when the source is usable
}

func summarize(t *testing.T, dir string, ps []Pipeline) []found {
	t.Helper()
	var out []found
	for _, p := range ps {
		rel, err := filepath.Rel(dir, p.Path)
		if err != nil {
			t.Fatal(err)
		}
		f := found{Slug: p.Slug, Name: p.Name, Path: rel, Kind: p.Kind}
		var e *errs.Error
		if errors.As(p.Err(), &e) {
			f.Err = e.Code
		} else if p.Err() != nil {
			f.Err = p.Err().Error()
		}
		out = append(out, f)
	}
	return out
}

func errCode(t *testing.T, err error) *errs.Error {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want an *errs.Error", err)
	}
	return e
}

func TestDiscoverMixed(t *testing.T) {
	dir := filepath.Join("testdata", "mixed")
	ps, err := Discover(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []found{
		{Slug: "broken", Path: ".hm/broken.yaml", Kind: KindYAML, Err: "yaml_syntax"},
		{Slug: "ci", Path: ".hm/ci.yaml", Kind: KindYAML},
		{Slug: "fmt", Path: ".hm/tools.yml", Kind: KindYAML},
		{Slug: "legacy", Path: ".hm/legacy.json", Kind: KindIR},
		{Slug: "lint", Name: "Linters", Path: ".hm/tools.yml", Kind: KindYAML},
	}
	if diff := cmp.Diff(want, summarize(t, dir, ps)); diff != "" {
		t.Fatalf("discovered (-want +got):\n%s", diff)
	}
	for _, p := range ps {
		data, err := Render(context.Background(), p)
		if p.Slug == "broken" {
			if e := errCode(t, err); !strings.HasPrefix(e.Msg, filepath.Join(dir, ".hm", "broken.yaml")+":3:10: ") {
				t.Errorf("broken.yaml: %s", e.Msg)
			}
			continue
		}
		if err != nil {
			t.Fatalf("render %s: %v", p.Slug, err)
		}
		parsed, err := ir.Parse(data)
		if err != nil {
			t.Fatalf("render %s: %v", p.Slug, err)
		}
		if parsed.Nodes[0].Step.Key != map[string]string{"ci": "test", "fmt": "fmt", "legacy": "old", "lint": "lint"}[p.Slug] {
			t.Errorf("%s renders the wrong pipeline: first step %q", p.Slug, parsed.Nodes[0].Step.Key)
		}
	}
}

func TestDiscoverNothing(t *testing.T) {
	ps, err := Discover(context.Background(), t.TempDir())
	if err != nil || ps != nil {
		t.Fatalf("Discover without .hm = %v, %v", ps, err)
	}
	_, err = Select("x", nil, "")
	if e := errCode(t, err); e.Code != "no_pipeline" || !strings.Contains(e.Fix, "hm init") {
		t.Errorf("no pipeline: %s / %s", e.Msg, e.Fix)
	}
}

func TestDuplicateSlug(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, ".hm/ci.json", `{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"true"}}]}}`)
	write(t, dir, ".hm/other.yaml", "slug: ci\nsteps: [{key: a, run: x}]\n")
	_, err := Discover(context.Background(), dir)
	if e := errCode(t, err); e.Code != "pipeline_duplicate_slug" || !strings.Contains(e.Msg, "ci.json") || !strings.Contains(e.Msg, "other.yaml") {
		t.Errorf("duplicate slug: %s", e.Msg)
	}
}

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s on PATH: %v", name, err)
	}
}

func renderOnly(t *testing.T, dir string) (Pipeline, []byte) {
	t.Helper()
	ps, err := Discover(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 {
		t.Fatalf("%s: %d pipelines, want 1", dir, len(ps))
	}
	data, err := Render(context.Background(), ps[0])
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return ps[0], data
}

// A YAML pipeline and its Go SDK twin, a .hm/ main package run with `go run`, render the same
// bytes. on_change finds data.txt only when the Go program is told the source directory, and
// the env_keys value and the org reach both.
func TestGoTwinOfYAML(t *testing.T) {
	needTool(t, "go")
	t.Setenv("HM_PIPELINE_ORG", "acme")
	t.Setenv("DEBIAN_MIRROR", "http://mirror.example")
	yp, yamlIR := renderOnly(t, filepath.Join("testdata", "yamltwin"))
	gp, goIR := renderOnly(t, filepath.Join("testdata", "gotwin"))
	if yp.Slug != "twin" || gp.Slug != "twin" || gp.Kind != KindGo {
		t.Fatalf("slugs %q (%s) and %q (%s)", yp.Slug, yp.Kind, gp.Slug, gp.Kind)
	}
	if rel, _ := filepath.Rel("testdata/gotwin", gp.Path); rel != ".hm/pipeline.go" {
		t.Errorf("Go source path %q", gp.Path)
	}
	if diff := cmp.Diff(string(yamlIR), string(goIR)); diff != "" {
		t.Errorf("YAML and Go twins differ (-yaml +go):\n%s", diff)
	}
	parsed, err := ir.Parse(goIR)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed.Nodes) != 8 || parsed.Nodes[1].Step.Cache == nil || parsed.Nodes[1].Step.Cache.Key == "" {
		t.Fatalf("unexpected twin IR:\n%s", goIR)
	}
}

func TestGoProgramFails(t *testing.T) {
	needTool(t, "go")
	dir := filepath.Join("testdata", "gobroken")
	ps, err := Discover(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Slug != "main" {
		t.Fatalf("want one placeholder named main, got %+v", ps)
	}
	_, err = Render(context.Background(), ps[0])
	if e := errCode(t, err); e.Code != "pipeline_program_failed" || !strings.Contains(e.Msg, "undefinedFunction") || !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("broken Go pipeline: [%s] %s", e.Code, e.Msg)
	}
}

func TestPythonDSL(t *testing.T) {
	needTool(t, "python3")
	fake, err := filepath.Abs(filepath.Join("testdata", "pyfake"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PYTHONPATH", fake)
	t.Setenv("HM_PIPELINE_ORG", "acme")
	dir := filepath.Join("testdata", "python")
	ps, err := Discover(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []found{
		{Slug: "ci", Name: "CI", Path: ".hm/*.py", Kind: KindPython},
		{Slug: "release", Name: "release", Path: ".hm/*.py", Kind: KindPython},
	}
	if diff := cmp.Diff(want, summarize(t, dir, ps)); diff != "" {
		t.Fatalf("discovered (-want +got):\n%s", diff)
	}
	data, err := Render(context.Background(), ps[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), `{"version": "0", "env": {"CI": "true", "HM_TEST_ORG": "acme"}`) {
		t.Errorf("the definition is not passed through verbatim, or the org is lost:\n%s", data)
	}
	p, err := ir.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Form != ir.FormFlat || len(p.Nodes) != 3 || !p.Edges[len(p.Edges)-1].ContinueOnFailure {
		t.Errorf("unexpected IR: %+v", p)
	}
}

func TestPythonDSLMissing(t *testing.T) {
	needTool(t, "python3")
	dir := filepath.Join("testdata", "python")
	t.Setenv("PYTHONPATH", t.TempDir())
	if exec.Command("python3", "-c", "import harmont").Run() == nil {
		t.Skip("the harmont package is installed here, so it cannot be missing")
	}
	ps, err := Discover(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Slug != "ci" || ps[1].Slug != "release" {
		t.Fatalf("want placeholders ci and release, got %+v", ps)
	}
	_, err = Render(context.Background(), ps[0])
	e := errCode(t, err)
	if e.Code != "harmont_missing" || !strings.Contains(e.Msg, "No module named 'harmont'") ||
		!strings.Contains(e.Fix, "pip install harmont") || !errors.Is(err, errs.ErrUnavailable) {
		t.Errorf("missing harmont: [%s] %s / %s", e.Code, e.Msg, e.Fix)
	}

	t.Setenv("PATH", t.TempDir())
	ps, _ = Discover(context.Background(), dir)
	if e := errCode(t, ps[0].Err()); e.Code != "python_missing" || !strings.Contains(e.Msg, "python3 is not on PATH") {
		t.Errorf("missing python3: [%s] %s", e.Code, e.Msg)
	}
}

func TestTypeScriptDSL(t *testing.T) {
	dir := filepath.Join("testdata", "ts")
	codeOf := func() string {
		ps, err := Discover(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].Slug != "ci" || ps[0].Kind != KindTypeScript {
			t.Fatalf("want one TypeScript pipeline ci, got %+v", ps)
		}
		if ps[0].Err() == nil {
			return ""
		}
		return errCode(t, ps[0].Err()).Code
	}

	if _, err := exec.LookPath("node"); err == nil {
		if got := codeOf(); got != "harmont_missing" {
			t.Errorf("without @harmont/hm: %q, want harmont_missing", got)
		}
		// With @harmont/hm installed (a stand-in): node 22.6+ renders, older node says why not.
		dir = t.TempDir()
		write(t, dir, ".hm/ci.ts", mustRead(t, filepath.Join("testdata", "ts", ".hm", "ci.ts")))
		for _, f := range []string{"package.json", "index.mjs"} {
			write(t, dir, "node_modules/@harmont/hm/"+f, mustRead(t, filepath.Join("testdata", "tsfake", "node_modules", "@harmont", "hm", f)))
		}
		if _, err := nodeTypeScriptFlags(context.Background(), "node"); err != nil {
			if got := codeOf(); got != "node_too_old" {
				t.Errorf("old node: %q, want node_too_old", got)
			}
		} else if got := codeOf(); got != "" {
			t.Errorf("node 22.6+ with @harmont/hm: %q, want success", got)
		} else {
			_, data := renderOnly(t, dir)
			if _, err := ir.Parse(data); err != nil || !strings.Contains(string(data), `"cmd":"echo test"`) {
				t.Errorf("TypeScript render: %v\n%s", err, data)
			}
		}
	}

	t.Setenv("PATH", t.TempDir())
	if got := codeOf(); got != "node_missing" {
		t.Errorf("without node: %q, want node_missing", got)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestParseEnvelope(t *testing.T) {
	ir1 := `{"version":"0","steps":[]}`
	tests := []struct {
		name, data string
		slugs      []string
		err        string
	}{
		{"harmont envelope", `{"schema_version":"1","pipelines":[{"slug":"ci","name":"CI","definition":` + ir1 + `},{"slug":"rel","definition":` + ir1 + `}]}`, []string{"ci", "rel"}, ""},
		{"slug map", `{"b":` + ir1 + `,"a":` + ir1 + `}`, []string{"a", "b"}, ""},
		{"not json", `pipelines!`, nil, "not a JSON object"},
		{"newer schema", `{"schema_version":"2","pipelines":[]}`, nil, `schema_version "2"`},
		{"empty", `{"schema_version":"1","pipelines":[]}`, nil, "no pipelines"},
		{"duplicate", `{"schema_version":"1","pipelines":[{"slug":"a","definition":{}},{"slug":"a","definition":{}}]}`, nil, `two pipelines have the slug "a"`},
		{"no slug", `{"schema_version":"1","pipelines":[{"definition":{}}]}`, nil, "has no slug"},
		{"definition not an object", `{"a": 1}`, nil, "no IR object"},
		{"a bare IR", ir1, nil, "printed one pipeline's IR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := parseEnvelope(".hm/x.py", []byte(tt.data))
			if tt.err != "" {
				if e := errCode(t, err); e.Code != "envelope_invalid" || !strings.Contains(e.Msg, tt.err) {
					t.Errorf("err = %s, want %q", e.Msg, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var slugs []string
			for _, e := range entries {
				slugs = append(slugs, e.Slug)
				if string(e.Definition) != ir1 {
					t.Errorf("definition of %s not kept verbatim: %s", e.Slug, e.Definition)
				}
			}
			if diff := cmp.Diff(tt.slugs, slugs); diff != "" {
				t.Errorf("slugs (-want +got):\n%s", diff)
			}
		})
	}
}
