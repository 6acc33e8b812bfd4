package pipeline_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/pipeline"
)

func render(t *testing.T, p pipeline.Pipeline) *ir.Pipeline {
	t.Helper()
	data, err := p.IR(pipeline.WithDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ir.Parse(data)
	if err != nil {
		t.Fatalf("rendered IR does not parse: %v\n%s", err, data)
	}
	return parsed
}

type edgeView struct {
	From, To string
	Kind     ir.EdgeKind
	COF      bool
}

func keysOf(p *ir.Pipeline) ([]string, []edgeView) {
	var keys []string
	for _, n := range p.Nodes {
		keys = append(keys, n.Step.Key)
	}
	var edges []edgeView
	for _, e := range p.Edges {
		edges = append(edges, edgeView{keys[e.From], keys[e.To], e.Kind, e.ContinueOnFailure})
	}
	return keys, edges
}

func TestOrderAndEdges(t *testing.T) {
	base := pipeline.Sh("base", "make tools").Cache(pipeline.Forever())
	test := base.Sh("test", "make test")
	lint := base.Sh("lint", "make lint")
	p := pipeline.New("ci",
		test, lint, // base comes first, once
		pipeline.Sh("docs", "make docs").Fork(
			pipeline.Sh("site", "make site"),
			pipeline.Sh("pdf", "make pdf").Fork(pipeline.Sh("print", "lp doc.pdf")),
		),
		pipeline.Wait(),
		pipeline.Sh("report", "echo done").After(lint).AfterKeys("print"),
	)
	keys, edges := keysOf(render(t, p))
	wantKeys := []string{"base", "test", "lint", "docs", "site", "pdf", "print", "report"}
	if diff := cmp.Diff(wantKeys, keys); diff != "" {
		t.Errorf("node order (-want +got):\n%s", diff)
	}
	b, d := ir.BuildsIn, ir.DependsOn
	wantEdges := []edgeView{
		{"base", "test", b, false}, {"base", "lint", b, false},
		{"docs", "site", b, false}, {"docs", "pdf", b, false}, {"pdf", "print", b, false},
		// the barrier: everything before it; After(lint) and print are already among them.
		{"base", "report", d, false}, {"test", "report", d, false}, {"lint", "report", d, false},
		{"docs", "report", d, false}, {"site", "report", d, false}, {"pdf", "report", d, false},
		{"print", "report", d, false},
	}
	if diff := cmp.Diff(wantEdges, edges); diff != "" {
		t.Errorf("edges (-want +got):\n%s", diff)
	}
}

// The graph form's expansion of wait barriers must be the flat form's (ir-v0.md §2): render the
// same items once with plain barriers (graph form) and once with continue_on_failure barriers
// (flat form, expanded by ir.Parse) and compare the edges.
func TestBarriersMatchFlatForm(t *testing.T) {
	items := func(cof bool) []pipeline.Item {
		w := pipeline.Wait().ContinueOnFailure(cof)
		a := pipeline.Sh("a", "true")
		return []pipeline.Item{
			a, a.Sh("a1", "true"), pipeline.Sh("b", "true"),
			w, w, // an empty section keeps the previous barrier's predecessors
			pipeline.Sh("c", "true"), a.Sh("a2", "true"),
			w,
			pipeline.Sh("d", "true"),
		}
	}
	graph := render(t, pipeline.New("ci", items(false)...))
	flat := render(t, pipeline.New("ci", items(true)...))
	if graph.Form != ir.FormGraph || flat.Form != ir.FormFlat {
		t.Fatalf("forms: %s and %s, want graph and flat", graph.Form, flat.Form)
	}
	_, ge := keysOf(graph)
	_, fe := keysOf(flat)
	for i := range fe {
		if fe[i].Kind == ir.DependsOn && !fe[i].COF {
			t.Errorf("flat edge %v lost continue_on_failure", fe[i])
		}
		fe[i].COF = false
	}
	sortEdges := func(es []edgeView) {
		for i := range es {
			for j := i + 1; j < len(es); j++ {
				a, b := es[i], es[j]
				if b.To < a.To || b.To == a.To && (b.From < a.From || b.From == a.From && b.Kind < a.Kind) {
					es[i], es[j] = b, a
				}
			}
		}
	}
	// The flat form repeats a builds_in parent as a depends_on predecessor; the graph form
	// keeps only the builds_in edge.
	var fe2 []edgeView
	for _, e := range fe {
		if e.Kind == ir.DependsOn && contains(fe, edgeView{e.From, e.To, ir.BuildsIn, false}) {
			continue
		}
		fe2 = append(fe2, e)
	}
	sortEdges(ge)
	sortEdges(fe2)
	if diff := cmp.Diff(fe2, ge); diff != "" {
		t.Errorf("edges (-flat +graph):\n%s", diff)
	}
}

func contains(es []edgeView, e edgeView) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

func TestImmutable(t *testing.T) {
	base := pipeline.Sh("base", "make").Env("A", "1")
	child := base.Sh("child", "make test")
	relabeled := base.Label("Base").Env("A", "2").Env("B", "3")
	_ = relabeled
	p1 := pipeline.New("ci", child).Env("X", "1")
	p2 := p1.Env("X", "2").Add(pipeline.Sh("extra", "true"))
	got := render(t, p1)
	if len(got.Nodes) != 2 {
		t.Fatalf("p1 has %d nodes, want 2: Add changed its receiver", len(got.Nodes))
	}
	if n := got.Nodes[0]; n.Step.Label != "" || n.Env["A"] != "1" || n.Env["B"] != "" || n.Env["X"] != "1" {
		t.Errorf("base changed through a copy: label %q env %v", n.Step.Label, n.Env)
	}
	if n := render(t, p2).Nodes[0]; n.Env["X"] != "2" {
		t.Errorf("p2 env X = %q, want 2", n.Env["X"])
	}
}

func TestRenderFields(t *testing.T) {
	p := pipeline.New("ci",
		pipeline.Sh("build", "make").Label(":hammer: build").Image("debian:bookworm").
			Timeout(10*time.Minute).Env("CC", "gcc").Cache(pipeline.OnChange("Makefile")).Secrets("NPM_TOKEN", "GH_TOKEN"),
	).DefaultImage("alpine:3.20").Timeout(time.Hour).Env("CI", "true").Env("CC", "cc")
	got := render(t, p)
	if got.DefaultImage != "alpine:3.20" || got.TimeoutSeconds != 3600 {
		t.Errorf("pipeline fields: image %q timeout %d", got.DefaultImage, got.TimeoutSeconds)
	}
	st := got.Nodes[0].Step
	want := ir.Step{Key: "build", Cmd: "make", Label: ":hammer: build", Image: "debian:bookworm", TimeoutSeconds: 600,
		Cache: &ir.Cache{Policy: "on_change", Paths: []string{"Makefile"}, Key: st.Cache.Key}, Secrets: []string{"NPM_TOKEN", "GH_TOKEN"}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("step (-want +got):\n%s", diff)
	}
	if len(st.Cache.Key) != 64 {
		t.Errorf("cache key %q is not 64 hex characters", st.Cache.Key)
	}
	if diff := cmp.Diff(map[string]string{"CI": "true", "CC": "gcc"}, got.Nodes[0].Env); diff != "" {
		t.Errorf("env: step must win over pipeline (-want +got):\n%s", diff)
	}
}

func TestDeterministic(t *testing.T) {
	mk := func() pipeline.Pipeline {
		p := pipeline.New("ci")
		for _, k := range []string{"z", "a", "m", "b"} {
			p = p.Env(k, k).Add(pipeline.Sh(k, "echo "+k).Env(k+"1", "1").Env(k+"0", "0"))
		}
		return p
	}
	first, err := mk().IR()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := mk().IR()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, again) {
			t.Fatalf("renders differ:\n%s\n---\n%s", first, again)
		}
	}
}

