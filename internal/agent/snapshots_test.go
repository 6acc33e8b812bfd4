package agent_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/vm/host"
)

// TestEphemeralSnapshotsRemoved: the ephemeral snapshot of a builds_in parent is removed from
// the agent once the build no longer needs it, also when the agent was down when the build
// ended (a restarted agent with the same state dir removes it at once); a cached snapshot
// stays.
func TestEphemeralSnapshotsRemoved(t *testing.T) {
	e := newEnv(t, envOpts{})
	state := t.TempDir()
	// The first alive call is at start; the next one would be in an hour: the removal waits
	// for the restart.
	a := e.startAgent(agentOpts{state: state, alive: time.Hour})
	b := e.submit(ir(
		step("base", "echo base > base.txt"),
		step("child", "cat base.txt", `"builds_in":"base"`),
		step("cached", "echo cached > c.txt", `"cache":{"policy":"forever"}`),
		step("cached-child", "cat c.txt", `"builds_in":"cached"`),
	), map[string]any{"cache_keys": map[string]string{"cached": "k-cached"},
		"cache_inputs": map[string]any{"cached": map[string]string{"fingerprint": "fp-cached"}}})
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	js := e.jobs(b.ID)
	eph, cached := js["base"].Snapshot, js["cached"].Snapshot
	if eph == "" || cached == "" {
		t.Fatalf("snapshots: base %q, cached %q", eph, cached)
	}
	be := host.New(state)
	exists := func(id string) bool {
		ok, err := be.SnapshotExists(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	e.waitFor("the removal to be queued", func() bool {
		l, err := e.db.ListSnapshotRemovals(e.ctx, a.a.ID(), 10)
		return err == nil && len(l) == 1 && l[0] == eph
	})
	if !exists(eph) {
		t.Fatal("the ephemeral snapshot went before the agent was told")
	}
	if err := a.stop(t); err == nil {
		t.Log("agent stopped")
	}
	restarted := e.startAgent(agentOpts{state: state, alive: 100 * time.Millisecond})
	if restarted.a.ID() != "" && restarted.a.ID() != a.a.ID() {
		t.Fatalf("the restarted agent is %s, was %s", restarted.a.ID(), a.a.ID())
	}
	e.waitFor("the restarted agent to remove the ephemeral snapshot", func() bool { return !exists(eph) })
	e.waitFor("the removal to be acknowledged", func() bool {
		l, err := e.db.ListSnapshotRemovals(e.ctx, a.a.ID(), 10)
		return err == nil && len(l) == 0
	})
	if !exists(cached) {
		t.Error("the cached snapshot was removed")
	}
}

// TestRestartRunsParentAgain: an agent that restarted lost the ephemeral snapshot of a
// builds_in parent whose child had not run yet (its start-up reconcile removes them); the
// child is not placed on it for that snapshot, the parent runs again and the child runs where
// the new snapshot is (remote.md).
func TestRestartRunsParentAgain(t *testing.T) {
	e := newEnv(t, envOpts{})
	state := t.TempDir()
	// The agent's connection is cut once the parent's finish was answered: the child,
	// released then, waits (the agent claims apart, or its finish would claim the child).
	a := e.startAgent(agentOpts{state: state, claimApart: true, cutAfter: func(r *http.Request) bool {
		return strings.HasSuffix(r.URL.Path, "/finish")
	}})
	b := e.submit(ir(
		step("base", "echo base > base.txt"),
		step("child", "cat base.txt", `"builds_in":"base"`),
	), nil)
	e.waitFor("the child to be released", func() bool { return e.jobs(b.ID)["child"].State == store.JobScheduled })
	eph := e.jobs(b.ID)["base"].Snapshot
	_ = a.stop(t)
	// What the reconcile of a restarted agent process does (this one shares the test's
	// process, which the host backend's reconcile sees alive).
	if err := host.New(state).RemoveSnapshot(e.ctx, eph); err != nil {
		t.Fatal(err)
	}
	e.startAgent(agentOpts{state: state, alive: time.Hour})
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	js := e.jobs(b.ID)
	if js["base"].Attempt != 2 || js["base"].Snapshot == eph {
		t.Errorf("base: attempt %d snapshot %q (lost %q), want it run again", js["base"].Attempt, js["base"].Snapshot, eph)
	}
	if got := e.logLines(js["child"], js["child"].Attempt); len(got) != 1 || got[0].Content != "base" {
		t.Errorf("child's log = %+v, want base", got)
	}
	// The snapshot no child needs now is the new one: its removal is queued, not the lost one's.
	e.waitFor("the new snapshot's removal to be queued", func() bool {
		l, err := e.db.ListSnapshotRemovals(e.ctx, a.a.ID(), 10)
		return err == nil && len(l) == 1 && l[0] == js["base"].Snapshot
	})
}

// TestGoneAgentRunsParentAgain: the agent holding a builds_in parent's snapshot is gone (not
// seen within the agents' TTL) before the child ran: the parent runs again on another agent
// and the child follows it there (remote.md).
func TestGoneAgentRunsParentAgain(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.startAgent(agentOpts{claimApart: true, cutAfter: func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/finish") }})
	b := e.submit(ir(
		step("base", "echo base > base.txt"),
		step("child", "cat base.txt", `"builds_in":"base"`),
	), nil)
	e.waitFor("the child to be released", func() bool { return e.jobs(b.ID)["child"].State == store.JobScheduled })
	first := e.jobs(b.ID)["base"]
	_ = a.stop(t)
	other := e.startAgent(agentOpts{alive: time.Hour})
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	js := e.jobs(b.ID)
	if js["base"].Attempt != 2 || js["base"].AgentID != other.a.ID() || js["child"].AgentID != other.a.ID() {
		t.Errorf("base attempt %d on %s, child on %s; want both on %s (base ran first on %s)",
			js["base"].Attempt, js["base"].AgentID, js["child"].AgentID, other.a.ID(), first.AgentID)
	}
}
