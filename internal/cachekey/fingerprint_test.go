package cachekey

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/ir"
)

// The fingerprint changes with each of its parts, and an on_change key (which the DSLs keep
// blind to the command) does not: the registry's scope is what makes an edited command a miss.
func TestFingerprintParts(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"go.sum": "1"})
	type pipe struct {
		rootCmd, childCmd, image string
		env                      map[string]string
	}
	build := func(p pipe) *ir.Pipeline {
		pl := chain(
			ir.Step{Key: "deps", Cmd: p.rootCmd, Image: p.image, Cache: &ir.Cache{Policy: ir.PolicyOnChange, Paths: []string{"go.sum"}}},
			ir.Step{Key: "test", Cmd: p.childCmd, Cache: &ir.Cache{Policy: ir.PolicyForever}},
		)
		pl.Nodes[0].Env = p.env
		return pl
	}
	base := pipe{rootCmd: "go mod download", childCmd: "go test", image: "golang:1.26", env: map[string]string{"A": "1"}}
	compute := func(p pipe) []Result {
		t.Helper()
		res, err := Compute(Context{Slug: "ci", Now: time.Unix(0, 0), Dir: dir}, build(p))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ref := compute(base)
	tests := []struct {
		name          string
		change        func(p *pipe)
		rootKeySame   bool // on_change ignores command, env and image
		wantRootDiffs []string
	}{
		{"command", func(p *pipe) { p.rootCmd = "go mod download -x" }, true,
			[]string{"command changed since the cached snapshot"}},
		{"env value", func(p *pipe) { p.env = map[string]string{"A": "2"} }, true,
			[]string{"env A changed since the cached snapshot"}},
		{"env added", func(p *pipe) { p.env = map[string]string{"A": "1", "B": ""} }, true,
			[]string{"env B added since the cached snapshot"}},
		{"image", func(p *pipe) { p.image = "golang:1.25" }, true,
			[]string{"image changed since the cached snapshot: golang:1.26 → golang:1.25"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.change(&p)
			got := compute(p)
			if (got[0].Key == ref[0].Key) != tc.rootKeySame {
				t.Errorf("root key same = %v, want %v (the key must stay as the DSLs compute it)", got[0].Key == ref[0].Key, tc.rootKeySame)
			}
			if got[0].Fingerprint == ref[0].Fingerprint {
				t.Errorf("root fingerprint did not change")
			}
			if got[1].Fingerprint == ref[1].Fingerprint {
				t.Errorf("child fingerprint did not change with its parent's")
			}
			if d := cmp.Diff(tc.wantRootDiffs, Diff(ref[0].Inputs, got[0].Inputs)); d != "" {
				t.Errorf("root Diff (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]string{"the builds_in parent's command, env or image changed since the cached snapshot"},
				Diff(ref[1].Inputs, got[1].Inputs)); d != "" {
				t.Errorf("child Diff (-want +got):\n%s", d)
			}
		})
	}
	if again := compute(base); again[0].Fingerprint != ref[0].Fingerprint || again[1].Fingerprint != ref[1].Fingerprint {
		t.Errorf("fingerprint not deterministic")
	}
	// A part boundary cannot be shifted: "ab"+"" and "a"+"b" differ.
	if Fingerprint("ab", nil, "", "scratch") == Fingerprint("a", nil, "b", "scratch") {
		t.Errorf("fingerprint parts are not separated")
	}
}

// An entry registered before fingerprints existed is explained as such, not as "no change".
func TestDiffOldEntry(t *testing.T) {
	old := Inputs{Policy: "on_change", Org: "default", Slug: "ci", ParentKey: "scratch", Files: map[string]string{"go.sum": "h"}}
	cur := old
	cur.CmdHash, cur.Fingerprint, cur.ParentFingerprint = "c", "f", "scratch"
	want := []string{"the cached snapshot was registered by an older hm that did not record the step's command and env"}
	if d := cmp.Diff(want, Diff(old, cur)); d != "" {
		t.Errorf("Diff (-want +got):\n%s", d)
	}
}

// on_change paths and globs that match nothing are reported; the key still skips them.
func TestOnChangeWarnings(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"go.sum": "1", "go.mod": "m"})
	tests := []struct {
		name  string
		paths []string
		want  []string
	}{
		{"all match", []string{"go.mod", "go.sum"}, nil},
		{"typo", []string{"go.mod", "go.summ"}, []string{`"go.summ"`}},
		{"glob", []string{"go.sum", "vendor/*"}, []string{`"vendor/*"`}},
		{"both, sorted", []string{"x", "go.sum", "*.lock"}, []string{`"*.lock"`, `"x"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := chain(ir.Step{Key: "deps", Cmd: "c", Cache: &ir.Cache{Policy: ir.PolicyCompose, SubPolicies: []ir.Cache{
				{Policy: ir.PolicyOnChange, Paths: tc.paths}, {Policy: ir.PolicyForever},
			}}})
			res, err := Compute(Context{Slug: "ci", Dir: dir}, p)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range res[0].Warnings {
				if !strings.Contains(w, "matches nothing") {
					t.Errorf("warning %q does not say the path matches nothing", w)
				}
				got = append(got, w[strings.Index(w, `"`):strings.LastIndex(w, `"`)+1])
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("warned paths (-want +got):\n%s", d)
			}
		})
	}
}
