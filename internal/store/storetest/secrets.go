package storetest

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/hmci/hm/internal/store"
)

var secretArtifactCases = []testCase{
	{"BuildSecretsLiveUntilTheBuildEnds", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		sealed := []byte("sealed-\x00-bytes-of-build-one")
		id := uuid.NewString()
		b, _, err := e.s.CreateBuild(e.ctx, store.NewBuild{ID: id, OrgID: o.ID, PipelineID: p.ID, IR: `{"steps":[]}`,
			Jobs: []store.NewJob{{StepKey: "a"}}, Secrets: sealed, Now: e.t0})
		if err != nil {
			t.Fatal(err)
		}
		if b.ID != id {
			t.Fatalf("build id %s, want the caller's %s", b.ID, id)
		}
		other, _ := e.build(t, o, p) // no secrets
		if got := get(e.s.GetBuildSecrets(e.ctx, b.ID))(t); !bytes.Equal(got, sealed) {
			t.Errorf("GetBuildSecrets = %q, want %q", got, sealed)
		}
		_, err = e.s.GetBuildSecrets(e.ctx, other.ID)
		isNotFound(t, err, "the secrets of a build without any")
		if n := get(e.s.DeleteEndedBuildSecrets(e.ctx))(t); n != 0 {
			t.Errorf("DeleteEndedBuildSecrets deleted %d rows of running builds", n)
		}
		get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildFailed, store.BuildUpdate{Now: e.t0}))(t)
		if n := get(e.s.DeleteEndedBuildSecrets(e.ctx))(t); n != 1 {
			t.Errorf("DeleteEndedBuildSecrets deleted %d rows, want the ended build's 1", n)
		}
		_, err = e.s.GetBuildSecrets(e.ctx, b.ID)
		isNotFound(t, err, "the secrets of an ended build")
		if e.Dump != nil {
			d, err := e.Dump()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(d, []byte("of-build-one")) {
				t.Error("the database still holds the ended build's sealed secrets")
			}
		}
		if err := e.s.DeleteBuildSecrets(e.ctx, b.ID); err != nil { // none left: a no-op
			t.Error(err)
		}
		b2, _, err := e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: `{"steps":[]}`, Secrets: []byte("x"), Now: e.t0})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.s.DeleteBuildSecrets(e.ctx, b2.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.s.GetBuildSecrets(e.ctx, b2.ID)
		isNotFound(t, err, "deleted secrets")
	}},
	{"JobArtifactsFinishCacheAndHit", func(t *testing.T, e *env) {
		arts := json.RawMessage(`[{"path":"out/a.txt","size":3,"sha256":"abc"}]`)
		js := e.ready(t, "acme", 2)
		e.agent(t, "a1", "host")
		j, _ := e.claim(t, "a1", e.t0)
		get(e.s.StartJob(e.ctx, j.ID, j.Attempt, e.t0))(t)
		j = get(e.s.FinishJob(e.ctx, j.ID, j.Attempt, store.Finish{ExitCode: 0, Snapshot: "s1", Artifacts: arts, Now: e.t0}))(t)
		if diff := cmp.Diff(string(arts), string(j.Artifacts)); diff != "" {
			t.Errorf("a passed job's artifacts (-want +got):\n%s", diff)
		}
		if got := get(e.s.GetJob(e.ctx, j.ID))(t); string(got.Artifacts) != string(arts) {
			t.Errorf("GetJob artifacts = %s", got.Artifacts)
		}
		// A failed attempt keeps none, whatever the agent sent.
		f, _ := e.claim(t, "a1", e.t0)
		get(e.s.StartJob(e.ctx, f.ID, f.Attempt, e.t0))(t)
		f = get(e.s.FinishJob(e.ctx, f.ID, f.Attempt, store.Finish{ExitCode: 1, Artifacts: arts, Now: e.t0}))(t)
		if f.Artifacts != nil {
			t.Errorf("a failed job's artifacts = %s, want none", f.Artifacts)
		}
		o := get(e.s.GetOrgBySlug(e.ctx, "acme"))(t)
		b := get(e.s.GetBuild(e.ctx, js[0].BuildID))(t)
		ce := get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k", Scope: "s", Snapshot: "s1", AgentID: "a1",
			PipelineID: b.PipelineID, StepKey: j.StepKey, Artifacts: j.Artifacts, CreatedAt: e.t0, LastUsed: e.t0}))(t)
		if string(ce.Artifacts) != string(arts) {
			t.Errorf("PutCacheEntry artifacts = %s", ce.Artifacts)
		}
		hit := get(e.s.LookupCache(e.ctx, o.ID, "k", "s", e.at(time.Second)))(t)
		if string(hit.Artifacts) != string(arts) {
			t.Errorf("LookupCache artifacts = %s", hit.Artifacts)
		}
		// A hit's job carries the entry's artifacts, in the statement that passes it.
		_, nj := e.build(t, o, get(e.s.GetPipeline(e.ctx, o.ID, "ci"))(t), store.NewJob{StepKey: "j0"})
		pj := get(e.s.PassCached(e.ctx, nj[0].ID, hit.Snapshot, hit.AgentID, hit.Artifacts, e.t0))(t)
		if string(pj.Artifacts) != string(arts) {
			t.Errorf("PassCached artifacts = %s", pj.Artifacts)
		}
	}},
}
