package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
)

var jobCases = []testCase{
	{"JobLifecycle", func(t *testing.T, e *env) {
		js := e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, ok := e.claim(t, "a1", e.at(time.Second))
		if !ok || j.ID != js[0].ID || j.State != store.JobAssigned || j.Attempt != 1 || j.AgentID != "a1" ||
			!j.LeaseExpires.Equal(e.at(31*time.Second)) {
			t.Fatalf("claimed %+v (ok %v)", j, ok)
		}
		if _, ok := e.claim(t, "a1", e.at(time.Second)); ok {
			t.Fatal("a second claim got the job again")
		}
		j = get(e.s.StartJob(e.ctx, j.ID, 1, e.at(2*time.Second)))(t)
		if j.State != store.JobRunning || !j.StartedAt.Equal(e.at(2*time.Second)) {
			t.Errorf("started %+v", j)
		}
		j = get(e.s.StartJob(e.ctx, j.ID, 1, e.at(3*time.Second)))(t) // a retried request
		if !j.StartedAt.Equal(e.at(2 * time.Second)) {
			t.Errorf("a repeated start moved started_at to %v", j.StartedAt)
		}
		j = get(e.s.Heartbeat(e.ctx, j.ID, 1, e.at(10*time.Second), 30*time.Second))(t)
		if !j.LeaseExpires.Equal(e.at(40*time.Second)) || j.State.Stopping() {
			t.Errorf("heartbeat: %+v", j)
		}
		f := store.Finish{ExitCode: 0, Snapshot: "snap-1", Now: e.at(20 * time.Second)}
		j = get(e.s.FinishJob(e.ctx, j.ID, 1, f))(t)
		if j.State != store.JobPassed || j.ExitCode == nil || *j.ExitCode != 0 || j.Snapshot != "snap-1" ||
			j.SnapshotAgent != "a1" || !j.FinishedAt.Equal(e.at(20*time.Second)) {
			t.Errorf("finished %+v", j)
		}
		again := get(e.s.FinishJob(e.ctx, j.ID, 1, f))(t)
		if again.State != store.JobPassed || !again.FinishedAt.Equal(j.FinishedAt) {
			t.Errorf("a repeated finish changed the job: %+v", again)
		}
		_, err := e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 3})
		isConflict(t, err, "a finish with another outcome")
		_, err = e.s.Heartbeat(e.ctx, j.ID, 1, e.t0, time.Second)
		isConflict(t, err, "heartbeat of a finished job")
		_, err = e.s.StartJob(e.ctx, "nope", 1, e.t0)
		isNotFound(t, err, "start of an unknown job")
	}},
	{"JobFailed", func(t *testing.T, e *env) {
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		j = get(e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 2, Snapshot: "never-kept", Now: e.t0}))(t)
		if j.State != store.JobFailed || *j.ExitCode != 2 || j.Snapshot != "" || j.SnapshotAgent != "" {
			t.Errorf("failed job = %+v: want failed, exit 2, no snapshot", j)
		}
	}},
	{"JobRetryPolicy", func(t *testing.T, e *env) {
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		if j.PolicyAttempt != 1 {
			t.Fatalf("a first claim is policy attempt %d", j.PolicyAttempt)
		}
		_, err := e.s.RetryJob(e.ctx, j.ID, 2, e.t0)
		isConflict(t, err, "a retry of a running job")
		get(e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 3, Now: e.at(time.Second)}))(t)
		_, err = e.s.RetryJob(e.ctx, j.ID, 3, e.t0)
		isConflict(t, err, "a retry that skips a policy attempt")
		r := get(e.s.RetryJob(e.ctx, j.ID, 2, e.at(2*time.Second)))(t)
		if r.State != store.JobScheduled || r.PolicyAttempt != 2 || r.Attempt != 1 || r.ExitCode != nil || r.AgentID != "" ||
			r.InfraRetries != 0 || !r.ReadyAt.Equal(e.at(2*time.Second)) {
			t.Errorf("retried job = %+v", r)
		}
		if again := get(e.s.RetryJob(e.ctx, j.ID, 2, e.at(3*time.Second)))(t); again.PolicyAttempt != 2 || !again.ReadyAt.Equal(r.ReadyAt) {
			t.Errorf("a repeated retry changed the job: %+v", again)
		}
		// A late finish of the old claim is refused: the job is not leased any more.
		_, err = e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 3})
		isConflict(t, err, "a finish of the retried claim")
		j2, ok := e.claim(t, "a1", e.at(4*time.Second))
		if !ok || j2.ID != j.ID || j2.Attempt != 2 || j2.PolicyAttempt != 2 {
			t.Fatalf("claim of the retry = %+v (ok %v)", j2, ok)
		}
		get(e.s.FinishJob(e.ctx, j.ID, 2, store.Finish{ExitCode: 0, Now: e.at(5 * time.Second)}))(t)
		tries := get(e.s.ListJobTries(e.ctx, j.ID))(t)
		if len(tries) != 1 || tries[0].PolicyAttempt != 1 || tries[0].Attempt != 1 || tries[0].ExitCode == nil ||
			*tries[0].ExitCode != 3 || !tries[0].FinishedAt.Equal(e.at(time.Second)) {
			t.Errorf("tries = %+v", tries)
		}
		_, err = e.s.RetryJob(e.ctx, j.ID, 3, e.t0)
		isConflict(t, err, "a retry of a passed job")
		_, err = e.s.RetryJob(e.ctx, "nope", 2, e.t0)
		isNotFound(t, err, "a retry of an unknown job")
	}},
	{"JobReleaseSkipCached", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		_, js := e.build(t, o, p, store.NewJob{StepKey: "a"}, store.NewJob{StepKey: "b"}, store.NewJob{StepKey: "c"})
		j := get(e.s.ReleaseJob(e.ctx, js[0].ID, e.t0))(t)
		if j.State != store.JobScheduled || !j.ReadyAt.Equal(e.t0) {
			t.Errorf("released %+v", j)
		}
		get(e.s.ReleaseJob(e.ctx, js[0].ID, e.at(time.Second)))(t) // idempotent
		j = get(e.s.PassCached(e.ctx, js[0].ID, "snap", "a9", nil, e.at(time.Second)))(t)
		if j.State != store.JobPassed || j.Attempt != 0 || j.Snapshot != "snap" || j.SnapshotAgent != "a9" || *j.ExitCode != 0 {
			t.Errorf("cache hit job = %+v", j)
		}
		get(e.s.PassCached(e.ctx, js[0].ID, "snap", "a9", nil, e.at(time.Second)))(t) // idempotent
		j = get(e.s.SkipJob(e.ctx, js[1].ID, "dependency_failed", e.at(time.Second)))(t)
		if j.State != store.JobSkipped || j.ErrorCode != "dependency_failed" {
			t.Errorf("skipped job = %+v", j)
		}
		_, err := e.s.ReleaseJob(e.ctx, js[1].ID, e.t0)
		isConflict(t, err, "release of a skipped job")
		_, err = e.s.CancelJob(e.ctx, js[2].ID, e.t0)
		isConflict(t, err, "cancel of a pending job (the scheduler skips it)")
	}},
	{"JobCancelAndTimeout", func(t *testing.T, e *env) {
		e.ready(t, "acme", 2)
		e.agent(t, "a1", "sandbox")
		c, _ := e.claim(t, "a1", e.t0)
		to, _ := e.claim(t, "a1", e.t0)
		get(e.s.StartJob(e.ctx, c.ID, 1, e.t0))(t)
		get(e.s.CancelJob(e.ctx, c.ID, e.at(time.Second)))(t)
		get(e.s.CancelJob(e.ctx, c.ID, e.at(time.Second)))(t) // idempotent
		get(e.s.TimeOutJob(e.ctx, to.ID, e.at(time.Second)))(t)
		for _, j := range []store.Job{c, to} {
			hb := get(e.s.Heartbeat(e.ctx, j.ID, 1, e.at(2*time.Second), time.Minute))(t)
			if !hb.State.Stopping() {
				t.Errorf("heartbeat of %s: state %s, want the agent told to stop", j.StepKey, hb.State)
			}
		}
		// A start that arrives after the cancel keeps the cancel.
		if s := get(e.s.StartJob(e.ctx, to.ID, 1, e.at(2*time.Second)))(t); s.State != store.JobTimingOut {
			t.Errorf("start after timeout: state %s", s.State)
		}
		if j := get(e.s.FinishJob(e.ctx, c.ID, 1, store.Finish{ExitCode: 0, Snapshot: "s", Now: e.at(3 * time.Second)}))(t); j.State != store.JobCanceled || j.Snapshot != "" {
			t.Errorf("finished after cancel: %+v, want canceled without a snapshot", j)
		}
		if j := get(e.s.FinishJob(e.ctx, to.ID, 1, store.Finish{ExitCode: 124, Now: e.at(3 * time.Second)}))(t); j.State != store.JobTimedOut || j.ErrorCode != "step_timeout" {
			t.Errorf("finished after timeout: %+v, want timed_out", j)
		}
		get(e.s.FinishJob(e.ctx, to.ID, 1, store.Finish{ExitCode: 124}))(t) // idempotent
	}},
	{"LeaseExpiryRequeueThenAgentLost", func(t *testing.T, e *env) {
		js := e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		e.agent(t, "a2", "sandbox")
		j, _ := e.claim(t, "a1", e.t0) // lease until t0+30s
		get(e.s.StartJob(e.ctx, j.ID, 1, e.t0))(t)
		if r := get(e.s.ReapExpiredLeases(e.ctx, e.at(29*time.Second), 1))(t); len(r) != 0 {
			t.Fatalf("reaped %d jobs before the lease lapsed", len(r))
		}
		r := get(e.s.ReapExpiredLeases(e.ctx, e.at(31*time.Second), 1))(t)
		if len(r) != 1 || r[0].State != store.JobScheduled || r[0].InfraRetries != 1 || r[0].AgentID != "" || r[0].Attempt != 1 {
			t.Fatalf("reaped %+v: want the job requeued, retry 1", r)
		}
		// The lost agent comes back: every write of its attempt is refused.
		_, err := e.s.Heartbeat(e.ctx, j.ID, 1, e.at(32*time.Second), time.Minute)
		isConflict(t, err, "heartbeat of a reaped attempt")
		j2, ok := e.claim(t, "a2", e.at(32*time.Second))
		if !ok || j2.ID != js[0].ID || j2.Attempt != 2 || j2.AgentID != "a2" {
			t.Fatalf("reclaim = %+v (ok %v), want attempt 2 on a2", j2, ok)
		}
		for name, err := range map[string]error{
			"start":     second(e.s.StartJob(e.ctx, j.ID, 1, e.at(33*time.Second))),
			"heartbeat": second(e.s.Heartbeat(e.ctx, j.ID, 1, e.at(33*time.Second), time.Minute)),
			"finish":    second(e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 0, Snapshot: "stale"})),
			"logs":      second(e.s.AppendLogs(e.ctx, j.ID, 1, []store.LogChunk{{Seq: 1, Content: "stale"}})),
		} {
			isConflict(t, err, "stale attempt's "+name)
		}
		// Its retry budget spent, the job fails agent_lost when the second lease lapses.
		r = get(e.s.ReapExpiredLeases(e.ctx, e.at(70*time.Second), 1))(t)
		if len(r) != 1 || r[0].State != store.JobFailed || r[0].ErrorCode != store.CodeAgentLost || r[0].FinishedAt.IsZero() {
			t.Fatalf("reaped %+v: want failed agent_lost", r)
		}
		if got := get(e.s.GetJob(e.ctx, j.ID))(t); got.State != store.JobFailed {
			t.Errorf("stored state %s", got.State)
		}
		if _, ok := e.claim(t, "a1", e.at(71*time.Second)); ok {
			t.Error("a failed job was claimed")
		}
	}},
	{"RequeuedWithNoLiveAgentFails", func(t *testing.T, e *env) {
		other, _ := e.org(t, "other")
		js := e.ready(t, "acme", 2) // j1 is never claimed: it waits, agents or not
		acme := e.lastOrg
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a1", OrgID: acme, Backend: "sandbox"}, e.t0))(t)
		j, _ := e.claim(t, "a1", e.t0) // lease until t0+30s; a1 never seen again
		r := get(e.s.ReapExpiredLeases(e.ctx, e.at(31*time.Second), 2))(t)
		if len(r) != 1 || r[0].ID != js[0].ID || r[0].State != store.JobScheduled {
			t.Fatalf("reaped %+v: want j0 requeued", r)
		}
		// Another agent of the org is alive: the retry waits for it.
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "a2", OrgID: acme, Backend: "sandbox"}, e.at(25*time.Second)))(t)
		if f := get(e.s.FailOrphans(e.ctx, e.at(31*time.Second), 30*time.Second))(t); len(f) != 0 {
			t.Fatalf("failed %+v with a live agent", f)
		}
		// Only another org's agent is alive: no one can run it.
		get(e.s.UpsertAgent(e.ctx, store.Agent{ID: "x", OrgID: other.ID, Backend: "sandbox"}, e.at(50*time.Second)))(t)
		f := get(e.s.FailOrphans(e.ctx, e.at(56*time.Second), 30*time.Second))(t)
		if len(f) != 1 || f[0].ID != j.ID || f[0].State != store.JobFailed || f[0].ErrorCode != store.CodeAgentLost || f[0].FinishedAt.IsZero() {
			t.Fatalf("FailOrphans = %+v, want j0 failed agent_lost", f)
		}
		if got := get(e.s.GetJob(e.ctx, js[1].ID))(t); got.State != store.JobScheduled {
			t.Errorf("a never-claimed job ended %s: it must wait", got.State)
		}
	}},
	{"LeaseExpiryOfStoppingJob", func(t *testing.T, e *env) {
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		get(e.s.CancelJob(e.ctx, j.ID, e.t0))(t)
		r := get(e.s.ReapExpiredLeases(e.ctx, e.at(time.Hour), 5))(t)
		if len(r) != 1 || r[0].State != store.JobCanceled {
			t.Errorf("reaped %+v: a lost job being canceled ends canceled, not retried", r)
		}
	}},
}

