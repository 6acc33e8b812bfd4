package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/testutil"
)

func fixture(t *testing.T, name string) string {
	return filepath.Join(testutil.SharedDir(t), "testdata", "ir", name)
}

// needWritableOpt gates the fork-join fixture on the host backend, which writes /opt/tools on
// the real host (the host backend does not isolate).
func needWritableOpt(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll("/opt/tools", 0o755); err != nil {
		t.Skipf("the fork-join fixture writes /opt/tools on the host backend: %v", err)
	}
}

func TestForkJoinFixture(t *testing.T) {
	needWritableOpt(t)
	e := newEnv(t)
	r := e.run("run", "--file", fixture(t, "fork-join.graph.json"), "--format", "json", "--backend", "host")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	v := view(t, parseEvents(t, r.stdout))
	ran := []string{"step_queued", "step_start", "step_log*", "step_end"}
	want := map[string][]string{
		"setup":  ran, // its only line says why the cached step runs
		"build":  ran,
		"test":   ran,
		"lint":   ran,
		"report": ran,
	}
	got := map[string][]string{}
	for k, kinds := range v.kinds {
		got[k] = compact(kinds)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("event sequences (-want +got):\n%s", diff)
	}
	if got := v.lines("setup"); len(got) != 1 || !strings.HasPrefix(got[0], "hm: cache miss: no entry ") {
		t.Errorf("setup's miss is not explained: %q", got)
	}
	if diff := cmp.Diff([]string{"1.0"}, v.lines("build")); diff != "" {
		t.Errorf("build did not see setup's /opt file (-want +got):\n%s", diff)
	}
	// test builds in build: it sees out.txt that build wrote into its workspace.
	if diff := cmp.Diff([]string{"tests pass"}, v.lines("test")); diff != "" {
		t.Errorf("test output (-want +got):\n%s", diff)
	}
	if v.buildEnd.ExitCode != 0 {
		t.Errorf("build_end exit %d", v.buildEnd.ExitCode)
	}

	// The second run hits setup's forever cache: no start, a cache hit, its snapshot.
	r = e.run("run", "--file", fixture(t, "fork-join.graph.json"), "--format", "json", "--backend", "host")
	if r.code != 0 {
		t.Fatalf("second run exit %d, stderr:\n%s", r.code, r.stderr)
	}
	v = view(t, parseEvents(t, r.stdout))
	if diff := cmp.Diff([]string{"step_queued", "step_cache_hit", "step_end"}, v.kinds["setup"]); diff != "" {
		t.Errorf("second run, setup (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"1.0"}, v.lines("build")); diff != "" {
		t.Errorf("second run, build output (-want +got):\n%s", diff)
	}
}

func TestWaitBarrierFixture(t *testing.T) {
	for _, keepGoing := range []bool{false, true} {
		name := "fail-fast"
		args := []string{"run", "--file", fixture(t, "wait-barrier.flat.json"), "--format", "json", "--backend", "host"}
		if keepGoing {
			name = "keep-going"
			args = append(args, "-k")
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			r := e.run(args...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
			}
			v := view(t, parseEvents(t, r.stdout))
			if diff := cmp.Diff([]string{"step_queued", "step_start", "step_end", "chain_failed"}, v.kinds["flaky"]); diff != "" {
				t.Errorf("flaky (-want +got):\n%s", diff)
			}
			if v.status["flaky"] != 1 {
				t.Errorf("flaky exit %d", v.status["flaky"])
			}
			// notify is behind a continue_on_failure barrier: it runs despite the failure.
			if diff := cmp.Diff([]string{"notify"}, v.lines("notify")); diff != "" {
				t.Errorf("notify output (-want +got):\n%s", diff)
			}
			if v.status["notify"] != 0 {
				t.Errorf("notify exit %d", v.status["notify"])
			}
			if keepGoing {
				// unit builds in compile: it sees bin.txt from compile's snapshot.
				if diff := cmp.Diff([]string{"compiled"}, v.lines("unit")); diff != "" {
					t.Errorf("unit output (-want +got):\n%s", diff)
				}
			} else if c := v.status["unit"]; c != 0 && c != 130 {
				t.Errorf("unit ended %d, want 0 or canceled (130)", c)
			}
			if v.buildEnd.ExitCode != 1 {
				t.Errorf("build_end exit %d", v.buildEnd.ExitCode)
			}
		})
	}
}

