package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
)

// handBackCases: a claim that names its Finish or its worker is answered again, not made a
// second time, when its answer was lost (store.Claims.ClaimJob).
var handBackCases = []testCase{
	{"FinishClaimsOnce", func(t *testing.T, e *env) { finishClaimsOnce(t, e, true) }},
	{"FinishClaimsOnceNoWorker", func(t *testing.T, e *env) { finishClaimsOnce(t, e, false) }},
	{"FinishClaimLapsed", func(t *testing.T, e *env) {
		// The repeat comes after the lease of the job claimed for the Finish lapsed and the
		// job was requeued: the Finish had its one job; it claims no other, and the job is
		// claimable as any.
		js := e.ready(t, "acme", 3)
		e.agent(t, "ag", "sandbox")
		done := e.finished(t, "ag")
		after := e.afterClaim("ag", done, 1)
		next := e.mustClaim(t, after, e.at(time.Second))
		reaped := get(e.s.ReapExpiredLeases(e.ctx, e.at(time.Minute), 3))(t)
		if len(reaped) != 1 || reaped[0].ID != next.ID || reaped[0].State != store.JobScheduled {
			t.Fatalf("reaped %+v, want %s requeued", reaped, next.ID)
		}
		if j, ok := e.try(t, after, e.at(61*time.Second)); ok {
			t.Fatalf("the Finish's repeat after its job was requeued claimed %s", j.ID)
		}
		e.leased(t, js, map[string]string{done.ID: ""})
		if j := e.mustClaim(t, e.plain("ag", ""), e.at(62*time.Second)); j.ID != next.ID || j.Attempt != 2 {
			t.Fatalf("a plain claim got %s attempt %d, want the requeued %s at attempt 2", j.ID, j.Attempt, next.ID)
		}
	}},
	{"FinishClaimCanceled", func(t *testing.T, e *env) {
		// A job canceled before the agent knew it is still its: the repeat answers it, and
		// the agent's start learns the stop.
		e.ready(t, "acme", 2)
		e.agent(t, "ag", "sandbox")
		done := e.finished(t, "ag")
		after := e.afterClaim("ag", done, 1)
		next := e.mustClaim(t, after, e.at(time.Second))
		get(e.s.CancelJob(e.ctx, next.ID, e.at(2*time.Second)))(t)
		again := e.mustClaim(t, after, e.at(3*time.Second))
		if again.ID != next.ID || again.State != store.JobCanceling {
			t.Fatalf("the repeat got %s in %s, want %s canceling", again.ID, again.State, next.ID)
		}
	}},
	{"WorkerClaimAgain", func(t *testing.T, e *env) {
		js := e.ready(t, "acme", 4)
		e.agent(t, "ag", "sandbox")
		e.agent(t, "other", "sandbox")
		w1 := e.mustClaim(t, e.plain("ag", "boot/0"), e.at(0))
		// The worker claims again: it holds nothing, so the answer was lost; same job.
		if j := e.mustClaim(t, e.plain("ag", "boot/0"), e.at(time.Second)); j.ID != w1.ID || j.Attempt != w1.Attempt {
			t.Fatalf("the worker's repeat got %s attempt %d, want %s attempt %d", j.ID, j.Attempt, w1.ID, w1.Attempt)
		}
		// Another worker of the agent, another agent with the same worker name, and a claim
		// naming no worker each get a job of their own.
		seen := map[string]bool{w1.ID: true}
		for _, c := range []store.Claim{e.plain("ag", "boot/1"), e.plain("other", "boot/0"), e.plain("ag", "")} {
			j := e.mustClaim(t, c, e.at(2*time.Second))
			if seen[j.ID] {
				t.Fatalf("claim %+v got %s, handed out already", c, j.ID)
			}
			seen[j.ID] = true
		}
		if len(seen) != len(js) {
			t.Fatalf("%d jobs handed out, want %d", len(seen), len(js))
		}
		// A Finish's claim for the worker (its Next) is a claim of the worker too.
		fin := e.plain("ag", "boot/0")
		fin.AfterJob, fin.AfterAttempt = "some-job", 1
		if j := e.mustClaim(t, fin, e.at(2*time.Second)); j.ID != w1.ID || j.Attempt != w1.Attempt {
			t.Fatalf("a Finish's claim for the worker got %s attempt %d, want %s attempt %d", j.ID, j.Attempt, w1.ID, w1.Attempt)
		}
		// Started, the job is acknowledged: the worker's next claim is a new one (none left).
		get(e.s.StartJob(e.ctx, w1.ID, w1.Attempt, e.at(3*time.Second)))(t)
		if j, ok := e.try(t, e.plain("ag", "boot/0"), e.at(4*time.Second)); ok {
			t.Fatalf("the worker's claim after its start got %s (state %s)", j.ID, j.State)
		}
	}},
	{"FinishClaimRace", func(t *testing.T, e *env) {
		// Repeats of one Finish answered at once (replicas): one job claimed in all, and
		// every answer is that job, to the agent it is leased to. First by four agents
		// naming the same Finish (their claims do not queue on one agent row, so on
		// PostgreSQL they race to the unique index), then by its own agent only: every
		// repeat gets the job.
		js := e.ready(t, "acme", 8)
		for i := range 4 {
			e.agent(t, fmt.Sprintf("ag%d", i), "sandbox")
		}
		done := e.finished(t, "ag0")
		for _, r := range []struct {
			attempt int
			agents  int
		}{{1, 4}, {2, 1}} {
			var mu sync.Mutex
			var answers []store.Job
			claimants := map[string]string{} // job id → the claimant it answered
			parallel(t, 12, func(i int) {
				agent := fmt.Sprintf("ag%d", i%r.agents)
				j, ok, err := e.s.ClaimJob(e.ctx, e.at0(e.afterClaim(agent, done, r.attempt)))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					answers = append(answers, j)
					if j.AgentID != agent {
						t.Errorf("%s's claim answered %s, leased to %s", agent, j.ID, j.AgentID)
					}
					claimants[j.ID] = agent
					mu.Unlock()
				}
			})
			var leased []string
			for _, j := range get(e.s.ListJobs(e.ctx, js[0].BuildID))(t) {
				if j.State == store.JobAssigned {
					leased = append(leased, j.ID)
				}
			}
			if len(leased) != r.attempt {
				t.Fatalf("round %d: %d jobs leased, want %d (one per Finish)", r.attempt, len(leased), r.attempt)
			}
			if len(claimants) != 1 || len(answers) == 0 || r.agents == 1 && len(answers) != 12 {
				t.Fatalf("round %d: %d answers of jobs %v, want every answer the one job (all 12 by one agent)", r.attempt, len(answers), claimants)
			}
		}
	}},
}

