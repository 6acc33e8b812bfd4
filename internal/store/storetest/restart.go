package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hmci/hm/internal/store"
)

// restartCases: an agent's restart (a registration with another boot id) and what it lost.
var restartCases = []testCase{
	{"AgentRestartRerunsParents", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		boot := func(id, b string) {
			t.Helper()
			get(e.s.UpsertAgent(e.ctx, store.Agent{ID: id, Name: id, Backend: "sandbox", BootID: b}, e.t0))(t)
		}
		boot("a1", "boot-1")
		boot("a2", "boot-x")
		// run passes job j on agent with snapshot snap.
		run := func(j store.Job, agent, snap string) store.Job {
			t.Helper()
			get(e.s.ReleaseJob(e.ctx, j.ID, e.t0))(t)
			c, ok := e.claim(t, agent, e.t0)
			if !ok || c.ID != j.ID {
				t.Fatalf("%s claimed %+v (ok %v), want %s", agent, c, ok, j.StepKey)
			}
			return get(e.s.FinishJob(e.ctx, c.ID, c.Attempt, store.Finish{ExitCode: 0, Snapshot: snap}))(t)
		}
		// A chain deps → build → test, with deps and build done on a1 and test released.
		_, chain := e.build(t, o, p, store.NewJob{ID: "00000000-0000-4000-8000-0000000000a1", StepKey: "deps"},
			store.NewJob{ID: "00000000-0000-4000-8000-0000000000a2", StepKey: "build", ParentID: "00000000-0000-4000-8000-0000000000a1"},
			store.NewJob{StepKey: "test", ParentID: "00000000-0000-4000-8000-0000000000a2"})
		run(chain[0], "a1", "e-1")
		run(chain[1], "a1", "e-2")
		// A cached parent on a1 (its entry's snapshot is kept: it survives the restart).
		_, cached := e.build(t, o, p, store.NewJob{ID: "00000000-0000-4000-8000-0000000000b1", StepKey: "deps"},
			store.NewJob{StepKey: "test", ParentID: "00000000-0000-4000-8000-0000000000b1"})
		get(e.s.PutCacheEntry(e.ctx, store.CacheEntry{OrgID: o.ID, Key: "k", Scope: "s", Snapshot: "c-1", AgentID: "a1"}))(t)
		get(e.s.PassCached(e.ctx, cached[0].ID, "c-1", "a1", nil, e.t0))(t)
		// A passed job no child needs any more, and a removal queued on a1.
		_, done := e.build(t, o, p, store.NewJob{StepKey: "lint"})
		run(done[0], "a1", "e-3")
		get(e.s.ReleaseJob(e.ctx, chain[2].ID, e.t0))(t)
		if err := e.s.QueueSnapshotRemoval(e.ctx, "a1", "e-0", e.t0); err != nil {
			t.Fatal(err)
		}

		// The same process registering again, or an agent that sends no boot id, lost nothing.
		boot("a1", "boot-1")
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a2", Name: "a2", Backend: "sandbox"}, e.t0))(t)
		if j := get(e.s.GetJob(e.ctx, chain[1].ID))(t); j.State != store.JobPassed || j.SnapshotAgent != "a1" {
			t.Fatalf("a registration with the same boot id changed the parent: %+v", j)
		}

		boot("a1", "boot-2") // restarted: its ephemeral snapshots are gone
		type view struct {
			State                   store.JobState
			Snapshot, SnapshotAgent string
		}
		got := map[string]view{}
		for _, j := range append(append(append([]store.Job{}, chain...), cached...), done...) {
			j = get(e.s.GetJob(e.ctx, j.ID))(t)
			got[j.ID] = view{j.State, j.Snapshot, j.SnapshotAgent}
		}
		want := map[string]view{
			chain[0].ID:  {store.JobScheduled, "", ""}, // the parent of a parent run again
			chain[1].ID:  {store.JobScheduled, "", ""},
			chain[2].ID:  {store.JobScheduled, "", ""},
			cached[0].ID: {store.JobPassed, "c-1", "a1"}, // cached: stays usable
			cached[1].ID: {store.JobPending, "", ""},
			done[0].ID:   {store.JobPassed, "e-3", ""}, // forgotten, not run again
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("jobs after a1's restart (-want +got):\n%s", d)
		}
		// The first pass is kept: what a replaying driver ends the step with.
		if j := get(e.s.GetJob(e.ctx, chain[1].ID))(t); j.RerunAttempt != 1 || j.RerunSnapshot != "e-2" {
			t.Errorf("build's first pass: attempt %d snapshot %q, want 1 e-2", j.RerunAttempt, j.RerunSnapshot)
		}
		// A queued removal stays: removing a snapshot already gone is a no-op the agent acks.
		if d := cmp.Diff([]string{"e-0"}, get(e.s.ListSnapshotRemovals(e.ctx, "a1", 10))(t)); d != "" {
			t.Errorf("a1's removals after its restart (-want +got):\n%s", d)
		}

		// The chain runs again wherever an agent takes it, and the child follows it there.
		if c, ok := e.claim(t, "a2", e.t0); !ok || c.ID != chain[0].ID || c.Attempt != 2 {
			t.Fatalf("a2 claimed %+v (ok %v), want deps at attempt 2", c, ok)
		}
		get(e.s.FinishJob(e.ctx, chain[0].ID, 2, store.Finish{ExitCode: 0, Snapshot: "e-4"}))(t)
		if c, ok := e.claim(t, "a1", e.t0); ok {
			t.Fatalf("a1 claimed %+v, whose parent's snapshot is on a2 now", c)
		}
		if c, ok := e.claim(t, "a2", e.t0); !ok || c.ID != chain[1].ID {
			t.Fatalf("a2 claimed %+v (ok %v), want build", c, ok)
		}
		get(e.s.FinishJob(e.ctx, chain[1].ID, 2, store.Finish{ExitCode: 0, Snapshot: "e-5"}))(t)
		if c, ok := e.claim(t, "a2", e.t0); !ok || c.ID != chain[2].ID {
			t.Fatalf("a2 claimed %+v (ok %v), want test", c, ok)
		}
		get(e.s.ReleaseJob(e.ctx, cached[1].ID, e.t0))(t)
		if c, ok := e.claim(t, "a1", e.t0); !ok || c.ID != cached[1].ID {
			t.Fatalf("a1 claimed %+v (ok %v), want the child of its cached snapshot", c, ok)
		}
	}},
	{"AgentRestartParentFailsAgain", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", Name: "a1", Backend: "sandbox", BootID: "boot-1"}, e.t0))(t)
		_, js := e.build(t, o, p, store.NewJob{ID: "00000000-0000-4000-8000-0000000000a1", StepKey: "deps"},
			store.NewJob{StepKey: "test", ParentID: "00000000-0000-4000-8000-0000000000a1"})
		get(e.s.ReleaseJob(e.ctx, js[0].ID, e.t0))(t)
		c, _ := e.claim(t, "a1", e.t0)
		get(e.s.FinishJob(e.ctx, c.ID, 1, store.Finish{ExitCode: 0, Snapshot: "e-1"}))(t)
		get(e.s.ReleaseJob(e.ctx, js[1].ID, e.t0))(t)
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", Name: "a1", Backend: "sandbox", BootID: "boot-2"}, e.t0))(t)
		// While the parent runs again, the child waits for it: not an orphan.
		if got := get(e.s.FailOrphans(e.ctx, e.at(time.Second), time.Minute))(t); len(got) != 0 {
			t.Fatalf("FailOrphans failed %+v while the parent runs again", got)
		}
		c, ok := e.claim(t, "a1", e.at(time.Second))
		if !ok || c.ID != js[0].ID {
			t.Fatalf("claimed %+v (ok %v), want deps again", c, ok)
		}
		get(e.s.FinishJob(e.ctx, c.ID, c.Attempt, store.Finish{ExitCode: 1}))(t)
		got := get(e.s.FailOrphans(e.ctx, e.at(2*time.Second), time.Minute))(t)
		if len(got) != 1 || got[0].ID != js[1].ID || got[0].State != store.JobFailed || got[0].ErrorCode != store.CodeAgentLost {
			t.Fatalf("FailOrphans after the parent failed again = %+v, want test failed agent_lost", got)
		}
	}},
	{"DropStaleSnapshotRemovals", func(t *testing.T, e *env) {
		seen := func(id string, at time.Duration) {
			t.Helper()
			get(e.s.UpsertAgent(e.ctx, store.Agent{ID: id, Name: id, Backend: "sandbox"}, e.at(at)))(t)
		}
		seen("gone", 0)
		seen("back", 0)
		seen("live", 0)
		for _, a := range []string{"gone", "back", "live", "never-registered"} {
			if err := e.s.QueueSnapshotRemoval(e.ctx, a, "e-"+a, e.t0); err != nil {
				t.Fatal(err)
			}
		}
		seen("live", 23*time.Hour)
		if err := e.s.TouchAgent(e.ctx, "back", e.at(25*time.Hour)); err != nil {
			t.Fatal(err)
		}
		n := get(e.s.DropStaleSnapshotRemovals(e.ctx, e.at(25*time.Hour), 24*time.Hour))(t)
		if n != 2 {
			t.Errorf("dropped %d removals, want 2 (gone's and never-registered's)", n)
		}
		for a, want := range map[string][]string{"gone": nil, "never-registered": nil, "back": {"e-back"}, "live": {"e-live"}} {
			got := get(e.s.ListSnapshotRemovals(e.ctx, a, 10))(t)
			if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("%s's removals (-want +got):\n%s", a, d)
			}
		}
		if n := get(e.s.DropStaleSnapshotRemovals(e.ctx, e.at(25*time.Hour), 24*time.Hour))(t); n != 0 {
			t.Errorf("a repeat dropped %d", n)
		}
	}},
	{"RerunLostParents", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		for _, a := range []string{"gone", "live"} {
			get(e.s.UpsertAgent(e.ctx, store.Agent{ID: a, Name: a, Backend: "sandbox"}, e.t0))(t)
		}
		// parent makes a build of a parent passed on agent and its child, released unless
		// pending, skipped (finished) when done.
		var release []string
		parent := func(id, agent string, child store.JobState) store.Job {
			t.Helper()
			_, js := e.build(t, o, p, store.NewJob{ID: id, StepKey: "deps"}, store.NewJob{StepKey: "test", ParentID: id})
			get(e.s.ReleaseJob(e.ctx, js[0].ID, e.t0))(t)
			c, ok := e.claim(t, agent, e.t0)
			if !ok || c.ID != js[0].ID {
				t.Fatalf("%s claimed %+v (ok %v)", agent, c, ok)
			}
			get(e.s.FinishJob(e.ctx, c.ID, c.Attempt, store.Finish{ExitCode: 0, Snapshot: "e-" + id}))(t)
			switch child {
			case store.JobScheduled:
				release = append(release, js[1].ID)
			case store.JobSkipped:
				get(e.s.SkipJob(e.ctx, js[1].ID, "canceled", e.t0))(t)
			}
			return js[0]
		}
		lost := parent("00000000-0000-4000-8000-0000000000a1", "gone", store.JobScheduled)
		pending := parent("00000000-0000-4000-8000-0000000000a2", "gone", store.JobPending)
		done := parent("00000000-0000-4000-8000-0000000000a3", "gone", store.JobSkipped)
		live := parent("00000000-0000-4000-8000-0000000000a4", "live", store.JobScheduled)
		_, cached := e.build(t, o, p, store.NewJob{ID: "00000000-0000-4000-8000-0000000000a5", StepKey: "deps"},
			store.NewJob{StepKey: "test", ParentID: "00000000-0000-4000-8000-0000000000a5"})
		get(e.s.PassCached(e.ctx, cached[0].ID, "c-1", "gone", nil, e.t0))(t)
		release = append(release, cached[1].ID)
		for _, id := range release {
			get(e.s.ReleaseJob(e.ctx, id, e.t0))(t)
		}
		if err := e.s.TouchAgent(e.ctx, "live", e.at(time.Hour)); err != nil {
			t.Fatal(err)
		}

		if got := get(e.s.RerunLostParents(e.ctx, e.at(time.Minute), time.Hour))(t); len(got) != 0 {
			t.Fatalf("RerunLostParents within the agents' TTL ran %+v", got)
		}
		got := get(e.s.RerunLostParents(e.ctx, e.at(time.Hour), 30*time.Second))(t)
		var ids []string
		for _, j := range got {
			ids = append(ids, j.ID)
			if j.State != store.JobScheduled || j.Snapshot != "" || j.SnapshotAgent != "" {
				t.Errorf("run again: %+v", j)
			}
		}
		if d := cmp.Diff([]string{lost.ID, pending.ID}, ids, cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
			t.Errorf("parents run again (-want +got):\n%s", d)
		}
		for _, j := range []store.Job{done, live, cached[0]} {
			if j = get(e.s.GetJob(e.ctx, j.ID))(t); j.State != store.JobPassed || j.SnapshotAgent == "" {
				t.Errorf("%s changed: %+v", j.ID, j)
			}
		}
		// An agent holding no snapshot can take nothing but a parent run again.
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "other", Name: "other", Backend: "sandbox"}, e.at(time.Hour)))(t)
		if c, ok := e.claim(t, "other", e.at(time.Hour)); !ok || (c.ID != lost.ID && c.ID != pending.ID) {
			t.Errorf("another agent claimed %+v (ok %v), want a parent run again", c, ok)
		}
	}},
}
