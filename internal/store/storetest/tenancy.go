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
