package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/server/servertest"
	"github.com/hmci/hm/internal/store"
)

// finishNextEnv is a server (and a second replica on the same store) with a registered agent
// of acme and a build of five root steps, four of them released: what a Finish's Next or a
// Claim could take.
type finishNextEnv struct {
	*env
	replica *env // a second server on the same store: shares nothing else
	tok     string
	steps   map[string]string // step key → job id
}

const fnAgent = "ag-acme"

func newFinishNextEnv(t *testing.T, driver string) *finishNextEnv {
	// A long wait: a repeat that wrongly claims anew gets another released job at once,
	// and one that wrongly waits would still return (within the request's timeout).
	e := newEnvOn(t, driver, func(c *Config) { c.FinishNextWait = 500 * time.Millisecond })
	srv2, err := New(e.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs2 := httptest.NewServer(srv2)
	t.Cleanup(func() { srv2.Drain(); hs2.Close() })
	replica := *e
	replica.srv, replica.url = srv2, hs2.URL
	f := &finishNextEnv{env: e, replica: &replica, tok: e.tokens["acme/agent"], steps: map[string]string{}}
	if r := e.do("", "POST", agentproto.PathRegister, f.tok, agentproto.Register{AgentID: fnAgent, Backend: "sandbox"}); r.Status != 200 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	var steps []string
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		steps = append(steps, `{"type":"command","key":"`+k+`","cmd":"true"}`)
	}
	b := e.submit("ci", map[string]any{"pipeline_ir": `{"version":"0","steps":[` + strings.Join(steps, ",") + `]}`})
	for _, j := range e.jobs("ci", b.Number) {
		f.steps[*j.StepKey] = j.ID
	}
	for _, k := range []string{"a", "b", "c", "d"} { // e stays pending until a test releases it
		if _, err := e.db.ReleaseJob(t.Context(), f.steps[k], e.srv.now()); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// claim is a Claim of the agent's worker; nil for 204.
func (f *finishNextEnv) claim(at *env, worker string) *agentproto.Job {
	f.t.Helper()
	r := at.do("", "POST", agentproto.PathClaim, f.tok, agentproto.Claim{AgentID: fnAgent, Slots: 1, WaitSeconds: 1, Worker: worker})
	switch r.Status {
	case http.StatusNoContent:
		return nil
	case http.StatusOK:
		var j agentproto.Job
		r.decode(f.t, &j)
		return &j
	}
	f.t.Fatalf("claim: %d %s", r.Status, r.Body)
	return nil
}

func (f *finishNextEnv) start(j *agentproto.Job) {
	f.t.Helper()
	if r := f.do("", "POST", jobPath(agentproto.PathStart, j.JobID), f.tok, agentproto.Fence{Attempt: j.Attempt}); r.Status != 200 {
		f.t.Fatalf("start %s: %d %s", j.JobID, r.Status, r.Body)
	}
}

// finish sends j's Finish (passed) with Next for worker at a server, and answers its Next.
func (f *finishNextEnv) finish(at *env, j *agentproto.Job, worker string) *agentproto.Job {
	f.t.Helper()
	r := at.do("", "POST", jobPath(agentproto.PathFinish, j.JobID), f.tok,
		agentproto.Finish{Attempt: j.Attempt, Next: &agentproto.Claim{AgentID: fnAgent, Slots: 1, Worker: worker}})
	if r.Status != 200 {
		f.t.Fatalf("finish %s: %d %s", j.JobID, r.Status, r.Body)
	}
	var st agentproto.State
	r.decode(f.t, &st)
	if st.State != string(store.JobPassed) || st.Attempt != j.Attempt {
		f.t.Errorf("finish %s answered %s attempt %d, want passed attempt %d", j.JobID, st.State, st.Attempt, j.Attempt)
	}
	return st.Next
}

// leased lists the jobs of the build leased to an agent, by id: their attempt.
func (f *finishNextEnv) leased() map[string]int {
	f.t.Helper()
	out := map[string]int{}
	for _, id := range f.steps {
		j, err := f.db.GetJob(f.t.Context(), id)
		if err != nil {
			f.t.Fatal(err)
		}
		if j.State == store.JobAssigned || j.State == store.JobRunning {
			out[j.ID] = j.Attempt
		}
	}
	return out
}

func same(a, b *agentproto.Job) bool {
	return a != nil && b != nil && a.JobID == b.JobID && a.Attempt == b.Attempt
}

// TestFinishNextRepeated: the reply of a Finish whose Next claimed a job is lost, and the agent
// sends the Finish again, to the same server or another replica: the repeat answers the job
// the first one claimed (same attempt), and claims no second one although other steps are
// released. So does the worker's plain Claim. Once the agent started that job, a repeat
// answers no Next and claims nothing. On both drivers.
func TestFinishNextRepeated(t *testing.T) {
	for _, driver := range servertest.Drivers {
		t.Run(driver, func(t *testing.T) {
			f := newFinishNextEnv(t, driver)
			const w = "boot-1/0"
			first := f.claim(f.env, w)
			if first == nil {
				t.Fatal("no job for the first claim")
			}
			f.start(first)
			next := f.finish(f.env, first, w)
			if next == nil {
				t.Fatal("the Finish's Next claimed nothing, with three steps released")
			}
			// The reply is lost. The repeats, here and on the replica, answer the same job.
			for i, at := range []*env{f.env, f.replica, f.env} {
				if again := f.finish(at, first, w); !same(again, next) {
					t.Fatalf("repeat %d: Next = %+v, want job %s attempt %d", i, again, next.JobID, next.Attempt)
				}
			}
			// The worker, had it given up the Finish, claims: it holds nothing, so it gets
			// the same job too.
			if again := f.claim(f.replica, w); !same(again, next) {
				t.Fatalf("the worker's Claim = %+v, want job %s attempt %d", again, next.JobID, next.Attempt)
			}
			want := map[string]int{next.JobID: next.Attempt}
			if got := f.leased(); len(got) != 1 || got[next.JobID] != next.Attempt {
				t.Fatalf("leased jobs %v, want only %v: one job claimed for the Finish", got, want)
			}
			// Another worker of the agent gets a job of its own.
			other := f.claim(f.env, "boot-1/1")
			if other == nil || other.JobID == next.JobID {
				t.Fatalf("another worker's claim = %+v, want a job other than %s", other, next.JobID)
			}
			// Started, the job was answered: a late repeat of the Finish claims nothing,
			// though a step is released for it to take.
			f.start(next)
			if _, err := f.db.ReleaseJob(t.Context(), f.steps["e"], f.srv.now()); err != nil {
				t.Fatal(err)
			}
			if again := f.finish(f.replica, first, w); again != nil {
				t.Fatalf("a repeat after the start answered Next %+v", again)
			}
			if got := f.leased(); len(got) != 2 {
				t.Fatalf("leased jobs %v, want the two claimed ones", got)
			}
			// The next job's own Finish claims anew.
			if n := f.finish(f.env, next, w); n == nil || n.JobID == next.JobID || n.JobID == other.JobID {
				t.Fatalf("the next job's Finish answered Next %+v", n)
			}
		})
	}
}

// TestClaimWorkerBounded: a worker name beyond agentproto.MaxWorker is refused in a Claim
// (400) and leaves a Finish's Next empty, the outcome recorded all the same.
func TestClaimWorkerBounded(t *testing.T) {
	f := newFinishNextEnv(t, "sqlite")
	long := strings.Repeat("w", agentproto.MaxWorker+1)
	r := f.do("", "POST", agentproto.PathClaim, f.tok, agentproto.Claim{AgentID: fnAgent, WaitSeconds: 1, Worker: long})
	if r.Status != http.StatusBadRequest || r.errorCode(t) != "validation_failed" {
		t.Fatalf("claim with a %d-byte worker: %d %s", len(long), r.Status, r.Body)
	}
	j := f.claim(f.env, strings.Repeat("w", agentproto.MaxWorker))
	if j == nil {
		t.Fatal("no job for a claim with a worker of the longest length")
	}
	f.start(j)
	if next := f.finish(f.env, j, long); next != nil {
		t.Fatalf("a Finish whose Next names a %d-byte worker claimed %+v", len(long), next)
	}
	if got := f.leased(); len(got) != 0 {
		t.Fatalf("leased jobs %v after the finish, want none", got)
	}
}
