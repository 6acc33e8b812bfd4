package driver

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/store"
)

// TestReplayRequeuedAttempt: a step whose agent was lost is requeued within its policy
// attempt, so its log goes on under the same attempt; a driver taking the build over then
// replays the lost claim's lines before the current claim's, as a live watcher saw them, and
// the lines the current claim writes after the takeover are not dropped as duplicates.
func TestReplayRequeuedAttempt(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "s", cmd: "unused: the test is the agent"}}
	f := newFixture(t, ctx, steps, Options{}, 0)
	st, a := f.st, f.agent
	if _, err := st.UpsertAgent(ctx, store.Agent{ID: a.id, Name: a.id}, time.Now()); err != nil {
		t.Fatal(err)
	}
	lines := func() []string {
		var out []string
		for _, e := range f.stored(t, ctx) {
			if e.StepLog != nil {
				out = append(out, e.StepLog.Line)
			}
		}
		return out
	}
	waitLines := func(n int) {
		t.Helper()
		until(t, "the driver to publish the lines", func() bool { return len(lines()) >= n })
	}
	claim := func(ttl time.Duration) store.Job {
		t.Helper()
		var j store.Job
		until(t, "a claim", func() bool {
			var ok bool
			var err error
			j, ok, err = st.ClaimJob(ctx, store.Claim{AgentID: a.id, OrgID: a.org, Now: time.Now(), LeaseTTL: ttl})
			return err == nil && ok
		})
		if _, err := st.StartJob(ctx, j.ID, j.Attempt, time.Now()); err != nil {
			t.Fatal(err)
		}
		return j
	}
	logLine := func(j store.Job, seq int64, line string) {
		t.Helper()
		if _, err := st.AppendLogs(ctx, j.ID, j.Attempt, []store.LogChunk{{Seq: seq, Content: line, TS: time.Now()}}); err != nil {
			t.Fatal(err)
		}
	}

	d1, stop := context.WithCancel(ctx)
	r1 := make(chan error, 1)
	go func() { _, err := Drive(d1, f.cfg("r1", steps, Options{}, 0), f.build.ID); r1 <- err }()
	j := claim(time.Nanosecond) // the lease is over at once: this agent will be lost
	logLine(j, 1, "one")
	waitLines(1)
	if js, err := st.ReapExpiredLeases(ctx, time.Now(), 2); err != nil || len(js) != 1 || js[0].State != store.JobScheduled {
		t.Fatalf("reap = %+v, %v; want the job requeued", js, err)
	}
	j = claim(time.Minute)
	if j.Attempt != 2 {
		t.Fatalf("the requeued job's claim is attempt %d", j.Attempt)
	}
	logLine(j, 1, "two")
	waitLines(2)
	stop()
	if err := <-r1; err == nil {
		t.Fatal("the first driver was not stopped")
	}

	r2 := make(chan error, 1)
	go func() { _, err := Drive(ctx, f.cfg("r2", steps, Options{}, 0), f.build.ID); r2 <- err }()
	logLine(j, 2, "three")
	if _, err := st.FinishJob(ctx, j.ID, j.Attempt, store.Finish{ExitCode: 0, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := <-r2; err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"one", "two", "three"}, lines()); d != "" {
		t.Errorf("stored step_log lines (-want +got):\n%s", d)
	}
	var kinds []events.Kind
	for _, e := range f.stored(t, ctx) {
		if e.StepID() != "" {
			kinds = append(kinds, e.Kind)
		}
	}
	want := []events.Kind{events.KindStepQueued, events.KindStepStart, events.KindStepLog, events.KindStepLog,
		events.KindStepLog, events.KindStepEnd}
	if d := cmp.Diff(want, kinds); d != "" {
		t.Errorf("the step's stored events (-want +got):\n%s", d)
	}
}

// TestReplayParentRunAgain: a parent that passed runs again because its agent restarted and
// lost its snapshot (store.UpsertAgent); a driver taking the build over meanwhile ends the
// parent as the scheduler saw it end, with its first pass's lines and one step_end, and the
// child runs where the new snapshot is.
func TestReplayParentRunAgain(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "a", cmd: "unused"}, {key: "b", cmd: "unused", parent: "a"}}
	f := newFixture(t, ctx, steps, Options{}, 0)
	st, ag := f.st, f.agent
	b, js, err := st.CreateBuild(ctx, store.NewBuild{OrgID: ag.org, PipelineID: f.build.PipelineID, IR: "{}", Now: time.Now(),
		Jobs: []store.NewJob{{ID: "00000000-0000-4000-8000-0000000000a1", StepKey: "a"},
			{StepKey: "b", ParentID: "00000000-0000-4000-8000-0000000000a1", DependsOn: []string{"00000000-0000-4000-8000-0000000000a1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.build = b
	register := func(boot string) {
		t.Helper()
		if _, err := st.UpsertAgent(ctx, store.Agent{ID: ag.id, Name: ag.id, BootID: boot}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	register("boot-1")
	// run claims the next job, which must be want's, logs line and passes it with snap.
	run := func(want store.Job, line, snap string) {
		t.Helper()
		var j store.Job
		until(t, "a claim of "+want.StepKey, func() bool {
			var ok bool
			j, ok, err = st.ClaimJob(ctx, store.Claim{AgentID: ag.id, OrgID: ag.org, Now: time.Now(), LeaseTTL: time.Minute})
			return err == nil && ok
		})
		if j.ID != want.ID {
			t.Fatalf("claimed %s, want %s", j.StepKey, want.StepKey)
		}
		if _, err := st.StartJob(ctx, j.ID, j.Attempt, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AppendLogs(ctx, j.ID, j.Attempt, []store.LogChunk{{Seq: 1, Content: line, TS: time.Now()}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.FinishJob(ctx, j.ID, j.Attempt, store.Finish{ExitCode: 0, Snapshot: snap, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}

	d1, stop := context.WithCancel(ctx)
	r1 := make(chan error, 1)
	go func() { _, err := Drive(d1, f.cfg("r1", steps, Options{}, 0), b.ID); r1 <- err }()
	run(js[0], "a first", "snap-a1")
	until(t, "the child released", func() bool {
		j, err := st.GetJob(ctx, js[1].ID)
		return err == nil && j.State == store.JobScheduled
	})
	stop()
	if err := <-r1; err == nil {
		t.Fatal("the first driver was not stopped")
	}
	register("boot-2") // the agent restarted: snap-a1 is gone, a runs again
	if j, _ := st.GetJob(ctx, js[0].ID); j.State != store.JobScheduled || j.RerunAttempt != 1 || j.RerunSnapshot != "snap-a1" {
		t.Fatalf("a after the restart: %+v", j)
	}
	r2 := make(chan error, 1)
	go func() { _, err := Drive(ctx, f.cfg("r2", steps, Options{}, 0), b.ID); r2 <- err }()
	run(js[0], "a again", "snap-a2")
	run(js[1], "b", "")
	if err := <-r2; err != nil {
		t.Fatal(err)
	}
	got, exit := byStep(f.stored(t, ctx))
	want := map[string][]string{"a": {"step_queued", "step_start", "step_log:a first", "step_end:0"},
		"b": {"step_queued", "step_start", "step_log:b", "step_end:0"}}
	if d := cmp.Diff(want, got); d != "" || exit != 0 {
		t.Errorf("stored events (-want +got), exit %d:\n%s", exit, d)
	}
	if r, err := st.ListSnapshotRemovals(ctx, ag.id, 10); err != nil || len(r) != 1 || r[0] != "snap-a2" {
		t.Errorf("removals %v, %v; want the snapshot of a's second pass", r, err)
	}
}
