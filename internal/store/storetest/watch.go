package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
)

// wakeGuard bounds the wait for a wake-up that must come: a hang guard, not a timing
// assertion (a notification is delivered at commit, in microseconds).
const wakeGuard = 10 * time.Second

// woken fails the test unless c receives within wakeGuard.
func woken(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(wakeGuard):
		t.Fatalf("%s: no wake-up", what)
	}
}

// drain empties a coalesced wake-up channel.
func drain(c <-chan struct{}) {
	select {
	case <-c:
	default:
	}
}

var watchCases = []testCase{
	// Each change a server waits on wakes the watchers of its topic (store.Watcher is
	// optional: a driver without it is polled and the case is skipped).
	{"WatchWakesOnCommittedChanges", func(t *testing.T, e *env) {
		w, ok := e.s.(store.Watcher)
		if !ok {
			t.Skip("the driver does not implement store.Watcher")
		}
		o, p := e.org(t, "acme")
		b, js := e.build(t, o, p, store.NewJob{StepKey: "a", Command: "true"})
		j := js[0]
		e.agent(t, "a1", "sandbox")
		released, stop1 := w.Watch(store.JobsReleased(o.ID))
		defer stop1()
		job, stop2 := w.Watch(store.JobChanged(j.ID))
		defer stop2()
		logs, stop3 := w.Watch(store.JobLogs(j.ID))
		defer stop3()
		evs, stop4 := w.Watch(store.BuildEvents(b.ID))
		defer stop4()
		build, stop5 := w.Watch(store.BuildChanged(b.ID))
		defer stop5()

		get(e.s.ReleaseJob(e.ctx, j.ID, e.t0))(t)
		woken(t, released, "release: jobs released of the org")
		woken(t, job, "release: the job")
		if _, ok := e.claim(t, "a1", e.t0); !ok {
			t.Fatal("no claim")
		}
		woken(t, job, "claim")
		get(e.s.StartJob(e.ctx, j.ID, 1, e.t0))(t)
		woken(t, job, "start")
		get(e.s.AppendLogs(e.ctx, j.ID, 1, []store.LogChunk{{Seq: 1, Content: "x"}}))(t)
		woken(t, logs, "log chunks")
		get(e.s.AppendEvents(e.ctx, b.ID, []byte(`{"kind":"build_start"}`)))(t)
		woken(t, evs, "events")
		get(e.s.CancelBuild(e.ctx, b.ID, e.t0))(t)
		woken(t, build, "cancel build")
		drain(job)
		get(e.s.CancelJob(e.ctx, j.ID, e.t0))(t)
		woken(t, job, "cancel job")
		get(e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 130}))(t)
		woken(t, job, "finish")

		// A lost lease requeues the job: claimable again, so its org's claims wake.
		js2 := e.ready(t, "beta", 1)
		e.agent(t, "b1", "sandbox")
		beta := e.lastOrg
		if _, ok := e.claim(t, "b1", e.t0); !ok {
			t.Fatal("no claim in beta")
		}
		requeued, stop6 := w.Watch(store.JobsReleased(beta))
		defer stop6()
		reaped := get(e.s.ReapExpiredLeases(e.ctx, e.at(time.Hour), 2))(t)
		if len(reaped) != 1 || reaped[0].ID != js2[0].ID || reaped[0].State != store.JobScheduled {
			t.Fatalf("reaped %+v, want beta's job requeued", reaped)
		}
		woken(t, requeued, "requeue after a lost lease")
	}},
	// A stopped watch receives nothing more, and stopping twice is harmless.
	{"WatchStop", func(t *testing.T, e *env) {
		w, ok := e.s.(store.Watcher)
		if !ok {
			t.Skip("the driver does not implement store.Watcher")
		}
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		c, stop := w.Watch(store.BuildEvents(b.ID))
		stop()
		stop()
		get(e.s.AppendEvents(e.ctx, b.ID, []byte(`{}`)))(t)
		select {
		case <-c:
			t.Fatal("a stopped watch was woken")
		case <-time.After(50 * time.Millisecond):
		}
	}},
}

