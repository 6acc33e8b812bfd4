package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/store"
)

func jobPath(p, id string) string {
	return agentproto.Prefix + "/jobs/" + id + p[len(agentproto.Prefix+"/jobs/{job_id}"):]
}

// TestAgentOrgScoped: an agent of one org never claims, touches or fetches the source of
// another org's work: its claims wait, its calls on the other org's job answer 404.
func TestAgentOrgScoped(t *testing.T) {
	e := newEnv(t)
	acme, other := e.tokens["acme/agent"], e.tokens["other/agent"]
	for _, a := range []struct{ id, tok string }{{"ag-acme", acme}, {"ag-other", other}} {
		if r := e.do("", "POST", agentproto.PathRegister, a.tok, agentproto.Register{AgentID: a.id, Backend: "sandbox"}); r.Status != 200 {
			t.Fatalf("register %s: %d %s", a.id, r.Status, r.Body)
		}
	}
	src := []byte("acme's secret source")
	sum := sha256.Sum256(src)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	b := e.submit("ci", map[string]any{"source_b64": base64.StdEncoding.EncodeToString(src)})
	var first string
	for _, j := range e.jobs("ci", b.Number) {
		first = j.ID
		break
	}
	if _, err := e.db.ReleaseJob(t.Context(), first, e.srv.now()); err != nil {
		t.Fatal(err)
	}

	if r := e.do("", "POST", agentproto.PathClaim, other, agentproto.Claim{AgentID: "ag-other", WaitSeconds: 1}); r.Status != http.StatusNoContent {
		t.Fatalf("other's agent claimed acme's step: %d %s", r.Status, r.Body)
	}
	if r := e.do("", "GET", agentproto.Prefix+"/sources/"+digest, other, nil); r.Status != http.StatusNotFound {
		t.Errorf("other's agent fetched acme's source: %d", r.Status)
	}
	r := e.do("", "POST", agentproto.PathClaim, acme, agentproto.Claim{AgentID: "ag-acme", WaitSeconds: 1})
	if r.Status != 200 {
		t.Fatalf("acme's agent claim: %d %s", r.Status, r.Body)
	}
	var job agentproto.Job
	r.decode(t, &job)
	if job.JobID != first || job.SourceDigest != digest {
		t.Fatalf("acme's agent got %+v", job)
	}
	for _, p := range []string{agentproto.PathStart, agentproto.PathHeartbeat, agentproto.PathFinish} {
		if r := e.do("", "POST", jobPath(p, job.JobID), other, agentproto.Fence{Attempt: job.Attempt}); r.Status != http.StatusNotFound {
			t.Errorf("%s by other's agent: %d %s, want 404", p, r.Status, r.Body)
		}
	}
	logs := agentproto.Logs{Attempt: job.Attempt, Chunks: []agentproto.Chunk{{Seq: 1, Content: "forged"}}}
	if r := e.do("", "POST", jobPath(agentproto.PathLogs, job.JobID), other, logs); r.Status != http.StatusNotFound {
		t.Errorf("logs by other's agent: %d %s, want 404", r.Status, r.Body)
	}
	if r := e.do("", "GET", agentproto.Prefix+"/sources/"+digest, acme, nil); r.Status != 200 || string(r.Body) != string(src) {
		t.Errorf("acme's agent source: %d %q", r.Status, r.Body)
	}
	if r := e.do("", "POST", jobPath(agentproto.PathStart, job.JobID), acme, agentproto.Fence{Attempt: job.Attempt}); r.Status != 200 {
		t.Errorf("start by acme's agent: %d %s", r.Status, r.Body)
	}
}

