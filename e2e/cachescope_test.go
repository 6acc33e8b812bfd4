package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cobraPipeline is a Go project's pipeline as a new user writes it: deps cached on the module
// files, a child that uses what deps left.
func cobraPipeline(depsCmd, env string) string {
	return `slug: cobra
default_image: host
env:
  GOFLAGS: "` + env + `"
steps:
  - key: deps
    run: ` + depsCmd + `
    cache: {on_change: [go.mod, go.sum]}
    steps:
      - key: test
        run: cat deps.txt
`
}

var missID = regexp.MustCompile(`hm: cache miss: no entry ([0-9a-f]{12})`)

// Editing a cached on_change step's command (or its env) re-runs it and says why: the key,
// byte-identical with the DSLs, ignores both, the registry's fingerprint scope does not.
func TestCacheCommandChange(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{"go.mod": "module example.com/cobra\n", "go.sum": "v1\n"})
	tests := []struct {
		name     string
		pipeline string
		hit      bool
		why      string // in deps' miss line
		test     string // what the child printed
	}{
		{"first run", cobraPipeline("echo deps-v1 > deps.txt", "-mod=mod"), false, "first run of this step", "deps-v1"},
		{"unchanged", cobraPipeline("echo deps-v1 > deps.txt", "-mod=mod"), true, "", "deps-v1"},
		{"command edited", cobraPipeline("echo deps-v2 > deps.txt", "-mod=mod"), false, "command changed since the cached snapshot", "deps-v2"},
		{"edited command cached", cobraPipeline("echo deps-v2 > deps.txt", "-mod=mod"), true, "", "deps-v2"},
		{"env edited", cobraPipeline("echo deps-v2 > deps.txt", "-mod=vendor"), false, "env GOFLAGS changed since the cached snapshot", "deps-v2"},
		{"back to the first command", cobraPipeline("echo deps-v1 > deps.txt", "-mod=mod"), true, "", "deps-v1"},
	}
	for _, tc := range tests {
		writeTree(t, e.srcDir, map[string]string{".hm/pipeline.yaml": tc.pipeline})
		r := e.run("run", "--backend", "host", "--format", "json")
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", tc.name, r.code, r.stderr)
		}
		v := view(t, parseEvents(t, r.stdout))
		hit := len(v.kinds["deps"]) > 1 && v.kinds["deps"][1] == "step_cache_hit"
		if hit != tc.hit {
			t.Errorf("%s: deps hit = %v, want %v; deps logged %q", tc.name, hit, tc.hit, v.lines("deps"))
		}
		if got := strings.Join(v.lines("deps"), "\n"); tc.why != "" && !strings.Contains(got, tc.why) {
			t.Errorf("%s: deps' log does not say %q:\n%s", tc.name, tc.why, got)
		}
		if d := cmp.Diff([]string{tc.test}, v.lines("test")); d != "" {
			t.Errorf("%s: test saw (-want +got):\n%s", tc.name, d)
		}
	}
}

// Two repositories initialised with hm init, with the same pipeline, on one machine: each is
// named after its directory, so project Y never gets project X's snapshot.
func TestInitTwoRepositories(t *testing.T) {
	state := t.TempDir()
	root := t.TempDir()
	body := `steps:
  - key: build
    run: cat who.txt > built.txt
    cache: {on_change: [lock.txt]}
    steps:
      - key: show
        run: cat built.txt
`
	for _, name := range []string{"proj-x", "proj-y"} {
		e := &env{t: t, stateDir: state, srcDir: filepath.Join(root, name)}
		who := "built-by-" + strings.ToUpper(name[len(name)-1:])
		writeTree(t, e.srcDir, map[string]string{"lock.txt": "same lock\n", "who.txt": who + "\n"})
		if r := e.run("init"); r.code != 0 {
			t.Fatalf("%s: hm init: exit %d\n%s", name, r.code, r.stderr)
		}
		// Keep what hm init wrote above the steps (the name, the image), replace the steps.
		path := filepath.Join(e.srcDir, ".hm", "pipeline.yaml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		head, _, ok := strings.Cut(string(data), "steps:\n")
		if !ok {
			t.Fatalf("%s: no steps in what hm init wrote:\n%s", name, data)
		}
		writeTree(t, e.srcDir, map[string]string{".hm/pipeline.yaml": head + body})

		r := e.run("pipelines", "--format", "json")
		var ps []struct{ Slug string }
		if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || len(ps) != 1 || ps[0].Slug != name {
			t.Errorf("%s: hm pipelines --format json: %v %q", name, err, r.stdout)
		}
		r = e.run("run", "--backend", "host", "--format", "json")
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", name, r.code, r.stderr)
		}
		v := view(t, parseEvents(t, r.stdout))
		if d := cmp.Diff([]string{who}, v.lines("show")); d != "" {
			t.Errorf("%s: show printed (-want +got):\n%s", name, d)
		}
	}
}

