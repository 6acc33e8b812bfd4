package storetest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

var retentionCases = []testCase{{"PruneBuildsAndBlobRefs", func(t *testing.T, e *env) {
	o, p := e.org(t, "acme")
	e.agent(t, "a1", "host", "l")
	src := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	for _, d := range []string{src(1), src(2)} {
		get(e.s.PutBlob(e.ctx, store.Blob{Digest: d, Size: 10, CreatedAt: e.t0}))(t)
	}
	// mk makes a build of one job that ran (log chunks, an event, secrets, artifacts when it
	// passes) and ends it at end (zero: it stays running).
	mk := func(source string, end time.Duration, ended bool, art string) store.Build {
		t.Helper()
		b, js, err := e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: `{"steps":[]}`,
			SourceDigest: source, Secrets: []byte("sealed"), Jobs: []store.NewJob{{StepKey: "a", Labels: []string{"l"}}}, Now: e.t0})
		if err != nil {
			t.Fatal(err)
		}
		get(e.s.ReleaseJob(e.ctx, js[0].ID, e.t0))(t)
		j, ok := e.claim(t, "a1", e.t0)
		if !ok || j.ID != js[0].ID {
			t.Fatalf("claim = %v %v, want job %s", j.ID, ok, js[0].ID)
		}
		get(e.s.StartJob(e.ctx, j.ID, j.Attempt, e.t0))(t)
		get(e.s.AppendLogs(e.ctx, j.ID, j.Attempt, []store.LogChunk{{Seq: 1, Content: "line\n", TS: e.t0}}))(t)
		get(e.s.AppendEvents(e.ctx, b.ID, []byte(`{"kind":"build_start"}`)))(t)
		if !ended {
			return b
		}
		get(e.s.FinishJob(e.ctx, j.ID, j.Attempt, store.Finish{ExitCode: 0, Artifacts: json.RawMessage(art), Now: e.at(end)}))(t)
		get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildRunning, store.BuildUpdate{Now: e.t0}))(t)
		return get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildRunning}, store.BuildPassed, store.BuildUpdate{Now: e.at(end)}))(t)
	}
	// The server's form of a job's artifacts (driver.Artifacts).
	art := func(i int) string {
		return fmt.Sprintf(`{"files":[{"path":"out/%d","size":1,"sha256":"%064x"}],"warnings":["w"]}`, i, 100+i)
	}
	old1 := mk(src(1), time.Hour, true, art(1))
	old2 := mk(src(2), 2*time.Hour, true, art(2))
	old3 := mk(src(2), 3*time.Hour, true, art(3)) // shares old2's source
	recent := mk(src(2), 10*time.Hour, true, art(4))
	running := mk(src(1), 0, false, "")
	get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k", Scope: "s", Snapshot: "s1", AgentID: "a1",
		PipelineID: p.ID, StepKey: "a", Artifacts: json.RawMessage(art(1)), CreatedAt: e.t0, LastUsed: e.t0}))(t)

	refs := get(e.s.BlobRefs(e.ctx))(t)
	want := map[string]bool{src(1): true, src(2): true}
	for i := 1; i <= 4; i++ {
		want[fmt.Sprintf("sha256:%064x", 100+i)] = true
	}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Errorf("BlobRefs before pruning (-want +got):\n%s", diff)
	}

	// Ended before 5h: old1..old3, pruned two at a time, oldest first.
	before := e.at(5 * time.Hour)
	if n := get(e.s.PruneBuilds(e.ctx, before, 2))(t); n != 2 {
		t.Fatalf("PruneBuilds(limit 2) = %d, want 2", n)
	}
	if _, err := e.s.GetBuild(e.ctx, old3.ID); err != nil {
		t.Errorf("the newest of the old builds was pruned before the older ones: %v", err)
	}
	if n := get(e.s.PruneBuilds(e.ctx, before, 2))(t); n != 1 {
		t.Fatalf("second PruneBuilds = %d, want the 1 left", n)
	}
	if n := get(e.s.PruneBuilds(e.ctx, before, 2))(t); n != 0 {
		t.Fatalf("third PruneBuilds = %d, want none left", n)
	}
	for _, b := range []store.Build{old1, old2, old3} {
		_, err := e.s.GetBuild(e.ctx, b.ID)
		isNotFound(t, err, "a pruned build")
		js := get(e.s.ListJobs(e.ctx, b.ID))(t)
		if len(js) != 0 {
			t.Errorf("a pruned build still has %d jobs", len(js))
		}
		if evs := get(e.s.ListEvents(e.ctx, b.ID, 0, 10))(t); len(evs) != 0 {
			t.Errorf("a pruned build still has %d events", len(evs))
		}
		_, err = e.s.GetBuildSecrets(e.ctx, b.ID)
		isNotFound(t, err, "a pruned build's secrets")
	}
	for _, b := range []store.Build{recent, running} {
		if _, err := e.s.GetBuild(e.ctx, b.ID); err != nil {
			t.Errorf("build %s was pruned: %v", b.ID, err)
		}
		js := get(e.s.ListJobs(e.ctx, b.ID))(t)
		if len(js) != 1 {
			t.Fatalf("a kept build has %d jobs, want 1", len(js))
		}
		if cs := get(e.s.ListLogs(e.ctx, js[0].ID, js[0].Attempt, 0, 10))(t); len(cs) != 1 {
			t.Errorf("a kept build's job has %d log chunks, want 1", len(cs))
		}
		if evs := get(e.s.ListEvents(e.ctx, b.ID, 0, 10))(t); len(evs) != 1 {
			t.Errorf("a kept build has %d events, want 1", len(evs))
		}
	}
	// Both sources are still named (by running and recent); the pruned jobs' artifacts are
	// not, except art(1), which the cache entry keeps.
	refs = get(e.s.BlobRefs(e.ctx))(t)
	want = map[string]bool{src(1): true, src(2): true,
		fmt.Sprintf("sha256:%064x", 101): true, fmt.Sprintf("sha256:%064x", 104): true}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Errorf("BlobRefs after pruning (-want +got):\n%s", diff)
	}
	for _, d := range []string{src(1), src(2)} {
		if _, err := e.s.GetBlob(e.ctx, d); err != nil {
			t.Errorf("the source blob row %s, still named by a build, is gone: %v", d, err)
		}
	}
	// Once the last build naming a source is pruned, its row goes too.
	if n := get(e.s.PruneBuilds(e.ctx, e.at(24*time.Hour), 10))(t); n != 1 {
		t.Fatalf("PruneBuilds(24h) = %d, want recent's 1 (the running build is never pruned)", n)
	}
	_, err := e.s.GetBlob(e.ctx, src(2))
	isNotFound(t, err, "the source blob row no build names")
	if _, err := e.s.GetBlob(e.ctx, src(1)); err != nil {
		t.Errorf("the source blob row the running build names is gone: %v", err)
	}
}},
	{"SharedKeyFirstWins", func(t *testing.T, e *env) {
		if got := get(e.s.SharedKey(e.ctx, "log-token", []byte("first")))(t); string(got) != "first" {
			t.Fatalf("SharedKey of a new name = %q, want the fresh value", got)
		}
		if got := get(e.s.SharedKey(e.ctx, "log-token", []byte("second")))(t); string(got) != "first" {
			t.Fatalf("SharedKey again = %q, want the first value kept", got)
		}
		// Replicas starting at once: one value, the same for all.
		got := make([]string, 8)
		parallel(t, len(got), func(i int) {
			v, err := e.s.SharedKey(e.ctx, "secrets-check", []byte(fmt.Sprintf("replica-%d", i)))
			if err != nil {
				t.Error(err)
			}
			got[i] = string(v)
		})
		for _, v := range got {
			if v != got[0] || !strings.HasPrefix(v, "replica-") {
				t.Fatalf("concurrent SharedKey answers %q, want one replica's value for all", got)
			}
		}
	}},
}
