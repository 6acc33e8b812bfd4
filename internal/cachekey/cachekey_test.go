package cachekey

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/testutil"
)

// vectorGraph decodes the graph of a vector without depending on ir.Parse, which is written
// separately.
type vectorGraph struct {
	Nodes []struct {
		Step struct {
			Key   string    `json:"key"`
			Cmd   string    `json:"cmd"`
			Cache *ir.Cache `json:"cache"`
		} `json:"step"`
		Env map[string]string `json:"env"`
	} `json:"nodes"`
	Edges [][3]any `json:"edges"`
}

func (g vectorGraph) pipeline(t *testing.T) *ir.Pipeline {
	t.Helper()
	p := &ir.Pipeline{Version: "0", Form: ir.FormGraph}
	for _, n := range g.Nodes {
		p.Nodes = append(p.Nodes, ir.Node{
			Step: ir.Step{Key: n.Step.Key, Cmd: n.Step.Cmd, Cache: n.Step.Cache},
			Env:  n.Env,
		})
	}
	for _, e := range g.Edges {
		from, ok1 := e[0].(float64)
		to, ok2 := e[1].(float64)
		kind, ok3 := e[2].(string)
		if !ok1 || !ok2 || !ok3 {
			t.Fatalf("bad edge %v", e)
		}
		p.Edges = append(p.Edges, ir.Edge{From: int(from), To: int(to), Kind: ir.EdgeKind(kind)})
	}
	return p
}

type vector struct {
	Name         string            `json:"name"`
	Org          string            `json:"org"`
	Slug         string            `json:"slug"`
	Now          int64             `json:"now"`
	Env          map[string]string `json:"env"`
	Graph        vectorGraph       `json:"graph"`
	ExpectedKeys map[string]string `json:"expected_keys"`
}

func loadVectors(t *testing.T) ([]vector, string) {
	t.Helper()
	dir := filepath.Join(testutil.SharedDir(t), "testdata", "cachekeys")
	data, err := os.ReadFile(filepath.Join(dir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Cases []vector }
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) == 0 {
		t.Fatal("no vectors")
	}
	return v.Cases, filepath.Join(dir, "tree")
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestVectors(t *testing.T) {
	cases, tree := loadVectors(t)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			p := tc.Graph.pipeline(t)
			res, err := Compute(Context{
				Org: tc.Org, Slug: tc.Slug, Now: time.Unix(tc.Now, 0),
				Getenv: mapEnv(tc.Env), Dir: tree,
			}, p)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for i, r := range res {
				if r.Key != "" {
					got[p.Nodes[i].Step.Key] = r.Key
				}
			}
			if d := cmp.Diff(tc.ExpectedKeys, got); d != "" {
				t.Errorf("keys (-want +got):\n%s", d)
			}
		})
	}
}

// The org defaults to "default": the org-and-slug vector only differs from forever-root by
// org and slug, so an empty Org must reproduce forever-root's key.
func TestDefaultOrg(t *testing.T) {
	cases, tree := loadVectors(t)
	for _, tc := range cases {
		if tc.Name != "forever-root" {
			continue
		}
		res, err := Compute(Context{Slug: tc.Slug, Now: time.Unix(tc.Now, 0), Getenv: mapEnv(nil), Dir: tree}, tc.Graph.pipeline(t))
		if err != nil {
			t.Fatal(err)
		}
		if want := tc.ExpectedKeys["apt-base"]; res[0].Key != want {
			t.Fatalf("key %s, want %s", res[0].Key, want)
		}
		return
	}
	t.Fatal("vector forever-root missing")
}

func cache(policy string) *ir.Cache { return &ir.Cache{Policy: policy} }

func chain(steps ...ir.Step) *ir.Pipeline {
	p := &ir.Pipeline{Version: "0"}
	for i, s := range steps {
		p.Nodes = append(p.Nodes, ir.Node{Step: s})
		if i > 0 {
			p.Edges = append(p.Edges, ir.Edge{From: i - 1, To: i, Kind: ir.BuildsIn})
		}
	}
	return p
}

