package storetest

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

var tenancyCases = []testCase{
	{"OrgCreateGet", func(t *testing.T, e *env) {
		o := get(e.s.CreateOrg(e.ctx, "acme", "Acme"))(t)
		if o.ID == "" || o.CreatedAt.IsZero() {
			t.Fatalf("org = %+v: want an id and a creation time", o)
		}
		if diff := cmp.Diff(o, get(e.s.GetOrg(e.ctx, o.ID))(t)); diff != "" {
			t.Errorf("GetOrg (-created +got):\n%s", diff)
		}
		if diff := cmp.Diff(o, get(e.s.GetOrgBySlug(e.ctx, "acme"))(t)); diff != "" {
			t.Errorf("GetOrgBySlug (-created +got):\n%s", diff)
		}
		_, err := e.s.CreateOrg(e.ctx, "acme", "Other")
		isConflict(t, err, "duplicate org slug")
		_, err = e.s.GetOrgBySlug(e.ctx, "nope")
		isNotFound(t, err, "unknown org")
		var nf *store.NotFoundError
		if !errors.As(err, &nf) || nf.Code() != "org_not_found" {
			t.Errorf("unknown org: %v, want a *NotFoundError with code org_not_found", err)
		}
	}},
	{"TokensHashedOnly", func(t *testing.T, e *env) {
		o := get(e.s.CreateOrg(e.ctx, "acme", "Acme"))(t)
		secret, h := store.NewToken(store.TokenAgent)
		tok := get(e.s.CreateToken(e.ctx, store.Token{OrgID: o.ID, Kind: store.TokenAgent, Name: "agent-1", Hash: h}))(t)
		if !tok.LastUsed.IsZero() {
			t.Errorf("new token LastUsed = %v, want zero", tok.LastUsed)
		}
		got := get(e.s.LookupToken(e.ctx, store.HashToken(secret), e.at(time.Minute)))(t)
		if got.ID != tok.ID || got.OrgID != o.ID || got.Kind != store.TokenAgent || got.Name != "agent-1" {
			t.Errorf("LookupToken = %+v, want token %s of org %s, agent kind", got, tok.ID, o.ID)
		}
		if !got.LastUsed.Equal(e.at(time.Minute)) {
			t.Errorf("LastUsed = %v, want %v", got.LastUsed, e.at(time.Minute))
		}
		_, err := e.s.LookupToken(e.ctx, store.HashToken(secret+"x"), e.t0)
		isNotFound(t, err, "lookup of a wrong secret")
		_, err = e.s.CreateToken(e.ctx, store.Token{OrgID: o.ID, Kind: store.TokenUser, Name: "again", Hash: h})
		isConflict(t, err, "a second token with the same hash")
		if ts := get(e.s.ListTokens(e.ctx, o.ID))(t); len(ts) != 1 {
			t.Errorf("ListTokens = %d tokens, want 1", len(ts))
		}
		// The secret must appear nowhere in the database's bytes (file and WAL).
		for _, f := range e.Files {
			b, err := os.ReadFile(f)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(secret[4:])) {
				t.Errorf("%s holds the token's secret in clear", f)
			}
		}
		if e.Dump != nil {
			b, err := e.Dump()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(h)) {
				t.Fatal("the dump does not hold the token's hash: it cannot show the secret is absent either")
			}
			if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(secret[4:])) {
				t.Error("the database holds the token's secret in clear")
			}
		}
		if err := e.s.DeleteToken(e.ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.s.LookupToken(e.ctx, h, e.t0)
		isNotFound(t, err, "lookup of a deleted token")
		isNotFound(t, e.s.DeleteToken(e.ctx, tok.ID), "deleting it again")
	}},
	{"PipelinesUniquePerOrg", func(t *testing.T, e *env) {
		a, pa := e.org(t, "a")
		b, pb := e.org(t, "b") // the same slug "ci" in another org is fine
		if pa.ID == pb.ID || pa.Slug != pb.Slug {
			t.Fatalf("pipelines %+v %+v: want two rows with one slug", pa, pb)
		}
		_, err := e.s.CreatePipeline(e.ctx, store.Pipeline{OrgID: a.ID, Slug: "ci", Name: "again"})
		isConflict(t, err, "duplicate pipeline slug in one org")
		got := get(e.s.GetPipeline(e.ctx, b.ID, "ci"))(t)
		if diff := cmp.Diff(pb, got); diff != "" {
			t.Errorf("GetPipeline (-created +got):\n%s", diff)
		}
		_, err = e.s.GetPipeline(e.ctx, a.ID, "nope")
		isNotFound(t, err, "unknown pipeline")
		get(e.s.CreatePipeline(e.ctx, store.Pipeline{OrgID: a.ID, Slug: "aa", Name: "AA"}))(t)
		ps := get(e.s.ListPipelines(e.ctx, a.ID))(t)
		if len(ps) != 2 || ps[0].Slug != "aa" || ps[1].Slug != "ci" {
			t.Errorf("ListPipelines = %+v, want aa, ci", ps)
		}
	}},
}

