package agent_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/agent"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/vm/sandbox"
)

// TestOneAgentBuild: a pipeline submitted with createBuild runs to passed through one agent;
// the source reaches /workspace and a builds_in child sees its parent's output.
func TestOneAgentBuild(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startAgent(agentOpts{})
	b := e.submit(ir(
		step("build", "cat hello.txt && echo built > out.txt && echo to-stderr >&2"),
		step("test", "cat out.txt", `"builds_in":"build"`),
	), nil)
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	js := e.jobs(b.ID)
	// The order between stdout and stderr is not defined (two pipes); within a stream it is,
	// and the chunks' seqs are contiguous from 1.
	byStream := map[int][]string{}
	var seqs []string
	for _, c := range e.logLines(js["build"], 1) {
		byStream[int(c.Stream)] = append(byStream[int(c.Stream)], c.Content)
		seqs = append(seqs, fmt.Sprint(c.Seq))
	}
	if got := fmt.Sprint(byStream[0], byStream[1], seqs); got != "[hello from source] [to-stderr] [1 2]" {
		t.Fatalf("build log: stdout, stderr, seqs = %s", got)
	}
	if cs := e.logLines(js["test"], 1); len(cs) != 1 || cs[0].Content != "built" {
		t.Fatalf("test log %+v", cs)
	}
}

// TestFinishClaimsNext: each Finish asks for the agent's next step (agentproto.Finish.Next),
// and a step of a chain released right after its parent finished comes in that answer
// rather than through a Claim of its own; every step is handed out once either way.
func TestFinishClaimsNext(t *testing.T) {
	// A wait long enough that a loaded machine's driver releases the next step within it.
	e := newEnv(t, envOpts{finishNextWait: 3 * time.Second})
	a := e.startAgent(agentOpts{})
	b := e.submit(ir(step("a", "true"), `{"type":"wait"}`, step("b", "true"), `{"type":"wait"}`, step("c", "true")), nil)
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	sent := strings.Split(strings.TrimSpace(a.tr.sent.String()), "\n")
	for _, body := range sent {
		if !strings.Contains(body, `"next":{`) {
			t.Errorf("a Finish without Next: %s", body)
		}
	}
	claims, nexts := a.tr.claims.Load(), a.tr.nexts.Load()
	if claims+nexts != 3 {
		t.Errorf("%d jobs claimed and %d handed out by Finish, want 3 in all", claims, nexts)
	}
	// Both later steps are released within milliseconds of their parent's finish, inside
	// the wait: both come in a Finish's answer, the first by a claim.
	if claims != 1 || nexts != 2 {
		t.Errorf("%d claims and %d steps in a Finish's answer, want 1 and 2", claims, nexts)
	}
}

// TestFanOutAndPlacement: two agents share a fan-out, and builds_in children land on the
// agent that holds their parent's snapshot.
func TestFanOutAndPlacement(t *testing.T) {
	e := newEnv(t, envOpts{})
	a1, a2 := e.startAgent(agentOpts{}), e.startAgent(agentOpts{})
	var steps []string
	for i := range 4 {
		steps = append(steps, step(fmt.Sprintf("leaf%d", i), "sleep 0.5; echo leaf"))
	}
	steps = append(steps, step("base", "echo mark > mark.txt"),
		step("child1", "cat mark.txt", `"builds_in":"base"`), step("child2", "cat mark.txt", `"builds_in":"base"`))
	b := e.submit(ir(steps...), map[string]any{"parallelism": 4})
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	js := e.jobs(b.ID)
	used := map[string]bool{}
	for _, j := range js {
		used[j.AgentID] = true
	}
	if !used[a1.a.ID()] || !used[a2.a.ID()] {
		t.Fatalf("not both agents ran steps: %v (agents %s %s)", used, a1.a.ID(), a2.a.ID())
	}
	for _, k := range []string{"child1", "child2"} {
		if js[k].AgentID != js["base"].SnapshotAgent || js[k].AgentID == "" {
			t.Fatalf("%s ran on %s, base's snapshot is on %s", k, js[k].AgentID, js["base"].SnapshotAgent)
		}
	}
}

// waitRunning waits until the job of step key runs on some agent and returns it.
func (e *env) waitRunning(buildID, key string) store.Job {
	e.t.Helper()
	var j store.Job
	e.waitFor(key+" running", func() bool {
		j = e.jobs(buildID)[key]
		return j.State == store.JobRunning
	})
	return j
}

// TestAgentKilledRetried: an agent stopped mid-step (its context canceled: no finish) loses
// the lease; the step is retried on the other agent and the build passes.
func TestAgentKilledRetried(t *testing.T) {
	e := newEnv(t, envOpts{leaseTTL: 1500 * time.Millisecond})
	first := e.startAgent(agentOpts{})
	b := e.submit(ir(step("slow", "echo go; sleep 2; echo done")), nil)
	j := e.waitRunning(b.ID, "slow")
	if j.AgentID != first.a.ID() {
		t.Fatalf("ran on %s", j.AgentID)
	}
	second := e.startAgent(agentOpts{})
	first.stop(t)
	got := e.waitBuild(b.ID)
	if got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	j = e.jobs(b.ID)["slow"]
	if j.Attempt != 2 || j.AgentID != second.a.ID() || j.InfraRetries != 1 {
		t.Fatalf("job %+v", j)
	}
}

