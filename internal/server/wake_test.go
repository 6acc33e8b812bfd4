package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/testutil"
)

// noWake hides the store's Watcher: every wake-up is lost and only the fallback poll is left.
type noWake struct{ store.Store }

// TestWakeUps: a waiting claim and an event stream learn of a change by the store's wake-up
// (with a poll interval of an hour, nothing else could deliver it before the hang guard),
// and, when every wake-up is lost, by their fallback poll.
func TestWakeUps(t *testing.T) {
	for _, c := range []struct {
		name string
		lost bool
	}{{"woken", false}, {"lost wake-ups fall back to polling", true}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(cfg *Config) {
				cfg.PollInterval = time.Hour
				if c.lost {
					cfg.Store, cfg.PollInterval = noWake{cfg.Store}, 10*time.Millisecond
				}
			})
			ctx := testutil.HangGuard(t, 25*time.Second)
			tok := e.tokens["acme/agent"]
			if r := e.do("", "POST", agentproto.PathRegister, tok, agentproto.Register{AgentID: "ag", Backend: "sandbox"}); r.Status != 200 {
				t.Fatalf("register: %d %s", r.Status, r.Body)
			}
			b := e.submit("ci", nil)
			first := e.jobs("ci", b.Number)[0].ID

			// The claim waits (its first try finds nothing) until the release.
			claimed := make(chan response, 1)
			go func() {
				claimed <- e.do("", "POST", agentproto.PathClaim, tok, agentproto.Claim{AgentID: "ag", WaitSeconds: 20})
			}()
			time.Sleep(100 * time.Millisecond) // ordering only: the claim is (most likely) waiting
			if _, err := e.db.ReleaseJob(ctx, first, e.srv.now()); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-claimed:
				var j agentproto.Job
				if r.Status != http.StatusOK {
					t.Fatalf("claim: %d %s, want the released job", r.Status, r.Body)
				}
				r.decode(t, &j)
				if j.JobID != first {
					t.Fatalf("claimed %s, want %s", j.JobID, first)
				}
			case <-ctx.Done():
				t.Fatal("the claim was not answered")
			}

			st, err := e.db.GetBuildByNumber(ctx, mustPipeline(t, e, "ci"), b.Number)
			if err != nil {
				t.Fatal(err)
			}
			s := openStream(t, ctx, e.url+"/api/v0/organizations/acme/pipelines/ci/builds/1/events", e.tokens["acme/user"], "")
			evs := []string{`{"kind":"step_log","step_id":"s","stream":"stdout","line":"hi","ts":"2026-01-01T00:00:00.100Z"}`,
				`{"kind":"build_end","exit_code":0,"duration_ms":5}`}
			go func() {
				time.Sleep(100 * time.Millisecond) // the stream read the empty history and waits
				for _, ev := range evs {
					e.db.AppendEvents(ctx, st.ID, []byte(ev))
				}
			}()
			want := []frame{{ID: "1", Data: evs[0]}, {ID: "2", Data: evs[1]}}
			if d := cmp.Diff(want, s.rest()); d != "" {
				t.Errorf("event stream (-want +got):\n%s", d)
			}
		})
	}
}
