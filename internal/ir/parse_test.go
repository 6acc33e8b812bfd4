package ir

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/testutil"
)

func TestParseSharedFixtures(t *testing.T) {
	dir := filepath.Join(testutil.SharedDir(t), "testdata", "ir")
	tests := []struct {
		file  string
		form  Form
		keys  []string
		edges []Edge
		image string // image of node 0
	}{
		{
			file: "fork-join.graph.json", form: FormGraph,
			keys: []string{"setup", "build", "test", "lint", "report"},
			edges: []Edge{
				{0, 1, BuildsIn, false}, {1, 2, BuildsIn, false}, {0, 3, BuildsIn, false},
				{2, 4, DependsOn, false}, {3, 4, DependsOn, false},
			},
			image: "busybox",
		},
		{
			file: "wait-barrier.flat.json", form: FormFlat,
			keys: []string{"compile", "unit", "flaky", "notify"},
			edges: []Edge{
				{0, 1, BuildsIn, false}, {0, 2, BuildsIn, false},
				{0, 3, DependsOn, true}, {1, 3, DependsOn, true}, {2, 3, DependsOn, true},
			},
			image: "busybox",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var keys []string
			for _, n := range p.Nodes {
				keys = append(keys, n.Step.Key)
			}
			if diff := cmp.Diff(tt.keys, keys); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.edges, p.Edges); diff != "" {
				t.Errorf("edges (-want +got):\n%s", diff)
			}
			if p.Form != tt.form {
				t.Errorf("form = %s, want %s", p.Form, tt.form)
			}
			if got := p.Image(0); got != tt.image {
				t.Errorf("image = %q, want %q", got, tt.image)
			}
			if string(p.Raw) != string(data) {
				t.Error("Raw does not keep the original bytes")
			}
		})
	}
}

