package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/postgres/pgtest"
)

// wakeGuard bounds a wait for a wake-up that must come (a hang guard: NOTIFY is delivered in
// milliseconds), and quiet is how long a wake-up that must not come is waited for.
const (
	wakeGuard = 10 * time.Second
	quiet     = 300 * time.Millisecond
)

func TestPayloadsRoundTrip(t *testing.T) {
	topics := map[store.Topic]struct{}{}
	for i := range 500 {
		topics[store.JobChanged(fmt.Sprintf("%08d-0000-0000-0000-000000000000", i))] = struct{}{}
	}
	topics[store.DriversWanted()] = struct{}{}
	ps := payloads("me", topics)
	if len(ps) < 2 {
		t.Fatalf("%d topics in %d payloads: want them split", len(topics), len(ps))
	}
	var got []store.Topic
	for _, p := range ps {
		if len(p) > maxPayload {
			t.Fatalf("payload of %d bytes, over %d", len(p), maxPayload)
		}
		if _, ok := parsePayload("me", p); ok {
			t.Fatal("a replica's own payload was not dropped")
		}
		ts, ok := parsePayload("other", p)
		if !ok {
			t.Fatalf("payload does not parse: %q", p[:40])
		}
		got = append(got, ts...)
	}
	var want []store.Topic
	for tp := range topics {
		want = append(want, tp)
	}
	less := func(a, b store.Topic) int { return strings.Compare(string(a.Kind)+a.ID, string(b.Kind)+b.ID) }
	slices.SortFunc(got, less)
	slices.SortFunc(want, less)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("topics (-want +got):\n%s", diff)
	}
}

func openDB(t *testing.T, url string) *DB {
	t.Helper()
	s, err := Open(context.Background(), url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	select {
	case <-s.br.listening:
	case <-time.After(wakeGuard):
		t.Fatal("the LISTEN connection did not come up")
	}
	return s
}

func woken(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(wakeGuard):
		t.Fatalf("%s: no wake-up on the other replica", what)
	}
}

// TestWakeUpsCrossReplicas: two DBs on one schema stand for two replicas. The low-rate
// transitions one makes wake the other's waiters through LISTEN/NOTIFY; log chunks and events
// send no NOTIFY at all (counted on a connection listening on the channel).
func TestWakeUpsCrossReplicas(t *testing.T) {
	url := pgtest.URL(t)
	a, b := openDB(t, url), openDB(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if a.br.name != b.br.name {
		t.Fatalf("one schema, two channels: %s, %s", a.br.name, b.br.name)
	}
	// Another schema is another deployment: another channel.
	if c := openDB(t, pgtest.URL(t)); c.br.name == a.br.name {
		t.Fatal("two schemas share a channel")
	}

	o, err := a.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	if err != nil {
		t.Fatal(err)
	}
	bl, js, err := a.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: `{"steps":[]}`,
		Jobs: []store.NewJob{{StepKey: "a", Command: "true"}}, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	j := js[0]
	if _, err := a.UpsertAgent(ctx, store.Agent{ID: "ag", Name: "ag", Backend: "host", OrgID: o.ID}, time.Now()); err != nil {
		t.Fatal(err)
	}

	released, stop1 := b.Watch(store.JobsReleased(o.ID))
	defer stop1()
	job, stop2 := b.Watch(store.JobChanged(j.ID))
	defer stop2()
	build, stop3 := b.Watch(store.BuildChanged(bl.ID))
	defer stop3()
	drivers, stop4 := b.Watch(store.DriversWanted())
	defer stop4()

	if _, err := a.ReleaseJob(ctx, j.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	woken(t, released, "release: jobs released of the org")
	woken(t, job, "release: the job")
	if _, ok, err := a.ClaimJob(ctx, store.Claim{AgentID: "ag", OrgID: o.ID, Now: time.Now(), LeaseTTL: time.Minute}); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	woken(t, job, "claim")
	if _, err := a.StartJob(ctx, j.ID, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	woken(t, job, "start")

	// High rate: nothing on the channel, however many batches.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+a.br.channel); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := a.AppendLogs(ctx, j.ID, 1, []store.LogChunk{{Seq: int64(i + 1), Content: "x\n"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AppendEvents(ctx, bl.ID, []byte(`{"kind":"step_log"}`)); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, quiet)
	n, err := conn.WaitForNotification(wctx)
	wcancel()
	if err == nil {
		t.Fatalf("log chunks and events sent a NOTIFY: %q", n.Payload)
	}

	if _, err := a.FinishJob(ctx, j.ID, 1, store.Finish{ExitCode: 0, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	woken(t, job, "finish")
	if _, err := a.TransitionBuild(ctx, bl.ID, []store.BuildState{store.BuildScheduled}, store.BuildRunning, store.BuildUpdate{}); err != nil {
		t.Fatal(err)
	}
	woken(t, build, "build transition")
	epoch, err := a.AcquireBuildLease(ctx, bl.ID, "replica-a", time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ReleaseBuildLease(ctx, bl.ID, "replica-a", epoch); err != nil {
		t.Fatal(err)
	}
	woken(t, drivers, "a running build's driver lease released")
	if _, err := a.CancelBuild(ctx, bl.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	woken(t, build, "cancel")

	// The transitions above were coalesced into few notifications, none of them a log's.
	seen := 0
	for {
		wctx, wcancel := context.WithTimeout(ctx, quiet)
		n, err := conn.WaitForNotification(wctx)
		wcancel()
		if err != nil {
			break
		}
		seen++
		if strings.Contains(n.Payload, string(store.TopicJobLogs)) || strings.Contains(n.Payload, string(store.TopicBuildEvents)) {
			t.Fatalf("a high-rate topic went through NOTIFY: %q", n.Payload)
		}
	}
	if seen == 0 || seen > 5 {
		t.Fatalf("%d notifications for at most 5 transitions since LISTEN (start, finish, build, lease, cancel): want 1 to 5", seen)
	}
}
