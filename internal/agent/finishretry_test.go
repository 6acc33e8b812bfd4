package agent_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/server/servertest"
	"github.com/hmci/hm/internal/store"
)

// TestFinishReplyLost: the replies of the agent's first two Finish calls are lost after the
// server answered them, each having claimed the agent's next step (Finish.Next) while another
// step was released too (a fan-out of two after a root). The agent retries each Finish as it
// sent it and gets the same next step back: no step is claimed twice or waits for a lapsed
// lease, and the one-slot agent never holds two steps (which would leave one to lapse). On
// both drivers.
func TestFinishReplyLost(t *testing.T) {
	for _, driver := range servertest.Drivers {
		t.Run(driver, func(t *testing.T) {
			// The wait lets a loaded machine's driver release both children inside the
			// root's Finish, so that its Next has a choice to get wrong.
			e := newEnv(t, envOpts{driver: driver, finishNextWait: 3 * time.Second})
			var mu sync.Mutex
			lost := map[string]bool{} // finish paths whose first reply was dropped
			a := e.startAgent(agentOpts{dropReply: func(r *http.Request) bool {
				p := r.URL.Path
				mu.Lock()
				defer mu.Unlock()
				if !strings.HasSuffix(p, "/finish") || lost[p] || len(lost) == 2 {
					return false
				}
				lost[p] = true
				return true
			}})
			b := e.submit(ir(step("root", "true"), `{"type":"wait"}`, step("left", "true"), step("right", "true"),
				`{"type":"wait"}`, step("last", "true")), nil)
			if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
				t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
			}
			if n := a.tr.dropped.Load(); n != 2 {
				t.Fatalf("%d Finish replies dropped, want 2", n)
			}
			js, err := e.db.ListJobs(e.ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range js {
				if j.Attempt != 1 || j.InfraRetries != 0 {
					t.Errorf("step %s ran as attempt %d after %d lapsed leases, want attempt 1: claimed once", j.StepKey, j.Attempt, j.InfraRetries)
				}
			}
			// The root by a Claim; each later step in the answer of its predecessor's
			// Finish, the two lost ones included (their retries).
			if claims, nexts := a.tr.claims.Load(), a.tr.nexts.Load(); claims != 1 || nexts != 3 {
				t.Errorf("%d claims and %d steps in a Finish's answer, want 1 and 3", claims, nexts)
			}
		})
	}
}
