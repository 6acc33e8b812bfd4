package e2e

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// hm cache ls | prune | clean list and delete entries and their snapshots, on every backend;
// --no-cache runs cached steps and registers nothing.
func TestCacheCommands(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			var steps []string
			for _, k := range []string{"one", "two", "three"} {
				steps = append(steps, stepJSON(k, "echo "+k+" > "+k+".txt", `"image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}`))
			}
			writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, steps, `[0,1,"builds_in"],[1,2,"builds_in"]`)})
			run := func(extra ...string) stepView {
				t.Helper()
				r := e.run(append(append([]string{"run", "--format", "json"}, bc.args...), extra...)...)
				if r.code != 0 {
					t.Fatalf("exit %d\n%s", r.code, r.stderr)
				}
				return view(t, parseEvents(t, r.stdout))
			}
			hits := func(v stepView) int {
				n := 0
				for _, kinds := range v.kinds {
					if len(kinds) > 1 && kinds[1] == "step_cache_hit" {
						n++
					}
				}
				return n
			}

			if v := run("--no-cache"); hits(v) != 0 || !strings.Contains(strings.Join(v.lines("one"), "\n"), "cache miss: --no-cache") {
				t.Fatalf("--no-cache: %d hits, one says %q", hits(v), v.lines("one"))
			}
			if r := e.run("cache", "ls"); strings.Count(r.stdout, "\n") != 1 {
				t.Errorf("--no-cache registered entries:\n%s", r.stdout)
			}
			run()
			if v := run(); hits(v) != 3 {
				t.Fatalf("second run: %d hits, want 3", hits(v))
			}
			r := e.run("cache", "ls")
			for _, k := range []string{"one", "two", "three", bc.args[1], "ci"} { // args[1]: the --backend value
				if !strings.Contains(r.stdout, k) {
					t.Errorf("cache ls does not show %q:\n%s", k, r.stdout)
				}
			}
			if r := e.run("cache", "prune", "--keep", "1"); r.code != 0 || !strings.Contains(r.stderr, "removed 2 cache entries") {
				t.Errorf("prune: exit %d: %s", r.code, r.stderr)
			}
			if r := e.run("cache", "ls"); strings.Count(r.stdout, "\n") != 2 {
				t.Errorf("after prune --keep 1:\n%s", r.stdout)
			}
			// The pruned snapshots are gone: the steps run again (and re-register).
			if v := run(); hits(v) != 1 {
				t.Errorf("after prune: %d hits, want 1", hits(v))
			}
			if r := e.run("cache", "clean"); r.code != 0 || !strings.Contains(r.stderr, "removed 3 cache entries") {
				t.Errorf("clean: exit %d: %s", r.code, r.stderr)
			}
			if v := run(); hits(v) != 0 {
				t.Errorf("after clean: %d hits", hits(v))
			}
			if r := e.run("cache", "prune"); r.code != 2 {
				t.Errorf("prune without a limit: exit %d, want 2", r.code)
			}
		})
	}
}

// Entries are sized after the build; `[cache] max_size` evicts least recently used entries
// beyond the cap, and `max_entries` beyond the count.
func TestCacheLimits(t *testing.T) {
	e := newEnv(t)
	var steps []string
	for _, k := range []string{"a", "b", "c"} {
		steps = append(steps, stepJSON(k, "head -c 262144 /dev/zero > "+k+".bin", `"cache":{"policy":"forever","env_keys":[]}`))
	}
	writeTree(t, e.srcDir, map[string]string{
		".hm/ci.json":     graph(0, steps, `[0,1,"builds_in"],[1,2,"builds_in"]`),
		".hm/config.toml": "[cache]\nmax_size = \"1MiB\"\n",
	})
	if r := e.run("run", "--backend", "host"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	// Host snapshots are whole copies: a holds 256 KiB, b 512 KiB, c 768 KiB; the 1 MiB cap
	// keeps c (most recently used) and evicts b and a.
	r := e.run("cache", "ls")
	if strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, " c ") || !strings.Contains(r.stdout, "768.0 KiB") {
		t.Errorf("after a 1 MiB cap, cache ls:\n%s", r.stdout)
	}
	writeTree(t, e.srcDir, map[string]string{".hm/config.toml": "[cache]\nmax_entries = 2\n"})
	if r := e.run("run", "--backend", "host"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if r := e.run("cache", "ls"); strings.Count(r.stdout, "\n") != 3 {
		t.Errorf("after max_entries = 2, cache ls:\n%s", r.stdout)
	}
}

// Two hm processes building the same pipeline at once on one state dir end with one
// registered snapshot per step and no unreferenced kept snapshot (the loser drops its own).
func TestConcurrentRunsOneStateDir(t *testing.T) {
	e := newEnv(t)
	var steps []string
	for _, k := range []string{"a", "b", "c"} {
		steps = append(steps, stepJSON(k, "echo "+k+" > "+k+".txt", `"cache":{"policy":"forever","env_keys":[]}`))
	}
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, steps, `[0,1,"builds_in"],[1,2,"builds_in"]`)})
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.cmd(t.Context(), "run", "--backend", "host")
			c.Run()
			codes[i] = c.ProcessState.ExitCode()
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Errorf("run %d exited %d", i, c)
		}
	}
	r := e.run("cache", "ls")
	if n := strings.Count(r.stdout, "\n") - 1; n != 3 {
		t.Errorf("%d entries, want 3:\n%s", n, r.stdout)
	}
	kept, _ := filepath.Glob(filepath.Join(e.stateDir, "host", "snap", "k-*"))
	if len(kept) != 3 {
		t.Errorf("%d kept snapshots on disk, want the 3 registered: %v", len(kept), kept)
	}
}
