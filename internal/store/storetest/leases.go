package storetest

import (
	"testing"
	"time"
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
