package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The e2e pipelines run through `hm run --backend remote` against a server with two sandbox
// agents give the step results and event sequences of the same build run locally.
func TestRemoteParity(t *testing.T) { remoteStores(t, testRemoteParity) }

func testRemoteParity(t *testing.T, st remoteStore) {
	c := remoteStart(t, st)

	// Cases built from one IR, run locally and remotely with the same flags.
	simple := []struct {
		name  string
		doc   string
		args  []string
		code  int
		lines bool
		check func(t *testing.T, local, remote remoteBuild)
	}{
		{name: "fan-out passes", code: 0, lines: true, args: []string{"--parallelism", "4"},
			doc: graph(0, []string{
				stepJSON("root", "echo root > r.txt; echo root", ""),
				stepJSON("a", "cat r.txt; echo a", ""),
				stepJSON("b", "cat r.txt; echo b >&2", ""),
				stepJSON("c", "echo c", ""),
				stepJSON("join", "echo join", ""),
			}, `[0,1,"builds_in"],[0,2,"builds_in"],[0,3,"depends_on"],[1,4,"depends_on"],[2,4,"depends_on"],[3,4,"depends_on"]`)},
		{name: "fail-fast", code: 1, args: []string{"--parallelism", "2"},
			doc: graph(0, []string{
				stepJSON("sleeper", "echo started; sleep 30", ""),
				stepJSON("bad", "sleep 2; exit 3", ""),
			}, ""),
			check: func(t *testing.T, _, r remoteBuild) {
				if !strings.Contains(strings.Join(r.steps["sleeper"], ","), `"exit_code":130`) {
					t.Errorf("the sleeper was not canceled (130): %v", r.steps["sleeper"])
				}
			}},
		{name: "keep-going", code: 1, lines: true, args: []string{"-k", "--parallelism", "2"},
			doc: graph(0, []string{
				stepJSON("sibling", "sleep 1; echo finished", ""),
				stepJSON("bad", "exit 2", ""),
				stepJSON("after-bad", "echo never", ""),
			}, `[1,2,"depends_on"]`)},
		{name: "barrier continue_on_failure", code: 1, lines: true, args: []string{"--file", fixture(t, "wait-barrier.flat.json"), "--parallelism", "1"}},
		{name: "barrier continue_on_failure -k", code: 1, lines: true, args: []string{"--file", fixture(t, "wait-barrier.flat.json"), "-k"}},
		{name: "step timeout", code: 1, lines: true,
			doc: graph(0, []string{stepJSON("slow", "sleep 30", `"timeout_seconds":2`)}, "")},
		{name: "pipeline timeout", code: 124, lines: true,
			doc: graph(3, []string{stepJSON("slow", "sleep 30", "")}, "")},
		{name: "pipeline --timeout", code: 124, lines: true, args: []string{"--timeout", "3s"},
			doc: graph(0, []string{stepJSON("slow", "sleep 30", "")}, "")},
		// Retry policies: step_retry, the attempt of step_log and step_end and HM_ATTEMPT as
		// locally; each attempt a fresh machine (flaky checks), a builds_in child retried
		// from its parent's snapshot, a policy exhausted, a code the policy does not list.
		{name: "retry policies", code: 1, lines: true, args: []string{"-k", "--parallelism", "4"},
			doc: graph(0, []string{
				stepJSON("flaky", flaky, `"retry":{"limit":2}`),
				stepJSON("child", `test -e left-by-a-failed-attempt || { echo "not on the parent snapshot"; exit 98; }; echo "child $HM_ATTEMPT"; test "$HM_ATTEMPT" -ge 2 || exit 5`,
					`"retry":{"limit":1,"on":[5]}`),
				stepJSON("exhausted", `echo "try $HM_ATTEMPT"; exit 3`, `"retry":{"limit":1,"on":[3]}`),
				stepJSON("other-code", `echo "once $HM_ATTEMPT"; exit 4`, `"retry":{"limit":2,"on":[3]}`),
			}, `[0,1,"builds_in"]`),
			check: func(t *testing.T, _, r remoteBuild) {
				want := map[string][]string{"flaky": {"attempt 1", "attempt 2", "attempt 3"}, "child": {"child 1", "child 2"},
					"exhausted": {"try 1", "try 2"}, "other-code": {"once 1"}}
				for k, w := range want {
					if diff := cmp.Diff(w, r.logs[k]["stdout"]); diff != "" {
						t.Errorf("%s printed (-want +got):\n%s", k, diff)
					}
				}
			}},
	}
	for _, tc := range simple {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			args := tc.args
			if tc.doc != "" {
				args = append([]string{"--file", e.writeIR("p.json", tc.doc)}, args...)
			}
			local := remoteLocal(e, args...)
			remote := c.run(e, args...)
			if remote.code != tc.code {
				t.Errorf("remote exit %d, want %d", remote.code, tc.code)
			}
			l, r := remoteSame(t, local, remote, tc.lines)
			if tc.check != nil {
				tc.check(t, l, r)
			}
		})
	}

	t.Run("SIGINT", func(t *testing.T) {
		e := newEnv(t)
		mark := strconv.Itoa(int(time.Now().UnixNano()%900000) + 100000)
		// A daemon that ignores SIGTERM and the step's own sleep, both carrying the marker.
		stubborn := fmt.Sprintf(`sh -c 'trap "" TERM; sleep %s1' & echo ready; sleep %s2`, mark, mark)
		doc := graph(0, []string{stepJSON("first", "echo first", ""), stepJSON("stuck", stubborn, ""), stepJSON("after", "echo after", "")},
			`[0,1,"depends_on"],[1,2,"depends_on"]`)
		args := []string{"--file", e.writeIR("p.json", doc)}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		local := remoteUntilReady(t, e.cmd(ctx, append(append([]string{"run", "--backend", "sandbox", "--format", "json"}, remoteImages...), args...)...))
		if left := processesWith(mark); len(left) > 0 {
			t.Fatalf("the local build left step processes: %v", left)
		}
		remote := remoteUntilReady(t, c.remoteCmd(ctx, e, args...))
		if remote.code != 130 {
			t.Errorf("remote exit %d, want 130", remote.code)
		}
		remoteSame(t, local, remote, true)
		// The client exits once the build ended canceled: by then the agent has killed it.
		if left := processesWith(mark); len(left) > 0 {
			t.Errorf("step processes left on the agent: %v", left)
		}
		for _, a := range c.agents {
			if left := remoteLeftovers(t, a.state); len(left) > 0 {
				t.Errorf("agent %s left: %v", a.state, left)
			}
		}
	})

	t.Run("20000 lines and a 1 MiB line", func(t *testing.T) {
		e := newEnv(t)
		cmd := `i=1; while [ $i -le 20000 ]; do if [ $((i % 2)) -eq 1 ]; then echo "out $i"; else echo "err $i" >&2; fi; i=$((i+1)); done; ` +
			`big=$(head -c 524288 /dev/zero | tr '\0' x); printf '%s' "$big"; printf '%s' "$big"`
		args := []string{"--file", e.writeIR("p.json", graph(0, []string{stepJSON("flood", cmd, "")}, ""))}
		remote := c.run(e, args...)
		if remote.code != 0 {
			t.Fatalf("remote exit %d\n%s", remote.code, remote.stderr)
		}
		r := remoteReduce(t, remote.stdout)
		var wantOut, wantErr []string
		for i := 1; i <= 20000; i += 2 {
			wantOut = append(wantOut, fmt.Sprintf("out %d", i))
			wantErr = append(wantErr, fmt.Sprintf("err %d", i+1))
		}
		wantOut = append(wantOut, strings.Repeat("x", 1<<20))
		got := r.logs["flood"]
		if len(got["stdout"]) != len(wantOut) || len(got["stderr"]) != len(wantErr) {
			t.Fatalf("%d stdout and %d stderr lines, want %d and %d", len(got["stdout"]), len(got["stderr"]), len(wantOut), len(wantErr))
		}
		for i := range wantOut {
			if got["stdout"][i] != wantOut[i] {
				t.Fatalf("stdout line %d is %q, want %q", i, truncate(got["stdout"][i]), truncate(wantOut[i]))
			}
		}
		if diff := cmp.Diff(wantErr, got["stderr"]); diff != "" {
			t.Fatalf("stderr (-want +got):\n%s", remoteTail(diff, 3000))
		}
		remoteSame(t, remoteLocal(e, args...), remote, true)
	})

	t.Run("parallelism 2 across agents", func(t *testing.T) {
		e := newEnv(t)
		var steps []string
		for i := 0; i < 6; i++ {
			steps = append(steps, stepJSON(fmt.Sprintf("s%d", i), `echo "start $(date +%s%N)"; sleep 1; echo "end $(date +%s%N)"`, ""))
		}
		args := []string{"--file", e.writeIR("p.json", graph(0, steps, "")), "--parallelism", "2"}
		remote := c.run(e, args...)
		if remote.code != 0 {
			t.Fatalf("remote exit %d\n%s", remote.code, remote.stderr)
		}
		_, r := remoteSame(t, remoteLocal(e, args...), remote, false)
		type edge struct {
			at    int64
			delta int
		}
		var edges []edge
		for key, l := range r.logs {
			out := l["stdout"]
			if len(out) != 2 {
				t.Fatalf("%s printed %q", key, out)
			}
			for i, prefix := range []string{"start ", "end "} {
				ns, err := strconv.ParseInt(strings.TrimPrefix(out[i], prefix), 10, 64)
				if err != nil || !strings.HasPrefix(out[i], prefix) {
					t.Fatalf("%s printed %q", key, out)
				}
				edges = append(edges, edge{ns, 1 - 2*i})
			}
		}
		// Ends before starts at the same instant: touching intervals do not overlap.
		sort.Slice(edges, func(i, j int) bool {
			if edges[i].at != edges[j].at {
				return edges[i].at < edges[j].at
			}
			return edges[i].delta < edges[j].delta
		})
		running, most := 0, 0
		for _, e := range edges {
			running += e.delta
			most = max(most, running)
		}
		if most > 2 {
			t.Errorf("%d steps ran at once across the agents, want at most 2", most)
		}
		var per []int
		for i := range steps {
			n := c.agentSteps(fmt.Sprintf("s%d", i))
			if per == nil {
				per = make([]int, len(n))
			}
			for j := range n {
				per[j] += n[j]
			}
		}
		t.Logf("at most %d steps at once; steps per agent %v", most, per)
	})

	t.Run("cache", func(t *testing.T) {
		e := newEnv(t)
		local := newEnv(t)
		local.srcDir = e.srcDir
		token := strconv.FormatInt(time.Now().UnixNano(), 36)
		writeTree(t, e.srcDir, map[string]string{"deps.lock": "lock-1\n", "src.txt": "src-1\n", ".hm/ci.json": threeLevel(token)})
		hits := func(b remoteBuild) []string {
			var out []string
			for k, evs := range b.steps {
				if strings.Contains(strings.Join(evs, ","), `"kind":"step_cache_hit"`) {
					out = append(out, k)
				}
			}
			sort.Strings(out)
			return out
		}
		var localNotes, remoteNotes []map[string][]string
		var localEntries, remoteEntries []bool // step_cache_hit.entry set, per hit
		for i, want := range []struct {
			edit map[string]string
			hits []string
			src  string
		}{
			{hits: nil, src: "src-1"},
			{hits: []string{"middle", "root"}, src: "src-1"},
			{edit: map[string]string{"src.txt": "src-2\n"}, hits: []string{"middle", "root"}, src: "src-2"},
			// A miss explained by what differs from the step's last entry.
			{edit: map[string]string{"deps.lock": "lock-2\n"}, hits: []string{"root"}, src: "src-2"},
		} {
			writeTree(t, e.srcDir, want.edit)
			ran := func() [][]int { // per hit step, how often each agent finished it
				var out [][]int
				for _, k := range want.hits {
					out = append(out, c.agentSteps(k))
				}
				return out
			}
			before := ran()
			remote := c.run(e)
			l, r := remoteSame(t, remoteLocal(local), remote, true)
			localNotes, remoteNotes = append(localNotes, l.missNotes), append(remoteNotes, r.missNotes)
			for _, set := range l.entries {
				localEntries = append(localEntries, set)
			}
			for _, set := range r.entries {
				remoteEntries = append(remoteEntries, set)
			}
			if remote.code != 0 {
				t.Fatalf("run %d: remote exit %d\n%s", i, remote.code, remote.stderr)
			}
			if diff := cmp.Diff(want.hits, hits(r)); diff != "" {
				t.Errorf("run %d: remote cache hits (-want +got):\n%s", i, diff)
			}
			if diff := cmp.Diff(want.hits, hits(l)); diff != "" {
				t.Errorf("run %d: local cache hits (-want +got):\n%s", i, diff)
			}
			if diff := cmp.Diff([]string{want.src}, r.logs["leaf-src"]["stdout"]); diff != "" {
				t.Errorf("run %d: leaf-src saw (-want +got):\n%s", i, diff)
			}
			if diff := cmp.Diff([]string{"tool-v1"}, r.logs["leaf-tool"]["stdout"]); diff != "" {
				t.Errorf("run %d: leaf-tool saw (-want +got):\n%s", i, diff)
			}
			if after := ran(); !cmp.Equal(before, after) {
				t.Errorf("run %d: an agent ran a cache hit: %v finished per agent %v before, %v after", i, want.hits, before, after)
			}
		}
		t.Run("misses explained as locally", func(t *testing.T) {
			if len(localNotes) == 0 || len(localNotes[0]) == 0 {
				t.Fatalf("the first local run explained no miss: %v", localNotes)
			}
			t.Logf("remote miss lines per run: %v", remoteNotes)
			if !strings.Contains(fmt.Sprint(remoteNotes[len(remoteNotes)-1]), "file deps.lock changed") {
				t.Errorf("the last run's miss does not say deps.lock changed: %v", remoteNotes[len(remoteNotes)-1])
			}
			if diff := cmp.Diff(localNotes, remoteNotes); diff != "" {
				t.Errorf("cache miss lines per run (-local +remote):\n%s", diff)
			}
			if diff := cmp.Diff(localEntries, remoteEntries); diff != "" {
				t.Errorf("step_cache_hit.entry set (-local +remote):\n%s", diff)
			}
		})
	})

	// Last: what the builds above left on the agents.
	t.Run("ephemeral snapshots dropped", func(t *testing.T) {
		// The agents learn the removals from their alive call (every 10 s).
		var left []string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			left = nil
			for _, a := range c.agents {
				m, _ := filepath.Glob(filepath.Join(a.state, "sandbox/snaps/e-*"))
				left = append(left, m...)
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(left) > 0 {
			t.Errorf("the ephemeral snapshots of builds_in parents stay on the agents 30 s after their builds ended: %d left, e.g. %s",
				len(left), left[0])
		}
		removed := 0
		for _, a := range c.agents {
			b, _ := os.ReadFile(a.log)
			removed += strings.Count(string(b), `msg="ephemeral snapshot removed"`)
		}
		if removed == 0 {
			t.Errorf("no agent logged an ephemeral snapshot removal: the builds above made none, or nothing removed them")
		}
	})
}
