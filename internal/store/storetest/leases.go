package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

var leaseCases = []testCase{
	{"build lease: take, renew, refuse, lapse, fence", func(t *testing.T, e *env) {
		o, p := e.org(t, "lease")
		b, _ := e.build(t, o, p)
		ttl := 10 * time.Second
		e1 := get(e.s.AcquireBuildLease(e.ctx, b.ID, "r1", e.at(0), ttl))(t)
		if e1 < 1 {
			t.Fatalf("first epoch %d, want >= 1", e1)
		}
		if got := get(e.s.AcquireBuildLease(e.ctx, b.ID, "r1", e.at(5*time.Second), ttl))(t); got != e1 {
			t.Fatalf("renewal changed the epoch: %d → %d", e1, got)
		}
		_, err := e.s.AcquireBuildLease(e.ctx, b.ID, "r2", e.at(14*time.Second), ttl)
		isConflict(t, err, "take a live lease of another owner")
		get(e.s.AppendEventsFenced(e.ctx, b.ID, e1, []byte(`{"kind":"a"}`)))(t)
		e2 := get(e.s.AcquireBuildLease(e.ctx, b.ID, "r2", e.at(16*time.Second), ttl))(t)
		if e2 <= e1 {
			t.Fatalf("a new owner kept epoch %d (was %d)", e2, e1)
		}
		_, err = e.s.AppendEventsFenced(e.ctx, b.ID, e1, []byte(`{"kind":"b"}`))
		isConflict(t, err, "append of the old owner")
		_, err = e.s.AcquireBuildLease(e.ctx, b.ID, "r1", e.at(17*time.Second), ttl)
		isConflict(t, err, "the old owner taking back a live lease")
		get(e.s.AppendEventsFenced(e.ctx, b.ID, e2, []byte(`{"kind":"c"}`)))(t)
		evs := get(e.s.ListEvents(e.ctx, b.ID, 0, 10))(t)
		if len(evs) != 2 || string(evs[0].Payload) != `{"kind":"a"}` || string(evs[1].Payload) != `{"kind":"c"}` {
			t.Fatalf("events %v", evs)
		}
		// Released: anyone takes it at once, as a change of hands.
		if err := e.s.ReleaseBuildLease(e.ctx, b.ID, "r2", e2); err != nil {
			t.Fatal(err)
		}
		if e3 := get(e.s.AcquireBuildLease(e.ctx, b.ID, "r1", e.at(18*time.Second), ttl))(t); e3 <= e2 {
			t.Fatalf("take after release kept epoch %d", e3)
		}
		_, err = e.s.AcquireBuildLease(e.ctx, "no-such-build", "r1", e.at(0), ttl)
		isNotFound(t, err, "lease of a missing build")
	}},
}

func init() {
	leaseCases = append(leaseCases, testCase{"leader lease: one leader, renew, lapse, release, concurrent", func(t *testing.T, e *env) {
		ttl := 5 * time.Second
		type try struct {
			owner string
			at    time.Duration
			ok    bool
			epoch int64 // when ok
		}
		steps := []try{
			{"r1", 0, true, 1},                // free: taken
			{"r2", 1 * time.Second, false, 0}, // live, another's
			{"r1", 4 * time.Second, true, 1},  // renewal: same epoch, expiry now 9 s
			{"r2", 8 * time.Second, false, 0}, // still live after the renewal
			{"r2", 10 * time.Second, true, 2}, // lapsed: changes hands
			{"r1", 11 * time.Second, false, 0},
		}
		for _, s := range steps {
			epoch, ok, err := e.s.AcquireLeader(e.ctx, "reaper", s.owner, e.at(s.at), ttl)
			if err != nil {
				t.Fatal(err)
			}
			if ok != s.ok || (ok && epoch != s.epoch) {
				t.Fatalf("%s at %s: ok %v epoch %d, want ok %v epoch %d", s.owner, s.at, ok, epoch, s.ok, s.epoch)
			}
		}
		// Another name is another lease.
		if _, ok := get2(e.s.AcquireLeader(e.ctx, "other", "r1", e.at(11*time.Second), ttl))(t); !ok {
			t.Fatal("a lease of another name was not free")
		}
		// A release of a stale epoch or by another owner changes nothing; the holder's frees it.
		for _, r := range []struct {
			owner string
			epoch int64
		}{{"r1", 2}, {"r2", 1}} {
			if err := e.s.ReleaseLeader(e.ctx, "reaper", r.owner, r.epoch); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := get2(e.s.AcquireLeader(e.ctx, "reaper", "r1", e.at(12*time.Second), ttl))(t); ok {
			t.Fatal("a release by another owner or epoch freed the lease")
		}
		if err := e.s.ReleaseLeader(e.ctx, "reaper", "r2", 2); err != nil {
			t.Fatal(err)
		}
		if epoch, ok := get2(e.s.AcquireLeader(e.ctx, "reaper", "r1", e.at(12*time.Second), ttl))(t); !ok || epoch != 3 {
			t.Fatalf("after the release: ok %v epoch %d, want the lease at epoch 3", ok, epoch)
		}

		// Many replicas racing for a lapsed lease at once: exactly one wins.
		const n = 8
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				owner := fmt.Sprintf("racer%d", i)
				_, ok, err := e.s.AcquireLeader(e.ctx, "reaper", owner, e.at(time.Minute), ttl)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					winners = append(winners, owner)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("winners of one lapsed lease: %v, want exactly one", winners)
		}
	}})
}

// get2 is get for a call with two values.
func get2[A, B any](a A, b B, err error) func(t *testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

func init() {
	miscCases = append(miscCases, testCase{"JobCounts counts live jobs by state", func(t *testing.T, e *env) {
		o, p := e.org(t, "counts2")
		e.build(t, o, p, store.NewJob{StepKey: "p", Command: "true"}) // one pending
		js := e.ready(t, "counts", 3)                                 // three scheduled, claims of this org
		e.agent(t, "a1", "sandbox")
		c, ok := e.claim(t, "a1", e.t0)
		if !ok {
			t.Fatal("no claim")
		}
		get(e.s.StartJob(e.ctx, c.ID, c.Attempt, e.t0))(t)
		get(e.s.SkipJob(e.ctx, js[2].ID, "canceled", e.t0))(t) // terminal: not counted
		want := map[store.JobState]int64{store.JobPending: 1, store.JobScheduled: 1, store.JobRunning: 1}
		if diff := cmp.Diff(want, get(e.s.JobCounts(e.ctx))(t)); diff != "" {
			t.Fatalf("JobCounts (-want +got):\n%s", diff)
		}
	}})
}
