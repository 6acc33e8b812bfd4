package driver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

// noWake hides the store's Watcher: every wake-up is lost and only the fallback poll is left.
type noWake struct{ store.Store }

// TestWakeUps: the driver learns of a job's start, logs and end by the store's wake-ups (with
// a poll of an hour nothing else could, before the hang guard), and when every wake-up is
// lost, by its fallback poll; either way the build is the local one.
func TestWakeUps(t *testing.T) {
	steps := []step{{key: "a", cmd: "print hello; print world"}, {key: "b", cmd: "print b", parent: "a"},
		{key: "c", cmd: "exit 3", after: []string{"b"}}, {key: "d", cmd: "print d", after: []string{"c"}}}
	for _, c := range []struct {
		name string
		lost bool
	}{{"woken", false}, {"lost wake-ups fall back to polling", true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := hang(t)
			want, wantExit := byStep(local(ctx, steps, Options{}, 0))
			f := newFixture(t, ctx, steps, Options{}, 0)
			cfg := f.cfg("r1", steps, Options{}, 0)
			cfg.Poll = time.Hour
			if c.lost {
				cfg.Store, cfg.Poll = noWake{f.st}, 20*time.Millisecond
			}
			actx, stop := context.WithCancel(ctx)
			defer stop()
			go f.agent.run(actx, t)
			if _, err := Drive(ctx, cfg, f.build.ID); err != nil {
				t.Fatal(err)
			}
			got, gotExit := byStep(f.stored(t, ctx))
			if d := cmp.Diff(want, got); d != "" || gotExit != wantExit {
				t.Errorf("events differ from local (-local +remote), exit %d vs %d:\n%s", wantExit, gotExit, d)
			}
		})
	}
}

// TestLogsOutOfOrder: an agent's later log call stored before an earlier one (it pipelines
// them) still reaches the build's events complete and in seq order.
func TestLogsOutOfOrder(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "a", cmd: "print unused"}}
	f := newFixture(t, ctx, steps, Options{}, 0)
	a := f.agent
	go func() {
		if _, err := a.st.UpsertAgent(ctx, store.Agent{ID: a.id, Name: a.id}, time.Now()); err != nil {
			t.Error(err)
			return
		}
		var j store.Job
		for ctx.Err() == nil {
			var ok bool
			if j, ok, _ = a.st.ClaimJob(ctx, store.Claim{AgentID: a.id, OrgID: a.org, Now: time.Now(), LeaseTTL: time.Minute}); ok {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		a.st.StartJob(ctx, j.ID, j.Attempt, time.Now())
		chunk := func(seqs ...int64) []store.LogChunk {
			var cs []store.LogChunk
			for _, s := range seqs {
				cs = append(cs, store.LogChunk{Seq: s, Content: fmt.Sprint("line ", s), TS: time.Now()})
			}
			return cs
		}
		a.st.AppendLogs(ctx, j.ID, j.Attempt, chunk(3, 4))
		time.Sleep(100 * time.Millisecond) // the driver reads the gap meanwhile (most likely)
		a.st.AppendLogs(ctx, j.ID, j.Attempt, chunk(1, 2))
		a.st.AppendLogs(ctx, j.ID, j.Attempt, chunk(5))
		a.st.FinishJob(ctx, j.ID, j.Attempt, store.Finish{ExitCode: 0, Now: time.Now()})
	}()
	if _, err := Drive(ctx, f.cfg("r1", steps, Options{}, 0), f.build.ID); err != nil {
		t.Fatal(err)
	}
	got, _ := byStep(f.stored(t, ctx))
	want := []string{"step_queued", "step_start", "step_log:line 1", "step_log:line 2", "step_log:line 3",
		"step_log:line 4", "step_log:line 5", "step_end:0"}
	if d := cmp.Diff(want, got["a"]); d != "" {
		t.Errorf("events of a (-want +got):\n%s", d)
	}
}