// An on_change path or glob that matches nothing is a warning in the step's log, not silence.
func TestCacheOnChangeUnmatchedWarns(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{
		"go.mod": "module m\n", "go.sum": "s\n",
		".hm/pipeline.yaml": "default_image: host\nsteps:\n  - key: deps\n    run: echo ran\n    cache: {on_change: [go.mod, go.summ, \"vendor/*\"]}\n",
	})
	r := e.run("run", "--backend", "host", "--format", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var warnings []string
	for _, l := range view(t, parseEvents(t, r.stdout)).logs["deps"] {
		if strings.HasPrefix(l.Line, "hm: warning: ") {
			warnings = append(warnings, l.Line)
		}
	}
	want := []string{
		`hm: warning: cache on_change path "go.summ" matches nothing in the source directory, so it does not affect the key`,
		`hm: warning: cache on_change path "vendor/*" matches nothing in the source directory, so it does not affect the key`,
	}
	if d := cmp.Diff(want, warnings); d != "" {
		t.Errorf("deps' warnings (-want +got):\n%s", d)
	}
}

// One id names an entry everywhere: the miss line, the hit line and event, hm cache ls (table
// and JSON) and hm cache rm. hm cache ls shows where each entry came from.
func TestCacheEntryIDEverywhere(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{"go.mod": "module m\n", "go.sum": "s\n", ".hm/pipeline.yaml": cobraPipeline("echo v > deps.txt", "")})
	r := e.run("run", "--backend", "host", "--format", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	m := missID.FindStringSubmatch(strings.Join(view(t, parseEvents(t, r.stdout)).lines("deps"), "\n"))
	if m == nil {
		t.Fatalf("no entry id in deps' miss line:\n%s", r.stdout)
	}
	id := m[1]

	// The hit: the event's entry and the human line.
	r = e.run("run", "--backend", "host", "--format", "json")
	var hitEntry string
	for _, ev := range parseEvents(t, r.stdout) {
		if ev.StepCacheHit != nil && ev.StepCacheHit.Entry != nil {
			hitEntry = *ev.StepCacheHit.Entry
		}
	}
	if hitEntry != id {
		t.Errorf("step_cache_hit entry %q, want the miss line's %q", hitEntry, id)
	}
	if r = e.run("run", "--backend", "host"); !strings.Contains(r.stderr, "cached (entry "+id+")") {
		t.Errorf("the human hit line does not name entry %s:\n%s", id, r.stderr)
	}

	r = e.run("cache", "ls")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("cache ls:\n%s", r.stdout)
	}
	if d := cmp.Diff([]string{"ID", "SOURCE", "PIPELINE", "STEP", "IMAGE", "BACKEND", "SIZE", "AGE", "LAST", "USED"}, strings.Fields(lines[0])); d != "" {
		t.Errorf("cache ls header (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{id, e.srcDir, "cobra", "deps", "host", "host"}, strings.Fields(lines[1])[:6]); d != "" {
		t.Errorf("cache ls row (-want +got):\n%s", d)
	}

	r = e.run("cache", "ls", "--format", "json")
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 {
		t.Fatalf("cache ls --format json: %v\n%s", err, r.stdout)
	}
	for _, f := range []string{"created", "last_used", "key", "fingerprint", "snapshot", "base", "size_bytes"} {
		if _, ok := got[0][f]; !ok {
			t.Errorf("cache ls --format json has no %q: %v", f, got[0])
		}
		delete(got[0], f)
	}
	want := map[string]any{"id": id, "source_dir": e.srcDir, "pipeline": "cobra", "step": "deps", "image": "host", "backend": "host"}
	if d := cmp.Diff(want, got[0]); d != "" {
		t.Errorf("cache ls --format json (-want +got):\n%s", d)
	}

	if r = e.run("cache", "rm", "nothere"); r.code != 2 || !strings.Contains(r.stderr, "  fix    ") {
		t.Errorf("cache rm of an unknown id: exit %d\n%s", r.code, r.stderr)
	}
	if r = e.run("cache", "rm", id[:6]); r.code != 0 || !strings.Contains(r.stderr, "removed "+id+"  cobra/deps (host)") {
		t.Errorf("cache rm %s: exit %d\n%s", id[:6], r.code, r.stderr)
	}
	if r = e.run("cache", "ls", "--format", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("after rm, cache ls --format json:\n%s", r.stdout)
	}
}

// hm image ls and hm pipelines print one JSON array with stable field names.
func TestListsJSON(t *testing.T) {
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.yaml": "default_image: host\nsteps:\n  - key: a\n    run: 'true'\n"})
	r := e.run("image", "ls", "--format", "json")
	var imgs []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &imgs); err != nil || len(imgs) == 0 {
		t.Fatalf("image ls --format json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	want := map[string]any{"id": "host", "names": []any{"host"}, "source": "host", "layers": 0.0, "size_bytes": 0.0, "created": nil}
	if d := cmp.Diff(want, imgs[0]); d != "" {
		t.Errorf("image ls --format json, the host image (-want +got):\n%s", d)
	}
	r = e.run("pipelines", "--format", "json")
	var ps []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil {
		t.Fatalf("pipelines --format json: %v\n%s", err, r.stdout)
	}
	wantPs := []map[string]any{{"slug": "ci", "name": "", "source": ".hm/ci.yaml", "kind": "yaml", "steps": 1.0, "error": nil}}
	if d := cmp.Diff(wantPs, ps); d != "" {
		t.Errorf("pipelines --format json (-want +got):\n%s", d)
	}
	if r = e.run("pipelines", "--format", "xml"); r.code != 2 {
		t.Errorf("--format xml: exit %d", r.code)
	}
}