var miscCases = []testCase{
	{"Blobs", func(t *testing.T, e *env) {
		d := "sha256:" + string(bytes.Repeat([]byte("ab"), 32))
		b := get(e.s.PutBlob(e.ctx, store.Blob{Digest: d, Size: 42, CreatedAt: e.t0}))(t)
		again := get(e.s.PutBlob(e.ctx, store.Blob{Digest: d, Size: 42, CreatedAt: e.at(time.Hour)}))(t)
		if diff := cmp.Diff(b, again); diff != "" {
			t.Errorf("PutBlob twice must keep the first record (-first +second):\n%s", diff)
		}
		if got := get(e.s.GetBlob(e.ctx, d))(t); got.Size != 42 || !got.CreatedAt.Equal(e.t0) {
			t.Errorf("GetBlob = %+v", got)
		}
		_, err := e.s.GetBlob(e.ctx, "sha256:00")
		isNotFound(t, err, "unknown blob")
	}},
	{"Agents", func(t *testing.T, e *env) {
		a := e.agent(t, "a1", "sandbox", "linux", "big", "linux")
		if diff := cmp.Diff([]string{"big", "linux"}, a.Labels); diff != "" {
			t.Errorf("labels (-want +got):\n%s", diff)
		}
		a = get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", Name: "renamed", Backend: "docker", Labels: []string{"x"}}, e.at(time.Second)))(t)
		if a.Name != "renamed" || a.Backend != "docker" || !cmp.Equal(a.Labels, []string{"x"}) || !a.LastSeen.Equal(e.at(time.Second)) {
			t.Errorf("re-registered agent = %+v", a)
		}
		if err := e.s.TouchAgent(e.ctx, "a1", e.at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := get(e.s.GetAgent(e.ctx, "a1"))(t); !got.LastSeen.Equal(e.at(time.Minute)) {
			t.Errorf("LastSeen = %v, want %v", got.LastSeen, e.at(time.Minute))
		}
		isNotFound(t, e.s.TouchAgent(e.ctx, "ghost", e.t0), "touching an unknown agent")
		_, err := e.s.GetAgent(e.ctx, "ghost")
		isNotFound(t, err, "unknown agent")
		e.agent(t, "a0", "host")
		if as := get(e.s.ListAgents(e.ctx))(t); len(as) != 2 || as[0].ID != "a0" {
			t.Errorf("ListAgents = %+v", as)
		}
	}},
	{"AgentBoundToOrg", func(t *testing.T, e *env) {
		acme, _ := e.org(t, "acme")
		other, _ := e.org(t, "other")
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", OrgID: acme.ID, Name: "acme's", Backend: "sandbox", Labels: []string{"x"}}, e.t0))(t)
		_, err := e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", OrgID: other.ID, Name: "taken", Backend: "host"}, e.at(time.Second))
		isNotFound(t, err, "another org registering an agent id")
		a := get(e.s.GetAgent(e.ctx, "a1"))(t)
		if a.OrgID != acme.ID || a.Name != "acme's" || a.Backend != "sandbox" || !cmp.Equal(a.Labels, []string{"x"}) || !a.LastSeen.Equal(e.t0) {
			t.Errorf("after a refused takeover the agent is %+v", a)
		}
		if a = get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", OrgID: acme.ID, Name: "again", Backend: "docker"}, e.at(time.Minute)))(t); a.Name != "again" {
			t.Errorf("its own org re-registering = %+v", a)
		}
		// An agent of no org (registered before orgs were recorded) is bound by the next one.
		e.agent(t, "legacy", "sandbox")
		if a = get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "legacy", OrgID: other.ID, Backend: "sandbox"}, e.t0))(t); a.OrgID != other.ID {
			t.Errorf("a legacy agent re-registered = %+v", a)
		}
		_, err = e.s.UpsertAgent(e.ctx, store.Agent{ID: "legacy", OrgID: acme.ID, Backend: "sandbox"}, e.t0)
		isNotFound(t, err, "a takeover of the legacy agent once bound")
	}},
	{"CacheRegistry", func(t *testing.T, e *env) {
		o, _ := e.org(t, "acme")
		other, _ := e.org(t, "other")
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k", Scope: "s", Snapshot: "snap1", AgentID: "a1", CreatedAt: e.t0}))(t)
		got := get(e.s.LookupCache(e.ctx, o.ID, "k", "s", e.at(time.Hour)))(t)
		if got.Snapshot != "snap1" || got.AgentID != "a1" || !got.LastUsed.Equal(e.at(time.Hour)) {
			t.Errorf("LookupCache = %+v", got)
		}
		_, err := e.s.LookupCache(e.ctx, other.ID, "k", "s", e.t0)
		isNotFound(t, err, "another org's entry")
		_, err = e.s.LookupCache(e.ctx, o.ID, "k", "other-scope", e.t0)
		isNotFound(t, err, "another scope")
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k", Scope: "s", Snapshot: "snap2", AgentID: "a2"}))(t)
		if got := get(e.s.LookupCache(e.ctx, o.ID, "k", "s", e.t0))(t); got.Snapshot != "snap2" || got.AgentID != "a2" {
			t.Errorf("replaced entry = %+v, want snap2 on a2", got)
		}
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k2", Scope: "s", Snapshot: "snap3", AgentID: "a2"}))(t)
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k3", Scope: "s", Snapshot: "snap4", AgentID: "a3"}))(t)
		if n := get(e.s.DeleteAgentCache(e.ctx, "a2"))(t); n != 2 {
			t.Errorf("DeleteAgentCache = %d, want 2", n)
		}
		if err := e.s.DeleteCacheEntry(e.ctx, o.ID, "k3", "s"); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"k", "k2", "k3"} {
			_, err := e.s.LookupCache(e.ctx, o.ID, k, "s", e.t0)
			isNotFound(t, err, "deleted entry "+k)
		}
	}},
	{"CacheExplain", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		other, _ := e.org(t, "other")
		_, err := e.s.LastCacheEntry(e.ctx, o.ID, p.ID, "build")
		isNotFound(t, err, "the last entry of a step never cached")
		for i, k := range []string{"k1", "k2"} {
			get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: k, Scope: "s", Snapshot: "snap-" + k, AgentID: "a1",
				PipelineID: p.ID, StepKey: "build", Inputs: []byte(`{"policy":"forever"}`), CreatedAt: e.at(time.Duration(i) * time.Second)}))(t)
		}
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k3", Scope: "s", Snapshot: "snap-k3", AgentID: "a1",
			PipelineID: p.ID, StepKey: "test", CreatedAt: e.at(time.Hour)}))(t)
		last := get(e.s.LastCacheEntry(e.ctx, o.ID, p.ID, "build"))(t)
		if last.Key != "k2" || last.StepKey != "build" || string(last.Inputs) != `{"policy":"forever"}` {
			t.Errorf("LastCacheEntry = %+v, want k2 of step build with its inputs", last)
		}
		_, err = e.s.LastCacheEntry(e.ctx, other.ID, p.ID, "build")
		isNotFound(t, err, "another org's last entry")

		_, js := e.build(t, o, p, store.NewJob{StepKey: "build"})
		j := get(e.s.NoteCacheMiss(e.ctx, js[0].ID, "first"))(t)
		if j.CacheNote != "first" || j.State != store.JobPending {
			t.Errorf("noted job = %+v", j)
		}
		if j = get(e.s.NoteCacheMiss(e.ctx, js[0].ID, "second"))(t); j.CacheNote != "first" {
			t.Errorf("a second note replaced the first: %q", j.CacheNote)
		}
		if j = get(e.s.GetJob(e.ctx, js[0].ID))(t); j.CacheNote != "first" {
			t.Errorf("GetJob's note = %q", j.CacheNote)
		}
		_, err = e.s.NoteCacheMiss(e.ctx, "nope", "x")
		isNotFound(t, err, "a note on an unknown job")
	}},
	{"SnapshotRemovals", func(t *testing.T, e *env) {
		o, _ := e.org(t, "acme")
		if got := get(e.s.ListSnapshotRemovals(e.ctx, "a1", 10))(t); len(got) != 0 {
			t.Errorf("removals of a new agent = %v", got)
		}
		for i, snap := range []string{"e-2", "e-1", "e-2"} { // a repeat is a no-op
			if err := e.s.QueueSnapshotRemoval(e.ctx, "a1", snap, e.at(time.Duration(i)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.s.QueueSnapshotRemoval(e.ctx, "a2", "e-9", e.t0); err != nil {
			t.Fatal(err)
		}
		// A cached snapshot stays, whoever asks.
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k", Scope: "s", Snapshot: "c-1", AgentID: "a1"}))(t)
		if err := e.s.QueueSnapshotRemoval(e.ctx, "a1", "c-1", e.at(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"e-2", "e-1"}, get(e.s.ListSnapshotRemovals(e.ctx, "a1", 10))(t)); d != "" {
			t.Errorf("a1's removals (-want +got):\n%s", d)
		}
		if d := cmp.Diff([]string{"e-2"}, get(e.s.ListSnapshotRemovals(e.ctx, "a1", 1))(t)); d != "" {
			t.Errorf("a1's first removal (-want +got):\n%s", d)
		}
		if err := e.s.AckSnapshotRemovals(e.ctx, "a1", []string{"e-2", "unknown", "e-9"}); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"e-1"}, get(e.s.ListSnapshotRemovals(e.ctx, "a1", 10))(t)); d != "" {
			t.Errorf("a1's removals after the ack (-want +got):\n%s", d)
		}
		if d := cmp.Diff([]string{"e-9"}, get(e.s.ListSnapshotRemovals(e.ctx, "a2", 10))(t)); d != "" {
			t.Errorf("another agent's ack removed a2's (-want +got):\n%s", d)
		}
	}},
	{"ErrorClasses", func(t *testing.T, e *env) {
		_, err := e.s.GetBuild(e.ctx, "nope")
		var nf *store.NotFoundError
		if !errors.As(err, &nf) || nf.Kind != "build" || errors.Is(err, errs.ErrInfra) {
			t.Errorf("GetBuild(unknown) = %v, want a *NotFoundError of kind build, not an infrastructure error", err)
		}
		ctx, cancel := contextCanceled(e)
		defer cancel()
		if _, err := e.s.CreateOrg(ctx, "x", "x"); !errors.Is(err, errs.ErrCanceled) {
			t.Errorf("CreateOrg on a canceled context = %v, want errs.ErrCanceled", err)
		}
	}},
}