// finishClaimsOnce: a Finish's claim, repeated after its answer was lost, gets the same job
// until the agent starts it, and no other; the claim names a worker or (an agent that names
// none) only the Finish.
func finishClaimsOnce(t *testing.T, e *env, worker bool) {
	js := e.ready(t, "acme", 4)
	e.agent(t, "ag", "sandbox")
	done := e.finished(t, "ag")
	after := e.afterClaim("ag", done, 1)
	if !worker {
		after.Worker = ""
	}
	next := e.mustClaim(t, after, e.at(time.Second))
	if next.Attempt != 1 || next.AgentID != "ag" || next.State != store.JobAssigned {
		t.Fatalf("the Finish's claim: %+v", next)
	}
	// Its reply was lost: the repeat, later, gets the same job, same attempt, its lease
	// renewed from the repeat's time; nothing else is claimed.
	after.Now = e.at(20 * time.Second)
	again := e.mustClaim(t, after, after.Now)
	if again.ID != next.ID || again.Attempt != next.Attempt {
		t.Fatalf("the repeat got %s attempt %d, want %s attempt %d", again.ID, again.Attempt, next.ID, next.Attempt)
	}
	if want := after.Now.Add(after.LeaseTTL); !again.LeaseExpires.Equal(want) {
		t.Errorf("the repeat left the lease at %v, want %v", again.LeaseExpires, want)
	}
	e.leased(t, js, map[string]string{done.ID: "", next.ID: "ag"})
	if worker {
		// A plain claim of the worker the Finish claimed for: it holds nothing, so it
		// lost the Finish's answer, and gets that job.
		if j := e.mustClaim(t, e.plain("ag", after.Worker), e.at(20*time.Second)); j.ID != next.ID || j.Attempt != next.Attempt {
			t.Fatalf("the worker's plain claim got %s attempt %d, want %s attempt %d", j.ID, j.Attempt, next.ID, next.Attempt)
		}
		e.leased(t, js, map[string]string{done.ID: "", next.ID: "ag"})
	}
	// Once the agent started it, the answer was not lost: a repeat claims nothing.
	get(e.s.StartJob(e.ctx, next.ID, next.Attempt, e.at(21*time.Second)))(t)
	if j, ok := e.try(t, after, e.at(22*time.Second)); ok {
		t.Fatalf("a repeat after the start claimed %s", j.ID)
	}
	// Another Finish (another attempt of the same job) claims anew.
	other := e.afterClaim("ag", done, 2)
	if j := e.mustClaim(t, other, e.at(23*time.Second)); j.ID == next.ID {
		t.Fatalf("another Finish got %s again", j.ID)
	}
}

