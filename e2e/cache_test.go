package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// backendCase is a backend the cache scenarios run on, with what it needs.
type backendCase struct {
	name string
	// args select the backend and its image.
	args []string
	// leftovers lists what the backend left behind after a build (containers, mounts,
	// processes, work directories, ephemeral snapshots).
	leftovers func(t *testing.T, stateDir string) []string
	// isolated backends snapshot /opt; the host backend does not.
	isolated bool
	// setup prepares a fresh state dir (importing images), when the backend needs it.
	setup func(t *testing.T, e *env)
	// created counts the machines created per step key in a time window, where the backend
	// can tell (nil otherwise).
	created func(t *testing.T, stateDir string, since, until time.Time) map[string]int
}

// cacheBackends lists the backends available on this machine.
func cacheBackends(t *testing.T) []backendCase {
	out := []backendCase{{name: "host", args: []string{"--backend", "host"}, leftovers: hostLeftovers}}
	out = append(out, extraBackends(t)...)
	return out
}

// extraBackends is extended by the docker and sandbox tests' init functions.
var extraBackendFns []func(t *testing.T) (backendCase, bool)

// newBackendEnv is newEnv prepared for bc.
func newBackendEnv(t *testing.T, bc backendCase) *env {
	t.Helper()
	e := newEnv(t)
	if bc.setup != nil {
		bc.setup(t, e)
	}
	return e
}

func extraBackends(t *testing.T) []backendCase {
	var out []backendCase
	for _, f := range extraBackendFns {
		if c, ok := f(t); ok {
			out = append(out, c)
		}
	}
	return out
}

func hostLeftovers(t *testing.T, stateDir string) []string {
	var out []string
	for _, pattern := range []string{"host/work/*", "host/snap/e-*", "host/trash/*"} {
		m, _ := filepath.Glob(filepath.Join(stateDir, pattern))
		out = append(out, m...)
	}
	return out
}

// threeLevel is the cache scenario's pipeline: a root that installs a file under /opt
// (forever), a middle step keyed on a lock file (on_change), three leaves.
func threeLevel(token string) string {
	opt := "/opt/hm-e2e-" + token
	return graph(0, []string{
		stepJSON("root", "mkdir -p "+opt+" && echo tool-v1 > "+opt+"/tool && echo root-ran", `"image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}`),
		stepJSON("middle", "cp deps.lock middle.txt && echo middle-ran", `"cache":{"policy":"on_change","paths":["deps.lock"]}`),
		stepJSON("leaf-tool", "cat "+opt+"/tool", ""),
		stepJSON("leaf-src", "cat src.txt", ""),
		stepJSON("leaf-middle", "cat middle.txt", ""),
	}, `[0,1,"builds_in"],[1,2,"builds_in"],[1,3,"builds_in"],[1,4,"builds_in"]`)
}

func TestThreeLevelCache(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			token := strconv.FormatInt(time.Now().UnixNano(), 36)
			if !bc.isolated {
				needWritableOpt(t)
				t.Cleanup(func() { os.RemoveAll("/opt/hm-e2e-" + token) })
			}
			writeTree(t, e.srcDir, map[string]string{"deps.lock": "lock-1\n", "src.txt": "src-1\n", ".hm/ci.json": threeLevel(token)})
			run := func(wantHits []string) stepView {
				t.Helper()
				since := time.Now()
				r := e.run(append([]string{"run", "--format", "json"}, bc.args...)...)
				if r.code != 0 {
					t.Fatalf("exit %d:\n%s\n%s", r.code, r.stderr, r.stdout)
				}
				v := view(t, parseEvents(t, r.stdout))
				if bc.created != nil {
					// A hit creates no machine: count the containers really created.
					created := bc.created(t, e.stateDir, since, time.Now())
					for _, k := range wantHits {
						if created[k] != 0 {
							t.Errorf("cache hit %s created %d machines", k, created[k])
						}
					}
					if created["leaf-src"] != 1 {
						t.Errorf("leaf-src created %d machines, want 1 (is the count working?)", created["leaf-src"])
					}
				}
				var hits []string
				for k, kinds := range v.kinds {
					if strings.Contains(strings.Join(kinds, ","), "step_cache_hit") {
						hits = append(hits, k)
						if diff := cmp.Diff([]string{"step_queued", "step_cache_hit", "step_end"}, kinds); diff != "" {
							t.Errorf("%s: a hit must not run (-want +got):\n%s", k, diff)
						}
					}
				}
				if diff := cmp.Diff(wantHits, sortedCopy(hits)); diff != "" {
					t.Errorf("cache hits (-want +got):\n%s", diff)
				}
				if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
					t.Errorf("left behind after the build: %v", left)
				}
				return v
			}
			leaves := func(v stepView, src, lock string) {
				t.Helper()
				want := map[string][]string{"leaf-tool": {"tool-v1"}, "leaf-src": {src}, "leaf-middle": {lock}}
				got := map[string][]string{"leaf-tool": v.lines("leaf-tool"), "leaf-src": v.lines("leaf-src"), "leaf-middle": v.lines("leaf-middle")}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("leaves saw (-want +got):\n%s", diff)
				}
			}

			v := run(nil)
			leaves(v, "src-1", "lock-1")
			v = run([]string{"middle", "root"})
			leaves(v, "src-1", "lock-1")

			// Edited source reaches the leaves although their ancestors were hits.
			writeTree(t, e.srcDir, map[string]string{"src.txt": "src-2\n"})
			v = run([]string{"middle", "root"})
			leaves(v, "src-2", "lock-1")

			// A changed lock file rebuilds the middle step, not the root, and says why.
			writeTree(t, e.srcDir, map[string]string{"deps.lock": "lock-2\n"})
			v = run([]string{"root"})
			leaves(v, "src-2", "lock-2")
			if got := strings.Join(v.lines("middle"), "\n"); !strings.Contains(got, "file deps.lock changed") || !strings.Contains(got, "middle-ran") {
				t.Errorf("middle's miss is not explained by the lock file:\n%s", got)
			}
		})
	}
}

// A failed root commits nothing and runs again next time.
func TestFailedStepCommitsNothing(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			doc := graph(0, []string{
				stepJSON("root", "echo trying; exit 3", `"image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}`),
				stepJSON("child", "true", ""),
			}, `[0,1,"builds_in"]`)
			writeTree(t, e.srcDir, map[string]string{".hm/ci.json": doc})
			for i := 0; i < 2; i++ {
				r := e.run(append([]string{"run", "--format", "json"}, bc.args...)...)
				if r.code != 1 {
					t.Fatalf("run %d: exit %d:\n%s", i, r.code, r.stderr)
				}
				v := view(t, parseEvents(t, r.stdout))
				if diff := cmp.Diff([]string{"step_queued", "step_start", "step_log", "step_log", "step_end", "chain_failed"}, v.kinds["root"]); diff != "" {
					t.Errorf("run %d, root (-want +got):\n%s", i, diff)
				}
				if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
					t.Errorf("left behind: %v", left)
				}
			}
			r := e.run("cache", "ls")
			if strings.Contains(r.stdout, "root") {
				t.Errorf("a failed step was registered:\n%s", r.stdout)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
