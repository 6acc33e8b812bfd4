package yamlfe

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/pipeline"
)

var update = flag.Bool("update", false, "rewrite the golden *.ir.json files")

// goldenNow pins ttl buckets.
var goldenNow = time.Unix(1764000000, 0)

func goldenOpts(t *testing.T) []pipeline.RenderOption {
	t.Helper()
	env := map[string]string{"GO_VERSION": "1.26", "A": "a"}
	return []pipeline.RenderOption{
		pipeline.WithOrg("default"), pipeline.WithNow(goldenNow), pipeline.WithDir(filepath.Join("testdata", "tree")),
		pipeline.WithGetenv(func(k string) string { return env[k] }),
	}
}

func parseFile(t *testing.T, path string) []Pipeline {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Parse(path, data)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// TestGolden renders testdata/NAME.yaml to testdata/NAME.ir.json (NAME.SLUG.ir.json for a file
// of several pipelines). Run with -update to rewrite them after a deliberate change.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, file := range files {
		stem := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(stem, func(t *testing.T) {
			pipelines := parseFile(t, file)
			for _, p := range pipelines {
				got, err := Render(file, p, goldenOpts(t)...)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ir.Parse(got); err != nil {
					t.Fatalf("rendered IR does not parse: %v", err)
				}
				golden := filepath.Join("testdata", stem+".ir.json")
				if len(pipelines) > 1 {
					golden = filepath.Join("testdata", stem+"."+p.Slug+".ir.json")
				}
				if *update {
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Errorf("%s (-golden +rendered):\n%s", golden, diff)
				}
			}
		})
	}
}

func TestParseMetadata(t *testing.T) {
	tests := []struct {
		file  string
		slugs []string
		names []string
	}{
		{"minimal.yaml", []string{"minimal"}, []string{""}},
		{"full.yaml", []string{"ci"}, []string{"Continuous integration"}},
		{"multi.yaml", []string{"ci", "release"}, []string{"", ""}},
	}
	for _, tt := range tests {
		var slugs, names []string
		for _, p := range parseFile(t, filepath.Join("testdata", tt.file)) {
			slugs, names = append(slugs, p.Slug), append(names, p.Name)
		}
		if diff := cmp.Diff(tt.slugs, slugs); diff != "" {
			t.Errorf("%s slugs (-want +got):\n%s", tt.file, diff)
		}
		if diff := cmp.Diff(tt.names, names); diff != "" {
			t.Errorf("%s names (-want +got):\n%s", tt.file, diff)
		}
	}
}