func TestComputeCases(t *testing.T) {
	irKey := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		p       *ir.Pipeline
		wantErr error
		errHas  []string
		check   func(t *testing.T, res []Result)
	}{{
		name: "uncached parent of cached child is invalid",
		p: chain(ir.Step{Key: "base", Cmd: "a"},
			ir.Step{Key: "child", Cmd: "b", Cache: cache(ir.PolicyForever)}),
		wantErr: errs.ErrInvalid,
		errHas:  []string{`"base"`, `"child"`},
	}, {
		name: "policy none parent of cached child is invalid",
		p: chain(ir.Step{Key: "base", Cmd: "a", Cache: cache(ir.PolicyNone)},
			ir.Step{Key: "child", Cmd: "b", Cache: cache(ir.PolicyForever)}),
		wantErr: errs.ErrInvalid,
	}, {
		name:    "unknown policy",
		p:       chain(ir.Step{Key: "s", Cmd: "a", Cache: cache("sometimes")}),
		wantErr: errs.ErrInvalid,
		errHas:  []string{"sometimes"},
	}, {
		name:    "ttl without duration",
		p:       chain(ir.Step{Key: "s", Cmd: "a", Cache: cache(ir.PolicyTTL)}),
		wantErr: errs.ErrInvalid,
	}, {
		name: "none and nil get no key",
		p: chain(ir.Step{Key: "a", Cmd: "a"}, ir.Step{Key: "b", Cmd: "b", Cache: cache(ir.PolicyNone)},
			ir.Step{Key: "c", Cmd: "c"}),
		check: func(t *testing.T, res []Result) {
			for i, r := range res {
				if r.Key != "" {
					t.Errorf("node %d got key %s", i, r.Key)
				}
			}
		},
	}, {
		name: "IR key used as is, inputs still filled, uncached parent allowed",
		p: chain(ir.Step{Key: "base", Cmd: "a"},
			ir.Step{Key: "child", Cmd: "b", Cache: &ir.Cache{Policy: ir.PolicyForever, Key: irKey, EnvKeys: []string{"V"}}}),
		check: func(t *testing.T, res []Result) {
			fp := Fingerprint("b", nil, "", Fingerprint("a", nil, ir.FallbackImage, "scratch"))
			want := Result{Key: irKey, Fingerprint: fp, Inputs: Inputs{Policy: "forever", FromIR: true, Org: "default", Slug: "ci",
				CmdHash: hashStrings("b"), EnvValues: map[string]string{"V": "7"},
				Fingerprint: fp, ParentFingerprint: res[0].Fingerprint}}
			if d := cmp.Diff(want, res[1]); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		},
	}, {
		name: "IR parent key feeds computed child",
		p: chain(ir.Step{Key: "base", Cmd: "a", Cache: &ir.Cache{Policy: ir.PolicyForever, Key: irKey}},
			ir.Step{Key: "child", Cmd: "b", Cache: cache(ir.PolicyForever)}),
		check: func(t *testing.T, res []Result) {
			if res[1].Inputs.ParentKey != irKey {
				t.Errorf("parent key %q, want %q", res[1].Inputs.ParentKey, irKey)
			}
			want := hashStrings("default", "ci", "child", irKey, "forever-"+hashStrings("b", ""))
			if res[1].Key != want {
				t.Errorf("key %s, want %s", res[1].Key, want)
			}
		},
	}, {
		// Child listed before its parent: keys must still resolve parent first.
		name: "parents resolved before children regardless of node order",
		p: &ir.Pipeline{
			Nodes: []ir.Node{
				{Step: ir.Step{Key: "child", Cmd: "b", Cache: cache(ir.PolicyForever)}},
				{Step: ir.Step{Key: "base", Cmd: "a", Cache: cache(ir.PolicyForever)}},
			},
			Edges: []ir.Edge{{From: 1, To: 0, Kind: ir.BuildsIn}},
		},
		check: func(t *testing.T, res []Result) {
			if res[0].Inputs.ParentKey != res[1].Key || res[1].Key == "" {
				t.Errorf("child parent key %q, parent key %q", res[0].Inputs.ParentKey, res[1].Key)
			}
			if res[1].Inputs.ParentKey != "scratch" {
				t.Errorf("root parent key %q", res[1].Inputs.ParentKey)
			}
		},
	}, {
		name: "depends_on parent does not feed the key",
		p: &ir.Pipeline{
			Nodes: []ir.Node{
				{Step: ir.Step{Key: "a", Cmd: "a"}},
				{Step: ir.Step{Key: "b", Cmd: "b", Cache: cache(ir.PolicyForever)}},
			},
			Edges: []ir.Edge{{From: 0, To: 1, Kind: ir.DependsOn}},
		},
		check: func(t *testing.T, res []Result) {
			if res[1].Inputs.ParentKey != "scratch" || res[1].Key == "" {
				t.Errorf("got %+v", res[1])
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Compute(Context{Slug: "ci", Now: time.Unix(1764000000, 0),
				Getenv: mapEnv(map[string]string{"V": "7"}), Dir: t.TempDir()}, tc.p)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				var e *errs.Error
				if !errors.As(err, &e) || e.Fix == "" {
					t.Errorf("err %v has no fix", err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("err %q does not name %s", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(tc.p.Nodes) {
				t.Fatalf("%d results for %d nodes", len(res), len(tc.p.Nodes))
			}
			tc.check(t, res)
		})
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOnChangeResolution(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a.txt": "A", "src/x.go": "X", "src/.hidden.go": "H", "src/sub/y.go": "Y", "src/sub.txt": "T", "a/b": "B",
	})
	if err := os.MkdirAll(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	fh := newFileHasher(dir)
	got, unmatched, err := fh.resolve([]string{"src/*.go", "missing", "a.txt", "empty", "a", "*.nothing"})
	if err != nil {
		t.Fatal(err)
	}
	// Patterns sorted ("a" < "a.txt" < "empty" < "missing" < "src/*.go"); dot files skipped.
	if d := cmp.Diff([]string{"a", "a.txt", "empty", "src/x.go"}, got); d != "" {
		t.Errorf("resolve (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"*.nothing", "missing"}, unmatched); d != "" {
		t.Errorf("unmatched (-want +got):\n%s", d)
	}
	h, err := fh.hash("empty")
	if err != nil {
		t.Fatal(err)
	}
	if want := hashStrings(""); h != want {
		t.Errorf("empty dir hash %s, want hash of nothing %s", h, want)
	}
	// Directory: relpath \0 bytes \0 in whole-path order: "sub.txt" before "sub/y.go", although
	// a walk visits sub/ first.
	h, err = fh.hash("src")
	if err != nil {
		t.Fatal(err)
	}
	if want := hashStrings(".hidden.go", "H", "sub.txt", "T", "sub/y.go", "Y", "x.go", "X", ""); h != want {
		t.Errorf("dir hash %s, want %s", h, want)
	}
	if _, _, err := fh.resolve([]string{"src/[x"}); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("bad glob: err %v, want ErrInvalid", err)
	}
}

// Inputs survive a JSON round trip: the registry stores them that way.
func TestInputsJSON(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"go.sum": "1"})
	p := chain(ir.Step{Key: "s", Cmd: "c", Cache: &ir.Cache{Policy: ir.PolicyCompose, SubPolicies: []ir.Cache{
		{Policy: ir.PolicyOnChange, Paths: []string{"go.sum"}},
		{Policy: ir.PolicyTTL, DurationSeconds: 3600, EnvKeys: []string{"E"}},
		{Policy: ir.PolicyNone},
	}}})
	res, err := Compute(Context{Slug: "ci", Now: time.Unix(7200, 0), Getenv: mapEnv(map[string]string{"E": "e"}), Dir: dir}, p)
	if err != nil {
		t.Fatal(err)
	}
	in := res[0].Inputs
	want := Inputs{Policy: "compose(on_change,ttl,none)", Org: "default", Slug: "ci", CmdHash: hashStrings("c"),
		EnvValues: map[string]string{"E": "e"}, ParentKey: "scratch",
		Files: map[string]string{"go.sum": hashStrings("1")}, TTLBuckets: []TTLBucket{{Seconds: 3600, Bucket: 2}},
		Fingerprint: res[0].Fingerprint, ParentFingerprint: "scratch", Image: ir.FallbackImage}
	if d := cmp.Diff(want, in); d != "" {
		t.Fatalf("inputs (-want +got):\n%s", d)
	}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var back Inputs
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, back); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

// TestSecretEnvKey: a secret named in env_keys decides the key by its value, but the inputs
// (stored in the registry, quoted in miss explanations) keep only a hash of it.
func TestSecretEnvKey(t *testing.T) {
	p := chain(ir.Step{Key: "s", Cmd: "c", Cache: &ir.Cache{Policy: ir.PolicyForever, EnvKeys: []string{"TOKEN", "PLAIN"}}})
	compute := func(token string, secret bool) Result {
		ctx := Context{Slug: "ci", Getenv: mapEnv(map[string]string{"TOKEN": token, "PLAIN": "p"})}
		if secret {
			ctx.Secret = func(n string) bool { return n == "TOKEN" }
		}
		res, err := Compute(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	a, b := compute("value-one", true), compute("value-two", true)
	if a.Key == b.Key {
		t.Error("a changed secret did not change the key")
	}
	if a.Key != compute("value-one", false).Key {
		t.Error("marking the name a secret changed the key")
	}
	want := map[string]string{"TOKEN": SecretHash("value-one"), "PLAIN": "p"}
	if d := cmp.Diff(want, a.Inputs.EnvValues); d != "" {
		t.Errorf("inputs env (-want +got):\n%s", d)
	}
	data, _ := json.Marshal(a.Inputs)
	if strings.Contains(string(data), "value-one") {
		t.Errorf("stored inputs hold the secret: %s", data)
	}
	if diff := strings.Join(Diff(a.Inputs, b.Inputs), "\n"); strings.Contains(diff, "value-") || !strings.Contains(diff, "TOKEN") {
		t.Errorf("miss explanation %q: want TOKEN named, no value", diff)
	}
}