// TestJobBackends: createBuild gives each job the backend it needs: its runner when named,
// else one that runs images for a root step of a real image (a host agent would ignore it);
// a host agent's claim leaves such a step scheduled, visible as waiting in listJobs.
func TestJobBackends(t *testing.T) {
	e := newEnv(t)
	ir := `{"version":"0","steps":[` +
		`{"type":"command","key":"alpine","cmd":"true","image":"alpine"},` +
		`{"type":"command","key":"onhost","cmd":"true","image":"host"},` +
		`{"type":"command","key":"child","cmd":"true","builds_in":"alpine"},` +
		`{"type":"command","key":"dock","cmd":"true","image":"alpine","runner":"docker"}]}`
	b := e.submit("ci", map[string]any{"pipeline_ir": ir})
	got := map[string]string{}
	var alpine string
	for _, j := range e.jobs("ci", b.Number) {
		sj, err := e.db.GetJob(t.Context(), j.ID)
		if err != nil {
			t.Fatal(err)
		}
		got[sj.StepKey] = sj.Backend
		if sj.StepKey == "alpine" {
			alpine = sj.ID
		}
	}
	want := map[string]string{"alpine": store.BackendImage, "onhost": "", "child": "", "dock": "docker"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("job backends (-want +got):\n%s", diff)
	}
	if _, err := e.db.ReleaseJob(t.Context(), alpine, e.srv.now()); err != nil {
		t.Fatal(err)
	}
	tok := e.tokens["acme/agent"]
	if r := e.do("", "POST", agentproto.PathRegister, tok, agentproto.Register{AgentID: "h", Backend: "host"}); r.Status != 200 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	if r := e.do("", "POST", agentproto.PathClaim, tok, agentproto.Claim{AgentID: "h", WaitSeconds: 1}); r.Status != http.StatusNoContent {
		t.Fatalf("a host agent claimed an image step: %d %s", r.Status, r.Body)
	}
	for _, j := range e.jobs("ci", b.Number) {
		if j.ID == alpine && j.State != "scheduled" {
			t.Errorf("unclaimable job listed %s, want scheduled (waiting)", j.State)
		}
	}
}

// TestAgentTakeover: an agent id is bound to the org whose token registered it. Registering,
// saying alive or claiming as that id is refused without a token or with a user token (401),
// and with another org's agent token (404, the tenancy answer), and changes nothing of it.
func TestAgentTakeover(t *testing.T) {
	e := newEnv(t)
	acme, other := e.tokens["acme/agent"], e.tokens["other/agent"]
	reg := agentproto.Register{AgentID: "ag-1", Name: "acme's", Backend: "sandbox", Labels: []string{"gpu=1"}}
	if r := e.do("", "POST", agentproto.PathRegister, acme, reg); r.Status != 200 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	before, err := e.db.GetAgent(t.Context(), "ag-1")
	if err != nil {
		t.Fatal(err)
	}
	taken := agentproto.Register{AgentID: "ag-1", Name: "taken", Backend: "host"}
	calls := []struct {
		name, path string
		body       any
	}{
		{"register", agentproto.PathRegister, taken},
		{"alive", agentproto.PathAlive, agentproto.Alive{AgentID: "ag-1"}},
		{"claim", agentproto.PathClaim, agentproto.Claim{AgentID: "ag-1", WaitSeconds: 1}},
	}
	for _, c := range calls {
		for _, who := range []struct {
			name, token string
			status      int
			code        string
		}{
			{"no token", "", 401, "unauthorized"},
			{"acme's user token", e.tokens["acme/user"], 401, "unauthorized"},
			{"other org's agent token", other, 404, "agent_not_found"},
		} {
			r := e.do("", "POST", c.path, who.token, c.body)
			if r.Status != who.status || r.errorCode(t) != who.code {
				t.Errorf("%s as %s: %d %s, want %d %s", c.name, who.name, r.Status, r.Body, who.status, who.code)
			}
		}
	}
	after, err := e.db.GetAgent(t.Context(), "ag-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the refused calls changed the agent (-before +after):\n%s", diff)
	}
	if r := e.do("", "POST", agentproto.PathAlive, acme, agentproto.Alive{AgentID: "ag-1"}); r.Status != 200 {
		t.Errorf("alive as acme's agent: %d %s", r.Status, r.Body)
	}
	if r := e.do("", "POST", agentproto.PathClaim, acme, agentproto.Claim{AgentID: "ag-1", WaitSeconds: 1}); r.Status != http.StatusNoContent {
		t.Errorf("claim as acme's agent: %d %s", r.Status, r.Body)
	}
}

