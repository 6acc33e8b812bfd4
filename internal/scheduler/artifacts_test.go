package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
	"github.com/hmci/hm/internal/vm/host"
)

// Artifacts end to end on a real backend (host): a passing step's files come out with their
// bytes, listed in step_artifact events before its step_end and in the manifest; a failing
// step copies nothing; a cache hit copies the cached snapshot's; a step key that is not a
// file name is escaped; no ephemeral snapshot is left.
func TestArtifactsOnHost(t *testing.T) {
	p, err := ir.Parse([]byte(`{"version":"0","default_image":"host","graph":{"nodes":[
		{"step":{"key":"build/x","cmd":"mkdir dist && printf abc > dist/app && ln -s /etc/passwd dist/pw","artifacts":["dist/*"]}},
		{"step":{"key":"fails","cmd":"echo x > out.txt; exit 3","artifacts":["out.txt"]}},
		{"step":{"key":"cached","cmd":"echo $RANDOM$RANDOM > out.txt","artifacts":["out.txt"],"cache":{"policy":"forever"}}}
	],"edges":[]}}`))
	if err != nil {
		t.Fatal(err)
	}
	pl := plan.New(p)
	state := t.TempDir()
	b := host.New(state)
	cache := &fakeCache{entries: map[string]string{}}
	run := func(runID string) (string, *recorder, Result) {
		dir := filepath.Join(t.TempDir(), runID)
		rec := &recorder{}
		res := guard(t, func() Result {
			return Run(context.Background(), pl, b, Options{RunID: runID, Parallelism: 2, KeepGoing: true,
				Keys: []string{"", "", "k1"}, Cache: cache, ArtifactsDir: dir, Publish: rec.publish})
		})
		return dir, rec, res
	}
	dir1, rec1, res1 := run("run1")
	if d := cmp.Diff([]Status{Passed, Failed, Passed}, res1.Steps); d != "" {
		t.Fatalf("statuses (-want +got):\n%s", d)
	}
	dir2, rec2, res2 := run("run2")
	if d := cmp.Diff([]Status{Passed, Failed, CacheHit}, res2.Steps); d != "" {
		t.Fatalf("second run statuses (-want +got):\n%s", d)
	}

	cachedOut, err := os.ReadFile(filepath.Join(dir1, "cached", "out.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir string
		rec *recorder
	}{{dir1, rec1}, {dir2, rec2}} {
		want := Manifest{Build: filepath.Base(tc.dir), Steps: []ManifestEntry{
			{Key: "build/x", Dir: "build%2Fx", Files: []artifact.File{{Path: "dist/app", Size: 3, SHA256: sum("abc")}}},
			{Key: "cached", Dir: "cached", Files: []artifact.File{{Path: "out.txt", Size: int64(len(cachedOut)), SHA256: sum(string(cachedOut))}}},
		}}
		var got Manifest
		data, err := os.ReadFile(filepath.Join(tc.dir, ManifestName))
		if err == nil {
			err = json.Unmarshal(data, &got)
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s manifest (-want +got):\n%s", tc.dir, d)
		}
		for _, e := range want.Steps {
			for _, f := range e.Files {
				b, err := os.ReadFile(filepath.Join(tc.dir, e.Dir, f.Path))
				if err != nil || sum(string(b)) != f.SHA256 {
					t.Errorf("%s/%s: %v, sha256 %s, want %s", e.Dir, f.Path, err, sum(string(b)), f.SHA256)
				}
			}
		}
		names, _ := statedir.List(tc.dir)
		slices.Sort(names)
		if d := cmp.Diff([]string{"build%2Fx", "cached", ManifestName}, names); d != "" {
			t.Errorf("%s holds (-want +got):\n%s (a failed step copies nothing)", tc.dir, d)
		}
		kinds := tc.rec.byStep()
		for key, want := range map[string][]string{
			"build/x": {"step_queued", "step_start", "step_log", "step_artifact", "step_end:0"},
			"fails":   {"step_queued", "step_start", "step_end:3", "chain_failed"},
		} {
			if d := cmp.Diff(want, kinds[key]); d != "" {
				t.Errorf("%s events (-want +got):\n%s", key, d)
			}
		}
		if tc.dir == dir2 {
			if d := cmp.Diff([]string{"step_queued", "step_cache_hit", "step_artifact", "step_end:0"}, kinds["cached"]); d != "" {
				t.Errorf("cache hit events (-want +got):\n%s", d)
			}
		}
	}
	// Only the cache entry's snapshot is left: every ephemeral one is gone.
	snaps, err := statedir.List(filepath.Join(state, "host", "snap"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, id := range cache.entries {
		kept = append(kept, id)
	}
	if d := cmp.Diff(kept, snaps); len(kept) != 1 || d != "" {
		t.Errorf("snapshots left (-want +got):\n%s", d)
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// tooLarge is the fake backend whose artifact copy writes a file and then fails as a copy
// beyond the bounds does.
type tooLarge struct {
	*fakeVM
	copies int
}

func (b *tooLarge) CopyArtifacts(_ context.Context, _ string, _ vm.Owner, _ []string, dst *os.Root) (artifact.Result, error) {
	b.copies++
	if err := dst.WriteFile("partial", []byte("x"), 0o644); err != nil {
		return artifact.Result{}, err
	}
	return artifact.Result{}, fmt.Errorf("%w: more than 10000 files", artifact.ErrTooLarge)
}

// A copy that fails fails the step as one that could not run, removes what it wrote, is not
// retried (a retry would fail alike) and fails the build; a backend without the ability, or
// an executor with no artifacts directory, runs the step and says why nothing is copied.
func TestArtifactsCopyFails(t *testing.T) {
	pl := build(t, []step{{key: "a", cmd: "ok", retry: &ir.Retry{Limit: 2}}})
	pl.Steps[0].Artifacts = []string{"dist"}
	b := &tooLarge{fakeVM: newFakeVM()}
	dir := t.TempDir()
	rec := &recorder{}
	res := guard(t, func() Result {
		return Run(context.Background(), pl, b, Options{Parallelism: 1, ArtifactsDir: dir, Publish: rec.publish})
	})
	if res.Status != BuildFailed || !errors.Is(res.Err, artifact.ErrTooLarge) || !errors.Is(res.Err, errs.ErrInvalid) {
		t.Fatalf("status %s, err %v; want failed with ErrTooLarge", res.Status, res.Err)
	}
	if b.copies != 1 {
		t.Errorf("copied %d times, want 1 (not retried)", b.copies)
	}
	if d := cmp.Diff([]string{"step_queued", "step_start", "step_log", "step_end:-1", "chain_failed"}, rec.byStep()["a"]); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		names, _ := statedir.List(dir)
		t.Errorf("the build's artifacts directory is left (holding %v)", names)
	}
	b.mu.Lock()
	removed, commits := len(b.removed), len(b.commits)
	b.mu.Unlock()
	if commits != 1 || removed != 1 {
		t.Errorf("%d snapshots committed, %d removed; want the one ephemeral snapshot, removed", commits, removed)
	}

	// A cached step whose copy fails leaves no cache entry (a failed step is never a hit)
	// and its snapshot is removed: the next run runs it again.
	t.Run("cached", func(t *testing.T) {
		steps := []step{{key: "a", cmd: "ok", cache: true}}
		pl := build(t, steps)
		pl.Steps[0].Artifacts = []string{"dist"}
		b := &tooLarge{fakeVM: newFakeVM()}
		cache := &fakeCache{entries: map[string]string{}}
		res := guard(t, func() Result {
			return Run(context.Background(), pl, b, Options{Parallelism: 1, ArtifactsDir: t.TempDir(), Keys: keysFor(steps), Cache: cache})
		})
		if res.Status != BuildFailed || !errors.Is(res.Err, artifact.ErrTooLarge) {
			t.Fatalf("status %s, err %v; want failed with ErrTooLarge", res.Status, res.Err)
		}
		cache.mu.Lock()
		entries, registered := len(cache.entries), cache.registered
		cache.mu.Unlock()
		if entries != 0 || len(registered) != 0 {
			t.Errorf("cache entries %d, registered %v; want none for a failed step", entries, registered)
		}
		b.mu.Lock()
		removed, commits := len(b.removed), len(b.commits)
		b.mu.Unlock()
		if commits != 1 || removed != 1 {
			t.Errorf("%d snapshots committed, %d removed; want its one snapshot, removed", commits, removed)
		}
	})

	for _, tc := range []struct {
		name    string
		backend vm.Backend
		dir     string
		why     string
	}{
		{"no ability", newFakeVM(), dir, "the fake backend cannot copy artifacts"},
		{"no directory", &tooLarge{fakeVM: newFakeVM()}, "", "artifacts are not collected by this executor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			res := guard(t, func() Result {
				return Run(context.Background(), pl, tc.backend, Options{ArtifactsDir: tc.dir, Publish: rec.publish})
			})
			if res.Status != BuildPassed {
				t.Fatalf("status %s: %v", res.Status, res.Err)
			}
			found := false
			for _, e := range rec.evs {
				found = found || e.StepLog != nil && e.StepLog.Line == "hm: warning: "+tc.why
			}
			if !found {
				t.Errorf("no warning %q", tc.why)
			}
		})
	}
}
