package pipeline_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/testutil"
	"github.com/hmci/hm/pipeline"
)

type vector struct {
	Name         string            `json:"name"`
	Org          string            `json:"org"`
	Slug         string            `json:"slug"`
	Now          int64             `json:"now"`
	Env          map[string]string `json:"env"`
	ExpectedKeys map[string]string `json:"expected_keys"`
}

func loadVectors(t *testing.T) (map[string]vector, string) {
	t.Helper()
	dir := filepath.Join(testutil.SharedDir(t), "testdata", "cachekeys")
	data, err := os.ReadFile(filepath.Join(dir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Cases []vector }
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]vector{}
	for _, c := range doc.Cases {
		out[c.Name] = c
	}
	return out, filepath.Join(dir, "tree")
}

// vectorTwins writes each vector's pipeline with the SDK, by hand, as a user would.
func vectorTwins() map[string]pipeline.Pipeline {
	day := 24 * time.Hour
	aptBase := pipeline.Sh("apt-base", "apt-get update").Cache(pipeline.TTL(day))
	install := aptBase.Sh("install", "install go").Cache(pipeline.Forever())
	deps := install.Sh("deps", "go mod download").Cache(pipeline.OnChange("go.sum", "go.mod"))
	return map[string]pipeline.Pipeline{
		"forever-root": pipeline.New("ci", pipeline.Sh("apt-base", "apt-get update").Cache(pipeline.Forever())),
		"forever-env-keys": pipeline.New("ci",
			pipeline.Sh("install", "curl x | sh").Cache(pipeline.Forever().EnvKeys("B_VER", "A_VER", "MISSING"))),
		"ttl-day":          pipeline.New("ci", pipeline.Sh("apt", "apt-get update && apt-get install -y git").Cache(pipeline.TTL(day))),
		"ttl-next-bucket":  pipeline.New("ci", pipeline.Sh("apt", "apt-get update && apt-get install -y git").Cache(pipeline.TTL(day))),
		"chain-parent-key": pipeline.New("ci", deps.Sh("build", "go build ./...")),
		"on-change-dir-and-missing": pipeline.New("ci",
			pipeline.Sh("sync", "uv sync").Cache(pipeline.OnChange("uv.lock", "src", "does-not-exist.txt"))),
		"on-change-glob": pipeline.New("ci", pipeline.Sh("lint", "lint").Cache(pipeline.OnChange("src/*.go"))),
		"compose": pipeline.New("ci", pipeline.Sh("deps", "uv sync").Cache(pipeline.Compose(
			pipeline.OnChange("uv.lock"), pipeline.TTL(time.Hour), pipeline.None()))),
		"org-and-slug": pipeline.New("release", pipeline.Sh("apt-base", "apt-get update").Cache(pipeline.Forever())),
		"unicode-cmd":  pipeline.New("ci", pipeline.Sh("say", "echo 'héllo → wörld'").Cache(pipeline.Forever())),
	}
}

// renderedKeys returns step key → cache key of rendered IR.
func renderedKeys(t *testing.T, data []byte) map[string]string {
	t.Helper()
	p, err := ir.Parse(data)
	if err != nil {
		t.Fatalf("rendered IR does not parse: %v\n%s", err, data)
	}
	keys := map[string]string{}
	for _, n := range p.Nodes {
		if n.Step.Cache != nil && n.Step.Cache.Key != "" {
			keys[n.Step.Key] = n.Step.Cache.Key
		}
	}
	return keys
}

func TestKeysMatchVectors(t *testing.T) {
	vectors, tree := loadVectors(t)
	twins := vectorTwins()
	for name, v := range vectors {
		t.Run(name, func(t *testing.T) {
			p, ok := twins[name]
			if !ok {
				t.Fatalf("vector %q has no SDK twin; add one to vectorTwins", name)
			}
			data, err := p.IR(pipeline.WithOrg(v.Org), pipeline.WithNow(time.Unix(v.Now, 0)), pipeline.WithDir(tree),
				pipeline.WithGetenv(func(k string) string { return v.Env[k] }))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(v.ExpectedKeys, renderedKeys(t, data)); diff != "" {
				t.Errorf("keys (-vector +sdk):\n%s", diff)
			}
		})
	}
	if len(twins) != len(vectors) {
		t.Errorf("%d twins for %d vectors", len(twins), len(vectors))
	}
}