// TestAgentLostFails: with no other agent and no retry budget left, a lost agent's step
// fails agent_lost within the lease TTL (plus the reaper's period) and fails the build.
func TestAgentLostFails(t *testing.T) {
	ttl := 1500 * time.Millisecond
	e := newEnv(t, envOpts{leaseTTL: ttl, maxRetries: -1})
	a := e.startAgent(agentOpts{})
	b := e.submit(ir(step("slow", "sleep 20")), nil)
	e.waitRunning(b.ID, "slow")
	a.stop(t)
	killed := time.Now()
	e.waitFor("agent_lost", func() bool { return e.jobs(b.ID)["slow"].State.Terminal() })
	if d := time.Since(killed); d > ttl+time.Second {
		t.Errorf("agent_lost after %v, lease TTL %v", d, ttl)
	}
	j := e.jobs(b.ID)["slow"]
	if j.State != store.JobFailed || j.ErrorCode != store.CodeAgentLost {
		t.Fatalf("job %s %s", j.State, j.ErrorCode)
	}
	if got := e.waitBuild(b.ID); got.State != store.BuildFailed {
		t.Fatalf("build %s", got.State)
	}
}

// TestRequeuedWithNoAgentFails: retries are left, but the only agent is gone: the requeued
// step fails agent_lost once no agent was seen within the lease TTL, instead of waiting.
func TestRequeuedWithNoAgentFails(t *testing.T) {
	ttl := 1500 * time.Millisecond
	e := newEnv(t, envOpts{leaseTTL: ttl}) // the default budget: 2 retries
	a := e.startAgent(agentOpts{})
	b := e.submit(ir(step("slow", "sleep 20")), nil)
	e.waitRunning(b.ID, "slow")
	a.stop(t)
	killed := time.Now()
	e.waitFor("agent_lost", func() bool { return e.jobs(b.ID)["slow"].State.Terminal() })
	// The lease lapses (TTL), the job is requeued, and a TTL after the agent was last seen
	// it fails: at most about two TTLs and the reaper's period.
	if d := time.Since(killed); d > 2*ttl+time.Second {
		t.Errorf("agent_lost after %v, lease TTL %v", d, ttl)
	}
	j := e.jobs(b.ID)["slow"]
	if j.State != store.JobFailed || j.ErrorCode != store.CodeAgentLost || j.InfraRetries != 1 {
		t.Fatalf("job %s %s, retries %d", j.State, j.ErrorCode, j.InfraRetries)
	}
	if got := e.waitBuild(b.ID); got.State != store.BuildFailed {
		t.Fatalf("build %s", got.State)
	}
}

// TestConnectionCut: the agent's connection fails for 5 s mid-step; the step goes on, and
// its log reaches the server complete, in order, without duplicates.
func TestConnectionCut(t *testing.T) {
	e := newEnv(t, envOpts{leaseTTL: 10 * time.Second})
	a := e.startAgent(agentOpts{})
	b := e.submit(ir(step("talk", "for i in $(seq 1 100); do echo line $i; sleep 0.08; done")), nil)
	e.waitRunning(b.ID, "talk")
	a.tr.down.Store(true)
	time.Sleep(5 * time.Second) // the outage itself, not synchronisation
	a.tr.down.Store(false)
	if a.tr.hits.Load() == 0 {
		t.Fatal("the cut refused no request")
	}
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	j := e.jobs(b.ID)["talk"]
	if j.Attempt != 1 {
		t.Fatalf("attempt %d: the cut cost the lease", j.Attempt)
	}
	cs := e.logLines(j, 1)
	if len(cs) != 100 {
		t.Fatalf("%d chunks", len(cs))
	}
	for i, c := range cs {
		if c.Seq != int64(i+1) || c.Content != fmt.Sprintf("line %d", i+1) {
			t.Fatalf("chunk %d: seq %d %q", i, c.Seq, c.Content)
		}
	}
}

// TestCancelReachesStep: cancelBuild stops the running step at once.
func TestCancelReachesStep(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startAgent(agentOpts{})
	b := e.submit(ir(step("long", "sleep 60")), nil)
	e.waitRunning(b.ID, "long")
	if code, body := e.request("PUT", fmt.Sprintf("/api/v0/organizations/acme/pipelines/ci/builds/%d/cancel", b.Number), e.user, nil); code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	asked := time.Now()
	e.waitFor("job canceled", func() bool { return e.jobs(b.ID)["long"].State.Terminal() })
	if d := time.Since(asked); d > 3*time.Second {
		t.Errorf("the step stopped %v after the cancel", d)
	}
	if j := e.jobs(b.ID)["long"]; j.State != store.JobCanceled {
		t.Fatalf("job %s", j.State)
	}
	if got := e.waitBuild(b.ID); got.State != store.BuildCanceled {
		t.Fatalf("build %s", got.State)
	}
}