// Batches larger than one statement (a driver may split them) keep every stream rule.
var batchCases = []testCase{
	{"EventsLargeBatchGapFree", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		get(e.s.AppendEvents(e.ctx, b.ID, []byte(`{"n":0}`)))(t)
		const n = 1111
		var ps [][]byte
		for i := range n {
			ps = append(ps, fmt.Appendf(nil, `{"n":%d}`, i+1))
		}
		seqs := get(e.s.AppendEvents(e.ctx, b.ID, ps...))(t)
		want := make([]int64, n)
		for i := range want {
			want[i] = int64(i + 2)
		}
		if !slices.Equal(seqs, want) {
			t.Fatalf("seqs = %v…, want 2…%d", seqs[:min(5, len(seqs))], n+1)
		}
		evs := get(e.s.ListEvents(e.ctx, b.ID, 0, 2*n))(t)
		if len(evs) != n+1 {
			t.Fatalf("%d events, want %d", len(evs), n+1)
		}
		for i, ev := range evs {
			if ev.Seq != int64(i+1) || string(ev.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("event %d = seq %d %s", i, ev.Seq, ev.Payload)
			}
		}
	}},
	{"LogChunksLargeBatchesIdempotent", func(t *testing.T, e *env) {
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		chunks := func(from, to int64, tag string) []store.LogChunk {
			var cs []store.LogChunk
			for s := from; s <= to; s++ {
				cs = append(cs, store.LogChunk{Seq: s, Stream: int(s % 2), Content: fmt.Sprintf("%s %d", tag, s), TS: e.at(time.Duration(s))})
			}
			return cs
		}
		for _, c := range []struct {
			name     string
			from, to int64
			want     int64
		}{
			{"a batch of 1000", 1, 1000, 1000},
			{"a resend overlapping its end", 501, 1500, 1500},
			{"after a gap", 2001, 2999, 1500},
			{"the whole range again, filling the gap", 1, 3000, 3000},
		} {
			if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, chunks(c.from, c.to, c.name)))(t); got != c.want {
				t.Errorf("%s: contiguous = %d, want %d", c.name, got, c.want)
			}
		}
		cs := get(e.s.ListLogs(e.ctx, j.ID, 1, 0, 5000))(t)
		if len(cs) != 3000 {
			t.Fatalf("%d chunks stored, want 3000", len(cs))
		}
		for i, c := range cs {
			s := int64(i + 1)
			// The first write of each seq is kept.
			tag := "a batch of 1000"
			switch {
			case s > 1000 && s <= 1500:
				tag = "a resend overlapping its end"
			case s > 1500 && s <= 2000 || s == 3000:
				tag = "the whole range again, filling the gap"
			case s > 2000 && s < 3000:
				tag = "after a gap"
			}
			if c.Seq != s || c.Content != fmt.Sprintf("%s %d", tag, s) || c.Stream != int(s%2) || !c.TS.Equal(e.at(time.Duration(s))) {
				t.Fatalf("chunk %d = %+v, want seq %d from %q", i, c, s, tag)
			}
		}
		// A large batch of a stale attempt stores nothing, not its first statement's rows.
		get(e.s.ReapExpiredLeases(e.ctx, e.at(time.Hour), 2))(t)
		if _, ok := e.claim(t, "a1", e.at(time.Hour)); !ok {
			t.Fatal("no second claim")
		}
		_, err := e.s.AppendLogs(e.ctx, j.ID, 1, chunks(3001, 4000, "stale"))
		isConflict(t, err, "a large batch of a stale attempt")
		if cs := get(e.s.ListLogs(e.ctx, j.ID, 1, 3000, 5000))(t); len(cs) != 0 {
			t.Errorf("%d chunks of the stale attempt stored", len(cs))
		}
		if got := get(e.s.AppendLogs(e.ctx, j.ID, 2, chunks(1, 450, "retry")))(t); got != 450 {
			t.Errorf("the new attempt's batch: contiguous = %d, want 450", got)
		}
	}},
}
