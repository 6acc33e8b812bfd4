package plan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/testutil"
)

func mustParse(t *testing.T, data string) *ir.Pipeline {
	t.Helper()
	p, err := ir.Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestChains(t *testing.T) {
	fixture := func(name string) string {
		b, err := os.ReadFile(filepath.Join(testutil.SharedDir(t), "testdata", "ir", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	n := func(k string) string { return `{"step":{"key":"` + k + `","cmd":"true"}}` }
	tests := []struct {
		name     string
		ir       string
		chains   [][]int
		chainIdx []int
	}{
		{"fork-join fixture", fixture("fork-join.graph.json"), [][]int{{0}, {1, 2}, {3}, {4}}, []int{0, 0, 1, 0, 0}},
		{"wait-barrier fixture", fixture("wait-barrier.flat.json"), [][]int{{0}, {1}, {2}, {3}}, []int{0, 0, 0, 0}},
		{"straight chain", `{"version":"0","graph":{"nodes":[` + n("a") + `,` + n("b") + `,` + n("c") + `],
			"edges":[[0,1,"builds_in"],[1,2,"builds_in"]]}}`, [][]int{{0, 1, 2}}, []int{0, 1, 2}},
		{"join breaks chain", `{"version":"0","graph":{"nodes":[` + n("a") + `,` + n("b") + `,` + n("c") + `],
			"edges":[[0,2,"builds_in"],[1,2,"depends_on"]]}}`, [][]int{{0}, {1}, {2}}, []int{0, 0, 0}},
		{"child before parent in index order", `{"version":"0","graph":{"nodes":[` + n("kid") + `,` + n("root") + `],
			"edges":[[1,0,"builds_in"]]}}`, [][]int{{0}, {1}}, []int{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := New(mustParse(t, tt.ir))
			if diff := cmp.Diff(tt.chains, pl.Chains); diff != "" {
				t.Errorf("chains (-want +got):\n%s", diff)
			}
			var idx []int
			for _, s := range pl.Steps {
				idx = append(idx, s.ChainIdx)
			}
			if diff := cmp.Diff(tt.chainIdx, idx); diff != "" {
				t.Errorf("chain_idx (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDisplayName(t *testing.T) {
	tests := []struct {
		step ir.Step
		want string
	}{
		{ir.Step{Label: ":go: build", Cmd: "go build"}, ":go: build"},
		{ir.Step{Cmd: "go test ./..."}, "go test ./..."},
		{ir.Step{Cmd: "0123456789012345678901234567890123456789"}, "0123456789012345678901234567890123456789"},
		{ir.Step{Cmd: "0123456789012345678901234567890123456789X"}, "012345678901234567890123456789012345678…"},
		// Counted in characters, not bytes.
		{ir.Step{Cmd: "ééééééééééééééééééééééééééééééééééééééééé"}, "ééééééééééééééééééééééééééééééééééééééé…"},
	}
	for _, tt := range tests {
		if got := DisplayName(tt.step); got != tt.want {
			t.Errorf("DisplayName(%q) = %q, want %q", tt.step.Cmd, got, tt.want)
		}
	}
}

func TestBarrierAndEdges(t *testing.T) {
	pl := New(mustParse(t, `{"version":"0","env":{"CI":"true"},"default_image":"img","steps":[
		{"type":"command","key":"a","cmd":"x","env":{"Z":"1"}},
		{"type":"command","key":"b","cmd":"x","builds_in":"a"},
		{"type":"wait","continue_on_failure":true},
		{"type":"command","key":"c","cmd":"x","builds_in":"a"},
		{"type":"wait"},
		{"type":"command","key":"d","cmd":"x"}]}`))
	type view struct {
		Parent        int
		Image         string
		Preds         []Pred
		BehindBarrier bool
		Env           []string
	}
	var got []view
	for _, s := range pl.Steps {
		got = append(got, view{s.Parent, s.Image, s.Preds, s.BehindBarrier, s.Env})
	}
	want := []view{
		{-1, "img", nil, false, []string{"CI=true", "Z=1"}},
		{0, "", []Pred{{0, ir.BuildsIn, false}}, false, []string{"CI=true"}},
		// builds_in and the barrier edge from a collapse into one strict builds_in edge.
		{0, "", []Pred{{0, ir.BuildsIn, false}, {1, ir.DependsOn, true}}, true, []string{"CI=true"}},
		{-1, "img", []Pred{{2, ir.DependsOn, false}}, false, []string{"CI=true"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// runner and runner_args reach the plan: the executor decides what to do with them.
func TestRunnerCarried(t *testing.T) {
	pl := New(mustParse(t, `{"version":"0","default_image":"img","steps":[
		{"type":"command","key":"a","cmd":"x","runner":"docker","runner_args":{"cpus":2}},
		{"type":"command","key":"b","cmd":"x"}]}`))
	type view struct {
		Runner, Args string
	}
	var got []view
	for _, s := range pl.Steps {
		got = append(got, view{s.Runner, string(s.RunnerArgs)})
	}
	want := []view{{"docker", `{"cpus":2}`}, {"", ""}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
