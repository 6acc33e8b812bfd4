package cachekey

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/ir"
)

func TestDiff(t *testing.T) {
	base := Inputs{
		Policy: "forever", Org: "default", Slug: "ci", CmdHash: "c1",
		EnvValues: map[string]string{"A_VER": "1.2", "B": "x"}, ParentKey: "scratch",
		Files:      map[string]string{"go.sum": "h1", "go.mod": "h2"},
		TTLBuckets: []TTLBucket{{Seconds: 86400, Bucket: 10}},
	}
	with := func(f func(in *Inputs)) Inputs {
		in := base
		in.EnvValues = map[string]string{}
		for k, v := range base.EnvValues {
			in.EnvValues[k] = v
		}
		in.Files = map[string]string{}
		for k, v := range base.Files {
			in.Files[k] = v
		}
		in.TTLBuckets = append([]TTLBucket(nil), base.TTLBuckets...)
		f(&in)
		return in
	}
	tests := []struct {
		name string
		new  Inputs
		want []string
	}{
		{"identical", with(func(*Inputs) {}), nil},
		{"command", with(func(in *Inputs) { in.CmdHash = "c2" }), []string{"command changed since the cached snapshot"}},
		{"env value", with(func(in *Inputs) { in.EnvValues["A_VER"] = "1.3" }), []string{`env A_VER: "1.2" → "1.3"`}},
		{"env key added and removed", with(func(in *Inputs) { delete(in.EnvValues, "B"); in.EnvValues["C"] = "y" }),
			[]string{"env B removed from env_keys", `env C added to env_keys ("y")`}},
		{"parent", with(func(in *Inputs) { in.ParentKey = "0123456789abcdef" }),
			[]string{"parent key changed (scratch → 0123456789ab)"}},
		{"files", with(func(in *Inputs) {
			in.Files["go.sum"] = "h3"
			delete(in.Files, "go.mod")
			in.Files["vendor"] = "h4"
		}), []string{"file go.mod removed", "file go.sum changed", "file vendor added"}},
		{"ttl rollover", with(func(in *Inputs) { in.TTLBuckets[0].Bucket = 11 }),
			[]string{"ttl bucket rolled over (every 86400s)"}},
		{"ttl duration", with(func(in *Inputs) { in.TTLBuckets[0] = TTLBucket{Seconds: 3600, Bucket: 240} }),
			[]string{"ttl duration changed: 86400s → 3600s"}},
		{"policy", with(func(in *Inputs) { in.Policy = "ttl" }), []string{"cache policy changed: forever → ttl"}},
		{"org and slug", with(func(in *Inputs) { in.Org = "acme"; in.Slug = "release" }),
			[]string{`org changed: "default" → "acme"`, `pipeline slug changed: "ci" → "release"`}},
		{"several at once in a fixed order", with(func(in *Inputs) {
			in.CmdHash = "c2"
			in.ParentKey = "p"
			in.EnvValues["A_VER"] = "2"
		}), []string{"command changed since the cached snapshot", `env A_VER: "1.2" → "2"`, "parent key changed (scratch → p)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Diff(base, tc.new)); d != "" {
				t.Errorf("Diff (-want +got):\n%s", d)
			}
		})
	}
}

// TestDiffFromCompute explains real misses: each change to what a key depends on changes the
// key and Diff names that input.
func TestDiffFromCompute(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"go.sum": "v1"})
	p := func(cmd string) *ir.Pipeline {
		return chain(
			ir.Step{Key: "apt", Cmd: "apt-get update", Cache: &ir.Cache{Policy: ir.PolicyTTL, DurationSeconds: 86400}},
			ir.Step{Key: "deps", Cmd: cmd, Cache: &ir.Cache{Policy: ir.PolicyCompose, SubPolicies: []ir.Cache{
				{Policy: ir.PolicyOnChange, Paths: []string{"go.sum"}},
				{Policy: ir.PolicyForever, EnvKeys: []string{"GO_VER"}},
			}}},
		)
	}
	env := map[string]string{"GO_VER": "1.25"}
	ctx := Context{Slug: "ci", Now: time.Unix(1764000000, 0), Getenv: mapEnv(env), Dir: dir}
	run := func(cmd string) Result {
		t.Helper()
		res, err := Compute(ctx, p(cmd))
		if err != nil {
			t.Fatal(err)
		}
		return res[1]
	}
	prev := run("go mod download")
	steps := []struct {
		name   string
		change func() string // returns the command to use
		want   []string
	}{
		{"nothing", func() string { return "go mod download" }, nil},
		{"env", func() string { env["GO_VER"] = "1.26"; return "go mod download" }, []string{`env GO_VER: "1.25" → "1.26"`}},
		{"file", func() string {
			if err := os.WriteFile(filepath.Join(dir, "go.sum"), []byte("v2"), 0o644); err != nil {
				t.Fatal(err)
			}
			return "go mod download"
		}, []string{"file go.sum changed"}},
		{"command", func() string { return "go mod download -x" }, []string{"command changed"}},
		{"ttl of parent", func() string { ctx.Now = ctx.Now.Add(24 * time.Hour); return "go mod download -x" },
			[]string{"parent key changed"}},
	}
	for _, st := range steps {
		cur := run(st.change())
		got := Diff(prev.Inputs, cur.Inputs)
		if st.want == nil {
			if cur.Key != prev.Key || got != nil {
				t.Errorf("%s: key changed %v or diff %v", st.name, cur.Key != prev.Key, got)
			}
			continue
		}
		if cur.Key == prev.Key {
			t.Errorf("%s: key did not change", st.name)
		}
		if len(got) != 1 || len(got[0]) < len(st.want[0]) || got[0][:len(st.want[0])] != st.want[0] {
			t.Errorf("%s: diff %q, want %q", st.name, got, st.want)
		}
		prev = cur
	}
}