// TestFinishClaimsNext: a Finish with Next records the outcome and claims the agent's next
// step in the same call; a Next naming another org's agent, or with nothing to claim, leaves
// it empty and the outcome recorded all the same.
func TestFinishClaimsNext(t *testing.T) {
	e := newEnv(t)
	acme := e.tokens["acme/agent"]
	for _, a := range []struct{ id, tok string }{{"ag-acme", acme}, {"ag-other", e.tokens["other/agent"]}} {
		if r := e.do("", "POST", agentproto.PathRegister, a.tok, agentproto.Register{AgentID: a.id, Backend: "sandbox"}); r.Status != 200 {
			t.Fatalf("register %s: %d %s", a.id, r.Status, r.Body)
		}
	}
	b := e.submit("ci", map[string]any{"pipeline_ir": `{"version":"0","steps":[` +
		`{"type":"command","key":"a","cmd":"true"},{"type":"command","key":"b","cmd":"true"},{"type":"command","key":"c","cmd":"true"}]}`})
	ids := map[string]string{}
	for _, j := range e.jobs("ci", b.Number) {
		ids[*j.StepKey] = j.ID
	}
	for _, k := range []string{"a", "b"} { // c stays unreleased: nothing to claim after b
		if _, err := e.db.ReleaseJob(t.Context(), ids[k], e.srv.now()); err != nil {
			t.Fatal(err)
		}
	}
	r := e.do("", "POST", agentproto.PathClaim, acme, agentproto.Claim{AgentID: "ag-acme", WaitSeconds: 1})
	if r.Status != 200 {
		t.Fatalf("claim: %d %s", r.Status, r.Body)
	}
	var first agentproto.Job
	r.decode(t, &first)
	start := func(j agentproto.Job) {
		t.Helper()
		if r := e.do("", "POST", jobPath(agentproto.PathStart, j.JobID), acme, agentproto.Fence{Attempt: j.Attempt}); r.Status != 200 {
			t.Fatalf("start %s: %d %s", j.JobID, r.Status, r.Body)
		}
	}
	finish := func(what string, j agentproto.Job, nextAgent string) *agentproto.Job {
		t.Helper()
		r := e.do("", "POST", jobPath(agentproto.PathFinish, j.JobID), acme,
			agentproto.Finish{Attempt: j.Attempt, Next: &agentproto.Claim{AgentID: nextAgent}})
		if r.Status != 200 {
			t.Fatalf("%s: finish: %d %s", what, r.Status, r.Body)
		}
		var st agentproto.State
		r.decode(t, &st)
		if st.State != string(store.JobPassed) {
			t.Errorf("%s: finish answered state %q, want passed", what, st.State)
		}
		return st.Next
	}
	start(first)
	if next := finish("Next naming another org's agent", first, "ag-other"); next != nil {
		t.Fatalf("a Next naming another org's agent claimed %+v", next)
	}
	// A repeat of the finish (idempotent) with a Next of its own agent claims the other
	// released step.
	next := finish("Next of the agent", first, "ag-acme")
	want := ids["a"]
	if first.JobID == want {
		want = ids["b"]
	}
	if next == nil || next.JobID != want || next.Command != "true" {
		t.Fatalf("Next = %+v after finishing %s, want job %s", next, first.JobID, want)
	}
	if got, err := e.db.GetJob(t.Context(), next.JobID); err != nil || got.AgentID != "ag-acme" || got.Attempt != next.Attempt {
		t.Fatalf("the next job in the store: %+v, %v; want it leased to ag-acme, attempt %d", got, err, next.Attempt)
	}
	start(*next)
	if last := finish("nothing left to claim", *next, "ag-acme"); last != nil {
		t.Fatalf("Next = %+v with nothing released", last)
	}
}