func second[T any](_ T, err error) error { return err }

var claimCases = []testCase{
	{"ClaimMatching", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		_, js := e.build(t, o, p,
			store.NewJob{StepKey: "docker-only", Backend: "docker"},
			store.NewJob{StepKey: "gpu", Labels: []string{"gpu", "linux"}},
			store.NewJob{StepKey: "any"})
		for _, j := range js {
			get(e.s.ReleaseJob(e.ctx, j.ID, e.t0))(t)
		}
		e.agent(t, "sand", "sandbox", "linux")
		e.agent(t, "dock", "docker", "linux", "gpu")
		if j, _ := e.claim(t, "sand", e.t0); j.StepKey != "any" {
			t.Errorf("sandbox agent with [linux] got %q, want any", j.StepKey)
		}
		if _, ok := e.claim(t, "sand", e.t0); ok {
			t.Error("sandbox agent got a job it cannot run")
		}
		if j, _ := e.claim(t, "dock", e.t0); j.StepKey != "docker-only" {
			t.Errorf("docker agent got %q first, want the oldest it can run", j.StepKey)
		}
		if j, _ := e.claim(t, "dock", e.t0); j.StepKey != "gpu" {
			t.Errorf("docker agent got %q, want gpu", j.StepKey)
		}
		_, _, err := e.s.ClaimJob(e.ctx, store.Claim{AgentID: "ghost", OrgID: o.ID, Now: e.t0, LeaseTTL: time.Second})
		isNotFound(t, err, "claim by an unregistered agent")
	}},
	{"ClaimImageBackend", func(t *testing.T, e *env) {
		// BackendImage: any backend that runs images, never host.
		o, p := e.org(t, "acme")
		_, js := e.build(t, o, p, store.NewJob{StepKey: "alpine", Backend: store.BackendImage})
		get(e.s.ReleaseJob(e.ctx, js[0].ID, e.t0))(t)
		e.agent(t, "h", "host")
		e.agent(t, "s", "sandbox")
		if j, ok := e.claim(t, "h", e.t0); ok {
			t.Fatalf("a host agent claimed %q, an image step", j.StepKey)
		}
		if j, ok := e.claim(t, "s", e.t0); !ok || j.ID != js[0].ID {
			t.Fatalf("sandbox agent got %+v (ok %v)", j, ok)
		}
	}},
	{"ClaimOrgScoped", func(t *testing.T, e *env) {
		// An agent of org A never claims org B's job, however old; B's agent gets it.
		b, pb := e.org(t, "bravo")
		_, jb := e.build(t, b, pb, store.NewJob{StepKey: "b-secret", Command: "echo $B_TOKEN"})
		get(e.s.ReleaseJob(e.ctx, jb[0].ID, e.t0))(t)
		a, pa := e.org(t, "alpha")
		_, ja := e.build(t, a, pa, store.NewJob{StepKey: "a-step"})
		get(e.s.ReleaseJob(e.ctx, ja[0].ID, e.at(time.Second)))(t)
		e.agent(t, "agent-a", "sandbox")
		e.agent(t, "agent-b", "sandbox")
		if j, ok := e.claimIn(t, a.ID, "agent-a", e.at(2*time.Second)); !ok || j.ID != ja[0].ID {
			t.Fatalf("org A's agent got %q (ok %v), want its own a-step", j.StepKey, ok)
		}
		if j, ok := e.claimIn(t, a.ID, "agent-a", e.at(2*time.Second)); ok {
			t.Fatalf("org A's agent claimed org B's job %q", j.StepKey)
		}
		if j, ok := e.claimIn(t, b.ID, "agent-b", e.at(2*time.Second)); !ok || j.ID != jb[0].ID {
			t.Fatalf("org B's agent got %q (ok %v), want b-secret", j.StepKey, ok)
		}
		_, _, err := e.s.ClaimJob(e.ctx, store.Claim{AgentID: "agent-a", Now: e.t0, LeaseTTL: time.Second})
		if err == nil {
			t.Fatal("a claim without an org was accepted")
		}
		// A source blob is readable only by an org one of whose builds has it.
		d := "sha256:" + strings.Repeat("b", 64)
		get(e.s.PutBlob(e.ctx, store.Blob{Digest: d, Size: 3}))(t)
		if _, _, err := e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: b.ID, PipelineID: pb.ID, IR: `{"steps":[]}`, SourceDigest: d, Now: e.t0}); err != nil {
			t.Fatal(err)
		}
		if got := get(e.s.GetOrgBlob(e.ctx, b.ID, d))(t); got.Digest != d {
			t.Fatalf("GetOrgBlob = %+v", got)
		}
		_, err = e.s.GetOrgBlob(e.ctx, a.ID, d)
		isNotFound(t, err, "another org's source blob")
	}},
	{"ClaimPlacement", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		parent := "00000000-0000-4000-8000-0000000000aa"
		_, js := e.build(t, o, p, store.NewJob{ID: parent, StepKey: "deps"},
			store.NewJob{StepKey: "test", ParentID: parent, DependsOn: []string{parent}},
			store.NewJob{StepKey: "lint", ParentID: parent, DependsOn: []string{parent}})
		e.agent(t, "a1", "sandbox")
		e.agent(t, "a2", "sandbox")
		get(e.s.ReleaseJob(e.ctx, js[0].ID, e.t0))(t)
		j, _ := e.claim(t, "a1", e.t0)
		get(e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{ExitCode: 0, Snapshot: "snap"}))(t)
		get(e.s.ReleaseJob(e.ctx, js[1].ID, e.t0))(t)
		if _, ok := e.claim(t, "a2", e.t0); ok {
			t.Fatal("a builds_in child was claimed by an agent without its parent's snapshot")
		}
		if c, ok := e.claim(t, "a1", e.t0); !ok || c.StepKey != "test" {
			t.Fatalf("the snapshot's agent got %+v (ok %v), want test", c, ok)
		}
		// A cache-hit parent places its children on the agent the registry named.
		_, js2 := e.build(t, o, p, store.NewJob{ID: "00000000-0000-4000-8000-0000000000bb", StepKey: "deps"},
			store.NewJob{StepKey: "test", ParentID: "00000000-0000-4000-8000-0000000000bb"})
		get(e.s.PassCached(e.ctx, js2[0].ID, "snap2", "a2", nil, e.t0))(t)
		get(e.s.ReleaseJob(e.ctx, js2[1].ID, e.t0))(t)
		if _, ok := e.claim(t, "a1", e.t0); ok {
			t.Fatal("a1 claimed the child of a2's cached snapshot")
		}
		if c, ok := e.claim(t, "a2", e.t0); !ok || c.ID != js2[1].ID {
			t.Fatalf("a2 got %+v (ok %v)", c, ok)
		}
	}},
	{"ClaimConcurrentNeverTwice", func(t *testing.T, e *env) {
		const jobs, agents = 40, 8
		js := e.ready(t, "acme", jobs)
		for i := range agents {
			e.agent(t, agentID(i), "sandbox")
		}
		var mu sync.Mutex
		got := map[string]string{}
		parallel(t, agents, func(i int) {
			for {
				j, ok, err := e.s.ClaimJob(e.ctx, store.Claim{AgentID: agentID(i), OrgID: e.lastOrg, Now: e.t0, LeaseTTL: time.Minute})
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				if prev, dup := got[j.ID]; dup {
					t.Errorf("job %s claimed by %s and %s", j.ID, prev, agentID(i))
				}
				got[j.ID] = agentID(i)
				mu.Unlock()
			}
		})
		if len(got) != len(js) {
			t.Errorf("%d jobs claimed, want %d", len(got), len(js))
		}
	}},
}

func agentID(i int) string { return "agent-" + string(rune('a'+i)) }