// finished claims, starts and finishes a job (passed) for agent: the Finish that claims next.
func (e *env) finished(t *testing.T, agent string) store.Job {
	t.Helper()
	j := e.mustClaim(t, e.plain(agent, ""), e.t0)
	get(e.s.StartJob(e.ctx, j.ID, j.Attempt, e.t0))(t)
	return get(e.s.FinishJob(e.ctx, j.ID, j.Attempt, store.Finish{ExitCode: 0, Now: e.t0}))(t)
}

// plain is a claim by agent's worker ("" for none) in the org e.org made last.
func (e *env) plain(agent, worker string) store.Claim {
	return store.Claim{AgentID: agent, OrgID: e.lastOrg, LeaseTTL: 30 * time.Second, Worker: worker}
}

// afterClaim is the claim of the Finish of attempt of job done, for agent's worker
// "w<attempt>".
func (e *env) afterClaim(agent string, done store.Job, attempt int) store.Claim {
	c := e.plain(agent, fmt.Sprintf("w%d", attempt))
	c.AfterJob, c.AfterAttempt = done.ID, attempt
	return c
}

// at0 is c at the suite's t0.
func (e *env) at0(c store.Claim) store.Claim { c.Now = e.t0; return c }

// try runs c at now.
func (e *env) try(t *testing.T, c store.Claim, now time.Time) (store.Job, bool) {
	t.Helper()
	c.Now = now
	j, ok, err := e.s.ClaimJob(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return j, ok
}

// mustClaim runs c at now and fails the test without a job.
func (e *env) mustClaim(t *testing.T, c store.Claim, now time.Time) store.Job {
	t.Helper()
	j, ok := e.try(t, c, now)
	if !ok {
		t.Fatalf("claim %+v at %v: no job", c, now)
	}
	return j
}

// leased checks which of js are leased and to whom (want: id → agent, "" for not leased);
// every job not in want must be scheduled.
func (e *env) leased(t *testing.T, js []store.Job, want map[string]string) {
	t.Helper()
	for _, j := range js {
		cur := get(e.s.GetJob(e.ctx, j.ID))(t)
		agent, named := want[j.ID]
		switch {
		case !named && cur.State != store.JobScheduled:
			t.Errorf("job %s is %s (agent %q), want scheduled", j.StepKey, cur.State, cur.AgentID)
		case named && agent != "" && (cur.State != store.JobAssigned || cur.AgentID != agent):
			t.Errorf("job %s is %s by %q, want assigned to %q", j.StepKey, cur.State, cur.AgentID, agent)
		}
	}
}