func TestParseFlatEnvMerge(t *testing.T) {
	p, err := Parse([]byte(`{"version":"0","env":{"CI":"true","A":"pipe"},"steps":[
		{"type":"command","key":"a","cmd":"x","env":{"A":"step"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CI": "true", "A": "step"}
	if diff := cmp.Diff(want, p.Nodes[0].Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestParseEvalCmdAndOptional(t *testing.T) {
	p, err := Parse([]byte(`{"version":"0","timeout_seconds":30,"graph":{"nodes":[
		{"step":{"key":"a","eval":{"type":"cmd","cmd":"echo hi"},"cache":{"policy":"ttl","duration_seconds":60},
		 "future_field":{"x":1}}}],"edges":[]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Pipeline{Version: "0", TimeoutSeconds: 30, Form: FormGraph, Nodes: []Node{{
		Step: Step{Key: "a", Cmd: "echo hi", Cache: &Cache{Policy: "ttl", DurationSeconds: 60}},
		Env:  map[string]string{},
	}}}
	if diff := cmp.Diff(want, p, cmpopts.IgnoreFields(Pipeline{}, "Raw")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := p.Image(0); got != FallbackImage {
		t.Errorf("image = %q, want fallback %q", got, FallbackImage)
	}
}

// Every invalid case of ir-v0.md §4: each must be rejected as ErrInvalid with a message naming
// the culprit and a fix.
func TestParseInvalid(t *testing.T) {
	g := func(nodes, edges string) string {
		return `{"version":"0","graph":{"nodes":[` + nodes + `],"edges":[` + edges + `]}}`
	}
	n := func(key string) string { return `{"step":{"key":"` + key + `","cmd":"true"}}` }
	three := n("a") + "," + n("b") + "," + n("c")
	tests := []struct {
		name, ir, code string
		mention        []string
	}{
		{"malformed json", `{"version":"0",`, "ir_malformed", []string{"line 1"}},
		{"wrong type", `{"version":"0","graph":{"nodes":[{"step":{"key":1,"cmd":"x"}}]}}`, "ir_malformed", []string{"key"}},
		{"trailing data", `{"version":"0","graph":{"nodes":[]}} {}`, "ir_malformed", []string{"after"}},
		{"no version", `{"graph":{"nodes":[]}}`, "ir_version", []string{"no version"}},
		{"unsupported version", `{"version":"1","graph":{"nodes":[]}}`, "ir_version", []string{`"1"`}},
		{"neither form", `{"version":"0"}`, "ir_malformed", []string{"graph"}},
		{"missing key", g(`{"step":{"cmd":"true"}}`, ""), "ir_missing_key", []string{"#0"}},
		{"empty key", g(`{"step":{"key":"","cmd":"true"}}`, ""), "ir_missing_key", []string{"#0"}},
		{"missing cmd", g(`{"step":{"key":"build"}}`, ""), "ir_missing_cmd", []string{`"build"`}},
		{"duplicate key", g(n("a")+","+n("a"), ""), "ir_duplicate_key", []string{`"a"`, "#0", "#1"}},
		{"edge out of range", g(n("a"), `[0,5,"builds_in"]`), "ir_edge", []string{"#0", "[0, 5]"}},
		{"negative endpoint", g(n("a"), `[-1,0,"builds_in"]`), "ir_edge", []string{"#0"}},
		{"unknown edge kind", g(n("a")+","+n("b"), `[0,1,"needs"]`), "ir_edge", []string{`"needs"`, "a → b"}},
		{"short edge", g(n("a")+","+n("b"), `[0,1]`), "ir_edge", []string{"#0"}},
		{"self edge", g(n("a"), `[0,0,"depends_on"]`), "ir_self_edge", []string{`"a"`}},
		{"cycle", g(three, `[0,1,"depends_on"],[1,2,"depends_on"],[2,0,"builds_in"]`), "ir_cycle", []string{"a → b → c → a"}},
		{"two builds_in parents", g(three, `[0,2,"builds_in"],[1,2,"builds_in"]`), "ir_builds_in", []string{`"c"`, `"a"`, `"b"`}},
		{"step timeout zero", g(`{"step":{"key":"t","cmd":"x","timeout_seconds":0}}`, ""), "ir_timeout", []string{`"t"`}},
		{"step timeout negative", g(`{"step":{"key":"t","cmd":"x","timeout_seconds":-5}}`, ""), "ir_timeout", []string{`"t"`}},
		{"step timeout fraction", g(`{"step":{"key":"t","cmd":"x","timeout_seconds":1.5}}`, ""), "ir_timeout", []string{`"t"`}},
		{"pipeline timeout zero", `{"version":"0","timeout_seconds":0,"graph":{"nodes":[]}}`, "ir_timeout", []string{"pipeline"}},
		{"flat builds_in unknown", `{"version":"0","steps":[{"type":"command","key":"a","cmd":"x","builds_in":"nope"}]}`, "ir_builds_in", []string{`"a"`, `"nope"`, "unknown"}},
		{"flat builds_in later", `{"version":"0","steps":[{"type":"command","key":"a","cmd":"x","builds_in":"b"},{"type":"command","key":"b","cmd":"y"}]}`, "ir_builds_in", []string{`"a"`, `"b"`, "later"}},
		{"flat builds_in self", `{"version":"0","steps":[{"type":"command","key":"a","cmd":"x","builds_in":"a"}]}`, "ir_builds_in", []string{`"a"`}},
		{"unknown runner", g(`{"step":{"key":"r","cmd":"x","runner":"k8s"}}`, ""), "ir_runner", []string{`"r"`, `"k8s"`}},
		{"unknown cache policy", g(`{"step":{"key":"c","cmd":"x","cache":{"policy":"always"}}}`, ""), "ir_cache_policy", []string{`"c"`, `"always"`}},
		{"unknown sub policy", g(`{"step":{"key":"c","cmd":"x","cache":{"policy":"compose","sub_policies":[{"policy":"sometimes"}]}}}`, ""), "ir_cache_policy", []string{`"sometimes"`}},
		{"node holes", `{"version":"0","graph":{"nodes":[],"node_holes":[1]}}`, "ir_malformed", []string{"node_holes"}},
		{"undirected", `{"version":"0","graph":{"nodes":[],"edge_property":"undirected"}}`, "ir_malformed", []string{"edge_property"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.ir))
			if err == nil {
				t.Fatal("Parse accepted invalid IR")
			}
			if !errors.Is(err, errs.ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
			var e *errs.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *errs.Error", err)
			}
			if e.Code != tt.code {
				t.Errorf("code = %q, want %q (%s)", e.Code, tt.code, e.Msg)
			}
			if e.Fix == "" {
				t.Error("no fix")
			}
			for _, m := range tt.mention {
				if !strings.Contains(e.Msg, m) {
					t.Errorf("message %q does not mention %q", e.Msg, m)
				}
			}
			if errs.ExitCode(err) != errs.ExitInvalid {
				t.Errorf("exit code %d, want %d", errs.ExitCode(err), errs.ExitInvalid)
			}
		})
	}
}

func TestParseDeepChainNoStackOverflow(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"version":"0","graph":{"nodes":[`)
	const n = 20000
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"step":{"key":"s` + itoa(i) + `","cmd":"true"}}`)
	}
	b.WriteString(`],"edges":[`)
	for i := 1; i < n; i++ {
		if i > 1 {
			b.WriteString(",")
		}
		b.WriteString(`[` + itoa(i-1) + `,` + itoa(i) + `,"builds_in"]`)
	}
	b.WriteString(`]}}`)
	p, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Nodes) != n {
		t.Fatalf("got %d nodes", len(p.Nodes))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestRetryAndSource(t *testing.T) {
	graph := func(step, top string) []byte {
		return []byte(`{"version":"0"` + top + `,"graph":{"nodes":[{"step":{"key":"a","cmd":"true"` + step + `}}],"edges":[]}}`)
	}
	p, err := Parse(graph(`,"retry":{"limit":2,"on":[3,-1]}`, `,"source":{"git":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Nodes[0].Step.Retry; r == nil || r.Limit != 2 || len(r.On) != 2 || r.On[0] != 3 || r.On[1] != -1 {
		t.Errorf("retry = %+v", r)
	}
	if !p.Source.Git {
		t.Error("source.git not read")
	}
	p, err = Parse(graph(``, ``))
	if err != nil || p.Nodes[0].Step.Retry != nil || p.Source.Git {
		t.Errorf("defaults: %+v %+v %v", p.Nodes[0].Step.Retry, p.Source, err)
	}
	for _, bad := range []struct{ step, top, code string }{
		{`,"retry":{"limit":11}`, ``, "ir_retry"},
		{`,"retry":{"limit":-1}`, ``, "ir_retry"},
		{`,"retry":{"limit":1.5}`, ``, "ir_retry"},
		{`,"retry":{}`, ``, "ir_retry"},
		{`,"retry":{"limit":1,"on":[0]}`, ``, "ir_retry"},
		{`,"retry":{"limit":1,"on":[256]}`, ``, "ir_retry"},
		{`,"retry":{"limit":1,"tries":3}`, ``, "ir_retry"},
		{`,"retry":3`, ``, "ir_retry"},
		{``, `,"source":{"git":"yes"}`, "ir_source"},
		{``, `,"source":{"svn":true}`, "ir_source"},
	} {
		_, err := Parse(graph(bad.step, bad.top))
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != bad.code || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("%s%s: err = %v, want %s", bad.step, bad.top, err, bad.code)
		}
	}
}