// The golden files' Go SDK twins: written by hand with the fluent API, they must render the
// same bytes as the YAML.
func TestGoTwinsRenderIdentically(t *testing.T) {
	toolchain := pipeline.Sh("toolchain", "apt-get update && apt-get install -y golang").
		Label(":go: toolchain").Image("golang:1.26").Cache(pipeline.TTL(24 * time.Hour).EnvKeys("GO_VERSION"))
	deps := toolchain.Sh("deps", "go mod download").Cache(pipeline.OnChange("go.mod", "go.sum"))
	docs := pipeline.Sh("docs", "make docs").Cache(pipeline.Compose(pipeline.OnChange("src"), pipeline.TTL(time.Hour), pipeline.None()))
	lint := pipeline.Sh("lint", "gofmt -l . | tee /dev/stderr | (! read)")
	test := pipeline.Sh("test", "go test ./...").Timeout(10*time.Minute).Env("GOFLAGS", "-race")
	full := pipeline.New("ci",
		toolchain.Fork(
			deps.Fork(test, pipeline.Sh("vet", "go vet ./...")),
			lint,
		),
		docs,
		docs.Sh("site", "make site").AfterKeys("vet"),
		test.Sh("bench", "go test -bench . ./..."), // test was forked from deps: it still is

		pipeline.Sh("forever", "echo cached").Cache(pipeline.Forever().EnvKeys("A", "B")),
		pipeline.Wait(),
		toolchain.Sh("package", "go build -o out/ ./...").Cache(pipeline.Forever()).After(lint),
		pipeline.Wait(),
		pipeline.Sh("report", "echo done").Timeout(90*time.Second),
		pipeline.Sh("publish", "npm publish").Secrets("NPM_TOKEN", "GH_TOKEN"),
	).DefaultImage("debian:bookworm").Timeout(30*time.Minute).Env("CI", "true").Env("GOFLAGS", "-mod=readonly")

	build := pipeline.Sh("build", "make").Cache(pipeline.Forever())
	nightly := pipeline.New("nightly",
		build.Sh("test", "make test"),
		pipeline.Sh("lint", "make lint"),
		pipeline.Wait().ContinueOnFailure(true),
		pipeline.Sh("cleanup", "make clean").Env("FORCE", "1"),
		pipeline.Wait(),
		pipeline.Sh("notify", "echo notified"),
	).Env("CI", "true")

	for file, twin := range map[string]pipeline.Pipeline{"full.yaml": full, "wait-cof.yaml": nightly} {
		yamlIR, err := Render(file, parseFile(t, filepath.Join("testdata", file))[0], goldenOpts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		goIR, err := twin.IR(goldenOpts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(yamlIR), string(goIR)); diff != "" {
			t.Errorf("%s and its Go twin differ (-yaml +go):\n%s", file, diff)
		}
	}
}

type vector struct {
	Name         string            `json:"name"`
	Org          string            `json:"org"`
	Slug         string            `json:"slug"`
	Now          int64             `json:"now"`
	Env          map[string]string `json:"env"`
	ExpectedKeys map[string]string `json:"expected_keys"`
}

// TestKeysMatchVectors renders testdata/vectors/NAME.yaml, the YAML form of each case of
// shared/testdata/cachekeys/vectors.json, and compares the keys.
func TestKeysMatchVectors(t *testing.T) {
	vectors, tree := loadVectors(t)
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			ps := parseFile(t, filepath.Join("testdata", "vectors", v.Name+".yaml"))
			if len(ps) != 1 || ps[0].Slug != v.Slug {
				t.Fatalf("want one pipeline with slug %q", v.Slug)
			}
			data, err := Render(v.Name, ps[0], pipeline.WithOrg(v.Org), pipeline.WithNow(time.Unix(v.Now, 0)),
				pipeline.WithDir(tree), pipeline.WithGetenv(func(k string) string { return v.Env[k] }))
			if err != nil {
				t.Fatal(err)
			}
			p, err := ir.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, n := range p.Nodes {
				if n.Step.Cache != nil && n.Step.Cache.Key != "" {
					got[n.Step.Key] = n.Step.Cache.Key
				}
			}
			if diff := cmp.Diff(v.ExpectedKeys, got); diff != "" {
				t.Errorf("keys (-vector +yaml):\n%s", diff)
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "vectors", "*.yaml"))
	if len(files) != len(vectors) {
		t.Errorf("%d YAML files for %d vectors", len(files), len(vectors))
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		code string
		at   string // "line:col", or "line" when only the line is known
		msg  string // in the message or the fix
	}{
		// Malformed YAML: the position of the problem itself.
		{"bad indentation", "steps:\n  - key: a\n    run: echo\n   bad: x\n", "yaml_syntax", "4:4", "not allowed"},
		{"unclosed quote", "steps:\n  - key: a\n    run: \"echo\n", "yaml_syntax", "3:10", "double-quoted"},
		{"tab indentation", "steps:\n  - key: a\n\trun: echo\n", "yaml_syntax", "3:1", "'\t'"},
		{"unclosed flow list", "steps: [a, b\nname: x\n", "yaml_syntax", "2:1", "']'"},
		{"colon in plain value", "steps:\n  - key: a\n    run: echo: x: y\n", "yaml_syntax", "3:10", "mapping value"},
		// Well-formed YAML that is not a pipeline.
		{"empty file", "# nothing\n", "yaml_invalid", "", "no pipeline"},
		{"not a mapping", "- a\n- b\n", "yaml_invalid", "1:1", "must be a mapping"},
		{"unknown top field", "stepz: []\n", "yaml_invalid", "1:1", `unknown field "stepz"`},
		{"no steps", "slug: ci\n", "yaml_invalid", "1:1", "no steps"},
		{"empty steps", "steps: []\n", "yaml_invalid", "1:8", "empty"},
		{"steps not a list", "steps: echo hi\n", "yaml_invalid", "1:8", "must be a list"},
		{"bad slug", "slug: my ci\nsteps:\n  - {key: a, run: x}\n", "yaml_invalid", "1:7", `slug "my ci"`},
		{"step is a string", "steps:\n  - echo hi\n", "yaml_invalid", "2:5", "must be a mapping"},
		{"unknown step field", "steps:\n  - key: a\n    rn: echo\n", "yaml_invalid", "3:5", `unknown field "rn"`},
		{"missing key", "steps:\n  - run: echo\n", "yaml_invalid", "2:5", "no key"},
		{"missing run", "steps:\n  - key: a\n", "yaml_invalid", "2:5", `"a" has no command`},
		{"bad secret name", "steps:\n  - key: a\n    run: x\n    secrets: [a-b]\n", "yaml_invalid", "4:15", "not an environment variable"},
		{"duplicate field", "steps:\n  - key: a\n    run: x\n    run: y\n", "yaml_invalid", "4:5", `"run" is given twice`},
		{"duplicate key", "steps:\n  - {key: a, run: x}\n  - key: a\n    run: y\n", "yaml_invalid", "3:10", `"a" is already used at line 2`},
		{"duplicate nested key", "steps:\n  - key: a\n    run: x\n    steps:\n      - {key: a, run: y}\n", "yaml_invalid", "5:15", "already used"},
		{"bad timeout", "steps:\n  - key: a\n    run: x\n    timeout: 10 minutes\n", "yaml_invalid", "4:14", "not a duration"},
		{"fractional timeout", "steps:\n  - key: a\n    run: x\n    timeout: 1500ms\n", "yaml_invalid", "4:14", "whole number"},
		{"pipeline timeout", "timeout: 0s\nsteps:\n  - {key: a, run: x}\n", "yaml_invalid", "1:10", "whole number"},
		{"env not a mapping", "env: [A]\nsteps:\n  - {key: a, run: x}\n", "yaml_invalid", "1:6", "must be a mapping"},
		{"env value a list", "env: {A: [1]}\nsteps:\n  - {key: a, run: x}\n", "yaml_invalid", "1:10", "single value"},
		{"from unknown", "steps:\n  - {key: a, run: x}\n  - key: b\n    from: aa\n    run: y\n", "yaml_invalid", "4:11", `unknown step "aa"`},
		{"from later", "steps:\n  - key: b\n    from: a\n    run: y\n  - {key: a, run: x}\n", "yaml_invalid", "3:11", "defined below"},
		{"from in nested", "steps:\n  - key: a\n    run: x\n    steps:\n      - {key: b, run: y, from: a}\n", "yaml_invalid", "5:32", "nested"},
		{"image on child", "steps:\n  - key: a\n    run: x\n    steps:\n      - {key: b, run: y, image: alpine}\n", "yaml_invalid", "5:33", "cannot name an image"},
		{"after unknown", "steps:\n  - {key: a, run: x, after: [lint]}\n", "yaml_invalid", "2:30", `unknown step "lint"`},
		{"after self", "steps:\n  - {key: a, run: x, after: a}\n", "yaml_invalid", "2:29", "after itself"},
		{"after with cof wait", "steps:\n  - {key: a, run: x}\n  - wait: {continue_on_failure: true}\n  - {key: b, run: y, after: [a]}\n",
			"yaml_invalid", "4:30", "continue_on_failure"},
		{"wait nested", "steps:\n  - key: a\n    run: x\n    steps:\n      - wait\n", "yaml_invalid", "5:9", "cannot be nested"},
		{"wait with extra field", "steps:\n  - wait: {}\n    key: a\n", "yaml_invalid", "3:5", `no field "key"`},
		{"wait option typo", "steps:\n  - wait: {continue_on_fail: true}\n", "yaml_invalid", "2:12", `did you mean "continue_on_failure"`},
		{"wait flag not bool", "steps:\n  - wait: {continue_on_failure: yes}\n", "yaml_invalid", "2:33", "true or false"},
		{"cache unknown", "steps:\n  - {key: a, run: x, cache: always}\n", "yaml_invalid", "2:29", "unknown cache policy"},
		{"cache ttl scalar", "steps:\n  - {key: a, run: x, cache: ttl}\n", "yaml_invalid", "2:29", "needs a value"},
		{"cache two policies", "steps:\n  - key: a\n    run: x\n    cache: {forever: true, ttl: 1h}\n", "yaml_invalid", "4:28", "two policies"},
		{"cache env_keys on on_change", "steps:\n  - key: a\n    run: x\n    cache: {on_change: [a], env_keys: [B]}\n", "yaml_invalid", "4:29", "env_keys only"},
		{"cache nested compose", "steps:\n  - key: a\n    run: x\n    cache: {compose: [{compose: [none]}]}\n", "yaml_invalid", "4:24", "nested"},
		{"cache ttl bad", "steps:\n  - key: a\n    run: x\n    cache: {ttl: 1d}\n", "yaml_invalid", "4:18", "not a duration"},
		{"cache no policy", "steps:\n  - key: a\n    run: x\n    cache: {env_keys: [A]}\n", "yaml_invalid", "4:12", "no policy"},
		{"several documents without slug", "steps: [{key: a, run: x}]\n---\nslug: b\nsteps: [{key: a, run: x}]\n", "yaml_invalid", "1:1", "each needs a slug"},
		{"several documents same slug", "slug: a\nsteps: [{key: a, run: x}]\n---\nslug: a\nsteps: [{key: a, run: x}]\n", "yaml_invalid", "4:7", `"a" is already used at line 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(".hm/ci.yaml", []byte(tt.yaml))
			var e *errs.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *errs.Error", err)
			}
			prefix := ".hm/ci.yaml:"
			if tt.at != "" {
				prefix += tt.at + ": "
			}
			if e.Code != tt.code || !strings.HasPrefix(e.Msg, prefix) || !strings.Contains(e.Msg+" fix: "+e.Fix, tt.msg) || e.Fix == "" {
				t.Errorf("got [%s] %s (fix %q)\nwant [%s] %s...%s...", e.Code, e.Msg, e.Fix, tt.code, prefix, tt.msg)
			}
			if !errors.Is(err, errs.ErrInvalid) {
				t.Errorf("error is not of class ErrInvalid")
			}
		})
	}
}

func TestRenderErrorNamesFile(t *testing.T) {
	ps, err := Parse(".hm/ci.yaml", []byte("steps:\n  - {key: a, run: x, after: [b]}\n  - {key: b, run: y, after: [a]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Render(".hm/ci.yaml", ps[0])
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != "ir_cycle" || !strings.HasPrefix(e.Msg, ".hm/ci.yaml: ") || !errors.Is(err, errs.ErrInvalid) {
		t.Fatalf("err = %#v", err)
	}
}
