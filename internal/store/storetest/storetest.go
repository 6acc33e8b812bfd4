// Package storetest is the conformance suite of the store.Store contract (package store's
// doc): every driver's tests call Run with a Factory, as VM backends run internal/vm/vmtest.
// Each case gets a fresh, empty store; cases check each operation, each lifecycle rule
// (transitions, fencing, idempotency, error classes) and the concurrency guarantees
// (one claim per job, gap-free sequences) through the interface only. What only a driver can
// check (several processes on one file, its schema) stays in the driver's own tests.
package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
)

// Fixture is what a driver's test provides for one case.
type Fixture struct {
	// Store is fresh and empty.
	Store store.Store
	// Files are the paths whose bytes hold the database (a file and its WAL), read to check
	// that no secret is stored in clear; nil for a driver with no local files.
	Files []string
	// Dump returns every stored row as text, for the same check on a driver whose bytes
	// are not local files (a database server); nil when Files are enough.
	Dump func() ([]byte, error)
}

// Factory returns a fresh Fixture; it registers t.Cleanup for its own teardown (closing the
// store included) and t.Skip when the driver is unavailable.
type Factory func(t *testing.T) Fixture

// hangGuard bounds every call of the suite, so that a driver that deadlocks (a claim waiting
// on a lock it holds) fails with a message instead of the test binary's timeout. It is not a
// timing assertion: every call returns in milliseconds normally.
const hangGuard = time.Minute

type testCase struct {
	name string
	fn   func(t *testing.T, e *env)
}

// Run runs every case, one after another, each on its own store.
func Run(t *testing.T, f Factory) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			fx := f(t)
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			c.fn(t, &env{Fixture: fx, s: fx.Store, ctx: ctx, t0: time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)})
		})
	}
}

func cases() []testCase {
	var all []testCase
	for _, group := range [][]testCase{tenancyCases, buildCases, jobCases, claimCases, streamCases, batchCases, watchCases, leaseCases, miscCases, secretArtifactCases, restartCases, retentionCases, handBackCases} {
		all = append(all, group...)
	}
	return all
}

// env is one case's store and helpers.
type env struct {
	Fixture
	s   store.Store
	ctx context.Context
	t0  time.Time // the suite's clock: every "now" is t0 plus an offset, never time.Now
	// lastOrg is the org e.org made last: the org of claims through e.claim.
	lastOrg string
}

func (e *env) at(d time.Duration) time.Time { return e.t0.Add(d) }

// get(call())(t) is call's value, or the test fails with its error.
func get[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// org makes an org and a pipeline in it.
func (e *env) org(t *testing.T, slug string) (store.Org, store.Pipeline) {
	t.Helper()
	o := get(e.s.CreateOrg(e.ctx, slug, "Org "+slug))(t)
	p := get(e.s.CreatePipeline(e.ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI", Repository: "r", DefaultBranch: "main"}))(t)
	e.lastOrg = o.ID
	return o, p
}

// build creates a build of p with jobs.
func (e *env) build(t *testing.T, o store.Org, p store.Pipeline, jobs ...store.NewJob) (store.Build, []store.Job) {
	t.Helper()
	b, js, err := e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: `{"steps":[]}`, Jobs: jobs, Now: e.t0})
	if err != nil {
		t.Fatal(err)
	}
	return b, js
}

// ready creates a build of n released jobs, keys j0…, in a fresh org.
func (e *env) ready(t *testing.T, slug string, n int) []store.Job {
	t.Helper()
	o, p := e.org(t, slug)
	var nj []store.NewJob
	for i := range n {
		nj = append(nj, store.NewJob{StepKey: fmt.Sprintf("j%d", i), Command: "true"})
	}
	_, js := e.build(t, o, p, nj...)
	for i := range js {
		js[i] = get(e.s.ReleaseJob(e.ctx, js[i].ID, e.t0))(t)
	}
	return js
}

func (e *env) agent(t *testing.T, id, backend string, labels ...string) store.Agent {
	t.Helper()
	return get(e.s.UpsertAgent(e.ctx, store.Agent{ID: id, Name: id, Backend: backend, Labels: labels}, e.t0))(t)
}

// claim claims for agent as an agent of the org e.org made last.
func (e *env) claim(t *testing.T, agent string, now time.Time) (store.Job, bool) {
	t.Helper()
	return e.claimIn(t, e.lastOrg, agent, now)
}

func (e *env) claimIn(t *testing.T, orgID, agent string, now time.Time) (store.Job, bool) {
	t.Helper()
	j, ok, err := e.s.ClaimJob(e.ctx, store.Claim{AgentID: agent, OrgID: orgID, Now: now, LeaseTTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return j, ok
}

// parallel runs fn(i) for i < n in goroutines and waits, failing the test rather than
// hanging when one does not return.
func parallel(t *testing.T, n int, fn func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	close(start) // all goroutines released together, to make them race
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatalf("%d concurrent calls still running after %v", n, hangGuard)
	}
}

// isConflict and isNotFound fail the test unless err is of the class.
func isConflict(t *testing.T, err error, what string) {
	t.Helper()
	if !store.IsConflict(err) {
		t.Fatalf("%s: err = %v, want a conflict", what, err)
	}
}

func isNotFound(t *testing.T, err error, what string) {
	t.Helper()
	if !store.IsNotFound(err) {
		t.Fatalf("%s: err = %v, want not found", what, err)
	}
}
