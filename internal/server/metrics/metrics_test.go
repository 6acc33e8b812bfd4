package metrics_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hmci/hm/internal/server/metrics"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// TestInstrumentedStore drives a job through the instrumented store (a real SQLite one) and
// reads the registry: each transition the metrics name is counted once, the queue gauges
// read the store, and the exposition served at /metrics has them.
func TestInstrumentedStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	raw, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	m := metrics.New(raw)
	st := m.Store(raw)
	if metrics.Unwrap(st) != store.Store(raw) {
		t.Fatal("Unwrap does not give the driver back")
	}
	if _, ok := st.(store.Watcher); !ok {
		t.Fatal("the wrapper hides the driver's wake-ups")
	}

	o, _ := st.CreateOrg(ctx, "acme", "Acme")
	p, _ := st.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	t0 := time.Now()
	_, js, err := st.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}", Now: t0,
		Jobs: []store.NewJob{{StepKey: "a", Command: "true"}, {StepKey: "b", Command: "true"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertAgent(ctx, store.Agent{ID: "ag", Name: "ag", Backend: "host", OrgID: o.ID}, t0); err != nil {
		t.Fatal(err)
	}
	for _, j := range js {
		if _, err := st.ReleaseJob(ctx, j.ID, t0); err != nil {
			t.Fatal(err)
		}
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	if s := scrape(); !strings.Contains(s, "hm_queue_depth 2\n") || !strings.Contains(s, `hm_jobs{state="scheduled"} 2`) {
		t.Fatalf("two released jobs, exposition:\n%s", grep(s, "hm_queue_depth", "hm_jobs"))
	}

	claim := func(now time.Time, ttl time.Duration) store.Job {
		t.Helper()
		j, ok, err := st.ClaimJob(ctx, store.Claim{AgentID: "ag", OrgID: o.ID, Now: now, LeaseTTL: ttl})
		if err != nil || !ok {
			t.Fatalf("claim: %v %v", ok, err)
		}
		return j
	}
	a := claim(t0.Add(2*time.Second), time.Minute)
	if _, err := st.StartJob(ctx, a.ID, a.Attempt, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.FinishJob(ctx, a.ID, a.Attempt, store.Finish{ExitCode: 0, Now: t0.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	claim(t0.Add(3*time.Second), time.Millisecond) // lapses at once
	if _, err := st.ReapExpiredLeases(ctx, t0.Add(4*time.Second), 2); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := st.AcquireLeader(ctx, "reaper", "me", t0, time.Minute); err != nil || !ok {
		t.Fatalf("leader: %v %v", ok, err)
	}

	checks := []struct {
		name      string
		got, want float64
	}{
		{"claims", testutil.ToFloat64(m.Claims()), 2},
		{"lease expiries", testutil.ToFloat64(m.LeaseExpiries()), 1},
		{"leader", testutil.ToFloat64(m.Leader()), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	s := scrape()
	for _, want := range []string{
		"hm_claim_wait_seconds_count 2\n",
		"hm_claim_wait_seconds_sum 5\n", // 2 s and 3 s from release to claim
		`hm_step_seconds_count{state="passed"} 1`,
		`hm_step_seconds_sum{state="passed"} 3`,
		`hm_store_seconds_count{op="ClaimJob"} 2`,
		`hm_store_seconds_count{op="ReleaseJob"} 2`,
		"hm_queue_depth 1\n", // b, requeued
		`hm_jobs{state="running"} 0`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("exposition lacks %q:\n%s", want, grep(s, "hm_"))
		}
	}
}

func grep(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