func TestErrors(t *testing.T) {
	a := pipeline.Sh("a", "true")
	tests := []struct {
		name    string
		p       pipeline.Pipeline
		code    string
		mention string
	}{
		{"no slug", pipeline.New("", a), "pipeline_slug", "no slug"},
		{"bad slug", pipeline.New("my ci", a), "pipeline_slug", `"my ci"`},
		{"empty", pipeline.New("ci"), "pipeline_empty", "no steps"},
		{"no key", pipeline.New("ci", pipeline.Sh("", "true")), "step_key", "no key"},
		{"no cmd", pipeline.New("ci", pipeline.Sh("a", "")), "step_cmd", "empty command"},
		{"duplicate key", pipeline.New("ci", a, pipeline.Sh("a", "false")), "step_duplicate_key", `"a"`},
		{"image on child", pipeline.New("ci", a.Sh("b", "true").Image("alpine")), "step_image", `"b" builds in "a"`},
		{"fractional timeout", pipeline.New("ci", a.Timeout(1500*time.Millisecond)), "step_timeout", "whole number"},
		{"pipeline timeout", pipeline.New("ci", a).Timeout(-time.Second), "pipeline_timeout", "whole number"},
		{"unknown after", pipeline.New("ci", a.AfterKeys("nope")), "step_after", `"nope"`},
		{"after cycle", pipeline.New("ci", a.AfterKeys("b"), pipeline.Sh("b", "true").After(a)), "ir_cycle", "cycle"},
		{"after with cof wait", pipeline.New("ci", a, pipeline.Wait().ContinueOnFailure(true), pipeline.Sh("b", "true").After(a)),
			"step_after", "continue_on_failure"},
		{"wait in fork", pipeline.New("ci", a.Fork(pipeline.Wait())), "pipeline_wait", `"a"`},
		{"fork a child of another", pipeline.New("ci", pipeline.Sh("x", "true").Fork(a.Sh("b", "true"))), "step_parent", "already builds in"},
		{"nested compose", pipeline.New("ci", a.Cache(pipeline.Compose(pipeline.Compose(pipeline.Forever())))), "step_cache", "nested"},
		{"empty compose", pipeline.New("ci", a.Cache(pipeline.Compose())), "step_cache", "at least one"},
		{"ttl fraction", pipeline.New("ci", a.Cache(pipeline.TTL(time.Millisecond))), "step_cache", "whole number"},
		{"env keys on on_change", pipeline.New("ci", a.Cache(pipeline.OnChange("x").EnvKeys("A"))), "step_cache", "env_keys"},
		{"zero cache", pipeline.New("ci", a.Cache(pipeline.Cache{})), "step_cache", "unknown cache policy"},
		{"bad secret name", pipeline.New("ci", a.Secrets("NPM-TOKEN")), "step_secrets", `"NPM-TOKEN"`},
		{"uncached parent", pipeline.New("ci", a.Sh("b", "true").Cache(pipeline.Forever())), "cache_parent_uncached", `"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.p.IR(pipeline.WithDir(t.TempDir()))
			var e *errs.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *errs.Error", err)
			}
			if e.Code != tt.code || !strings.Contains(err.Error(), tt.mention) || e.Fix == "" || !errors.Is(err, errs.ErrInvalid) {
				t.Errorf("err = [%s] %v (fix %q), want code %s mentioning %q", e.Code, err, e.Fix, tt.code, tt.mention)
			}
		})
	}
}