// TestTokenKinds: agent routes refuse user tokens and user routes agent tokens; an agent
// given a user token stops with ErrAuth.
func TestTokenKinds(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, c := range []struct{ method, path, token string }{
		{"POST", "/api/v0/agent/claim", e.user},
		{"POST", "/api/v0/agent/register", e.user},
		{"POST", "/api/v0/agent/jobs/x/finish", e.user},
		{"GET", "/api/v0/agent/sources/" + e.srcDigest, e.user},
		{"POST", "/api/v0/agent/claim", "hma_not_a_token"},
		{"GET", "/api/v0/organizations/acme/pipelines/ci/builds", e.agentTok},
	} {
		if code, body := e.request(c.method, c.path, c.token, map[string]any{}); code != http.StatusUnauthorized {
			t.Errorf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}
	ra := e.startAgent(agentOpts{token: e.user})
	select {
	case err := <-ra.done:
		ra.done <- err
		if !errors.Is(err, agent.ErrAuth) {
			t.Fatalf("agent with a user token: %v", err)
		}
	case <-e.ctx.Done():
		t.Fatal("agent with a user token kept running")
	}
}

// TestSandboxAgent: one build through an agent on the sandbox backend.
func TestSandboxAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox backend needs root here")
	}
	e := newEnv(t, envOpts{})
	state := t.TempDir()
	b, err := sandbox.New(state, imagestore.Open(state), sandbox.Options{NetworkNone: true, Network: "none"})
	if err != nil {
		t.Skipf("sandbox unavailable: %v", err)
	}
	e.startAgent(agentOpts{backend: b})
	bd := e.submit(ir(step("build", "cat /workspace/hello.txt > /workspace/copy.txt"),
		step("test", "cat /workspace/copy.txt", `"builds_in":"build"`)), nil)
	if got := e.waitBuild(bd.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	if cs := e.logLines(e.jobs(bd.ID)["test"], 1); len(cs) != 1 || cs[0].Content != "hello from source" {
		t.Fatalf("test log %+v", cs)
	}
}

// TestDrain: a drained agent claims nothing more, finishes its running step and returns.
func TestDrain(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.startAgent(agentOpts{})
	b := e.submit(ir(step("slow", "sleep 1; echo done")), nil)
	e.waitRunning(b.ID, "slow")
	a.a.Drain()
	select {
	case err := <-a.done:
		a.done <- err
		if err != nil {
			t.Fatalf("drained agent: %v", err)
		}
	case <-e.ctx.Done():
		t.Fatal("drain did not end")
	}
	if j := e.jobs(b.ID)["slow"]; j.State != store.JobPassed || j.Attempt != 1 {
		t.Fatalf("job %s attempt %d", j.State, j.Attempt)
	}
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s", got.State)
	}
}

// TestLongLines: 1 MiB lines, written at once, reach the server whole through a real server
// (each byte 6 of JSON). TestShipperBatchesByBytes checks the byte bound of every batch;
// few lines here, as a large body is slow under -race.
func TestLongLines(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startAgent(agentOpts{})
	const n = 4
	b := e.submit(ir(step("long", fmt.Sprintf(
		`for i in $(seq %d); do head -c 1048576 /dev/zero | tr '\0' '<'; echo; done > /tmp/hm-long.$$ && cat /tmp/hm-long.$$; rm -f /tmp/hm-long.$$`, n))), nil)
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	cs := e.logLines(e.jobs(b.ID)["long"], 1)
	if len(cs) != n {
		t.Fatalf("%d chunks, want %d", len(cs), n)
	}
	want := strings.Repeat("<", 1<<20)
	for i, c := range cs {
		if c.Seq != int64(i+1) || c.Content != want {
			t.Fatalf("chunk %d: seq %d, %d bytes", i, c.Seq, len(c.Content))
		}
	}
}

// TestSourceIsTheArchive: the workspace holds exactly the archive's entries; the agent does
// not walk the extracted tree again, which would re-apply .gitignore (and this machine's git
// excludes) to a source that was filtered when it was packed.
func TestSourceIsTheArchive(t *testing.T) {
	e := newEnv(t, envOpts{})
	src := t.TempDir()
	for name, body := range map[string]string{".gitignore": "kept.log\n", "kept.log": "in the archive\n"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	tree := &source.Tree{Root: src, Size: 25, Entries: []source.Entry{
		{Path: ".gitignore", Type: source.TypeFile, Mode: 0o644, Size: 9, ModTime: now},
		{Path: "kept.log", Type: source.TypeFile, Mode: 0o644, Size: 15, ModTime: now},
	}}
	a, err := tree.WriteArchive(e.ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	e.srcDigest, e.srcB64 = a.Digest, base64.StdEncoding.EncodeToString(raw)
	e.startAgent(agentOpts{})
	b := e.submit(ir(step("read", "cat kept.log")), nil)
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	if cs := e.logLines(e.jobs(b.ID)["read"], 1); len(cs) != 1 || cs[0].Content != "in the archive" {
		t.Fatalf("log %+v", cs)
	}
}
