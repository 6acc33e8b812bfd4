package driver

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// logBuf is a log sink safe for the manager's goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// until polls cond (a hang guard bounds it, not a timing assertion).
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReaperRunsOnTheLeaderOnly: two managers on one store (two replicas) reap lapsed job
// leases on one of them only; when the leader stops, it releases its lease and the other
// takes the duty over at its next round.
func TestReaperRunsOnTheLeaderOnly(t *testing.T) {
	ctx := hang(t)
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o, err := st.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	if err != nil {
		t.Fatal(err)
	}
	b, js, err := st.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}",
		Jobs: []store.NewJob{{StepKey: "a", Command: "true"}}, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// The build is driven elsewhere: the managers' scans leave it alone.
	if _, err := st.AcquireBuildLease(ctx, b.ID, "elsewhere", time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertAgent(ctx, store.Agent{ID: "ag", Name: "ag", Backend: "host", OrgID: o.ID}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReleaseJob(ctx, js[0].ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	// lapse claims the job with a lease that is over at once: the reaper's work.
	lapse := func() {
		t.Helper()
		if _, ok, err := st.ClaimJob(ctx, store.Claim{AgentID: "ag", OrgID: o.ID, Now: time.Now(), LeaseTTL: time.Nanosecond}); err != nil || !ok {
			t.Fatalf("claim: %v %v", ok, err)
		}
	}
	requeued := func() bool {
		j, err := st.GetJob(ctx, js[0].ID)
		return err == nil && j.State == store.JobScheduled
	}

	start := func(owner string) (*logBuf, context.CancelFunc, chan struct{}) {
		logs := &logBuf{}
		m := &Manager{Driver: Config{Store: st, Owner: owner}, Reap: 10 * time.Millisecond, LeaderTTL: time.Minute,
			Scan: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))}
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); m.Run(mctx) }()
		return logs, cancel, done
	}
	l1, stop1, done1 := start("r1")
	defer func() { stop1(); <-done1 }()
	until(t, "r1 leads", func() bool { return l1.has("leading the reaper") })
	l2, stop2, done2 := start("r2")
	defer func() { stop2(); <-done2 }()

	lapse()
	until(t, "the lapsed lease reaped", requeued)
	until(t, "r1 logs the reap", func() bool { return l1.has("lease lapsed") })
	// r2 has run rounds since (each round is one lease attempt): it must not lead while r1's
	// lease is live, whose TTL is a minute.
	time.Sleep(100 * time.Millisecond)
	if l2.has("leading the reaper") || l2.has("lease lapsed") {
		t.Fatal("a second replica reaped while the first held the leader lease")
	}

	stop1()
	<-done1
	until(t, "r2 takes over once r1 released the lease", func() bool { return l2.has("leading the reaper") })
	lapse()
	until(t, "the second lapsed lease reaped by r2", requeued)
	until(t, "r2 logs the reap", func() bool { return l2.has("lease lapsed") })
}

// TestReaperDropsStaleRemovals: the leader drops the snapshot removals of an agent not seen
// within the retention and keeps a live agent's.
func TestReaperDropsStaleRemovals(t *testing.T) {
	ctx := hang(t)
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	for id, seen := range map[string]time.Time{"gone": now.Add(-2 * time.Hour), "live": now} {
		if _, err := st.UpsertAgent(ctx, store.Agent{ID: id, Name: id, Backend: "host"}, seen); err != nil {
			t.Fatal(err)
		}
		if err := st.QueueSnapshotRemoval(ctx, id, "e-"+id, seen); err != nil {
			t.Fatal(err)
		}
	}
	logs := &logBuf{}
	m := &Manager{Driver: Config{Store: st, Owner: "r1"}, Reap: 10 * time.Millisecond, Scan: time.Hour,
		RemovalRetention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(mctx) }()
	defer func() { cancel(); <-done }()
	until(t, "gone's removal dropped", func() bool {
		l, err := st.ListSnapshotRemovals(ctx, "gone", 10)
		return err == nil && len(l) == 0
	})
	if l, err := st.ListSnapshotRemovals(ctx, "live", 10); err != nil || len(l) != 1 {
		t.Errorf("live's removals = %v, %v; want its one", l, err)
	}
	until(t, "the drop logged", func() bool { return logs.has("snapshot removals of agents gone dropped") })
}