// Every invalid case of ir-v0.md §4 exits 7 before build_start, naming the culprit.
func TestInvalidIR(t *testing.T) {
	n := func(k string) string { return `{"step":{"key":"` + k + `","cmd":"true"}}` }
	g := func(nodes, edges string) string {
		return `{"version":"0","graph":{"nodes":[` + nodes + `],"edges":[` + edges + `]}}`
	}
	tests := []struct {
		name, ir string
		mention  []string
	}{
		{"malformed JSON", `{"version": "0", "graph": {`, []string{"error[ir_malformed]", "line 1"}},
		{"unsupported version", `{"version":"2","graph":{"nodes":[]}}`, []string{"error[ir_version]", `"2"`}},
		{"missing key", g(`{"step":{"cmd":"true"}}`, ""), []string{"error[ir_missing_key]", "#0"}},
		{"missing cmd", g(`{"step":{"key":"lint"}}`, ""), []string{"error[ir_missing_cmd]", `"lint"`}},
		{"duplicate keys", g(n("x")+","+n("x"), ""), []string{"error[ir_duplicate_key]", `"x"`}},
		{"edge out of range", g(n("a"), `[0,9,"depends_on"]`), []string{"error[ir_edge]", "[0, 9]"}},
		{"unknown edge kind", g(n("a")+","+n("b"), `[0,1,"after"]`), []string{"error[ir_edge]", `"after"`}},
		{"self edge", g(n("a"), `[0,0,"builds_in"]`), []string{"error[ir_self_edge]", `"a"`}},
		{"cycle", g(n("a")+","+n("b"), `[0,1,"depends_on"],[1,0,"depends_on"]`), []string{"error[ir_cycle]", "a → b → a"}},
		{"two builds_in parents", g(n("a")+","+n("b")+","+n("c"), `[0,2,"builds_in"],[1,2,"builds_in"]`), []string{"error[ir_builds_in]", `"c"`}},
		{"step timeout 0", g(`{"step":{"key":"t","cmd":"x","timeout_seconds":0}}`, ""), []string{"error[ir_timeout]", `"t"`}},
		{"pipeline timeout negative", `{"version":"0","timeout_seconds":-1,"graph":{"nodes":[]}}`, []string{"error[ir_timeout]", "pipeline"}},
		{"flat builds_in unknown", `{"version":"0","steps":[{"type":"command","key":"a","cmd":"x","builds_in":"ghost"}]}`, []string{"error[ir_builds_in]", `"ghost"`}},
		{"flat builds_in later", `{"version":"0","steps":[{"type":"command","key":"a","cmd":"x","builds_in":"b"},{"type":"command","key":"b","cmd":"x"}]}`, []string{"error[ir_builds_in]", "later"}},
		{"unknown runner", g(`{"step":{"key":"r","cmd":"x","runner":"lambda"}}`, ""), []string{"error[ir_runner]", `"lambda"`}},
		{"unknown cache policy", g(`{"step":{"key":"c","cmd":"x","cache":{"policy":"maybe"}}}`, ""), []string{"error[ir_cache_policy]", `"maybe"`}},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run("run", "--file", e.writeIR("p.json", tt.ir), "--format", "json", "--backend", "host")
			if r.code != 7 {
				t.Errorf("exit %d, want 7; stderr:\n%s", r.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("events were emitted for an invalid pipeline:\n%s", r.stdout)
			}
			for _, m := range tt.mention {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("stderr does not mention %q:\n%s", m, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, "\n  fix    ") {
				t.Errorf("stderr has no fix line:\n%s", r.stderr)
			}
		})
	}
}
