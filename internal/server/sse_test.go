package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/testutil"
)

type frame struct{ ID, Event, Data string }

// stream is an open SSE response read frame by frame; every read is bounded by the hang
// guard's context, which closes the body.
type stream struct {
	t    *testing.T
	resp *http.Response
	rd   *bufio.Reader
}

func openStream(t *testing.T, ctx context.Context, url, bearer, lastID string) *stream {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &stream{t: t, resp: resp, rd: bufio.NewReader(resp.Body)}
}

// next reads one frame (comments skipped); ok is false at EOF.
func (s *stream) next() (frame, bool) {
	s.t.Helper()
	var f frame
	seen := false
	for {
		line, err := s.rd.ReadString('\n')
		if err == io.EOF && line == "" {
			if seen {
				s.t.Fatalf("stream ended mid-frame: %+v", f)
			}
			return f, false
		}
		if err != nil {
			s.t.Fatalf("stream read: %v (hang guard?)", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if seen {
				return f, true
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			f.ID, seen = line[4:], true
		case strings.HasPrefix(line, "event: "):
			f.Event, seen = line[7:], true
		case strings.HasPrefix(line, "data: "):
			if f.Data != "" {
				s.t.Fatalf("a frame with two data lines: %q", f.Data)
			}
			f.Data, seen = line[6:], true
		default:
			s.t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

func (s *stream) rest() []frame {
	var fs []frame
	for {
		f, ok := s.next()
		if !ok {
			return fs
		}
		fs = append(fs, f)
	}
}

// streamLogs reads a whole log stream.
func streamLogs(t *testing.T, e *env, jobID, token, lastID string) []frame {
	t.Helper()
	s := openStream(t, testutil.HangGuard(t, 20*time.Second), e.url+"/v0/jobs/"+jobID+"/logs?token="+token, "", lastID)
	if s.resp.StatusCode != 200 {
		t.Fatalf("log stream: %d", s.resp.StatusCode)
	}
	return s.rest()
}

// running makes job the agent's, started, as a scheduler and an agent would.
func running(t *testing.T, e *env, jobID string) store.Job {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	if _, err := e.db.ReleaseJob(ctx, jobID, now); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.UpsertAgent(ctx, store.Agent{ID: "agent-1", Name: "a1"}, now); err != nil {
		t.Fatal(err)
	}
	o, err := e.db.GetOrgBySlug(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	j, ok, err := e.db.ClaimJob(ctx, store.Claim{AgentID: "agent-1", OrgID: o.ID, Now: now, LeaseTTL: time.Minute})
	if err != nil || !ok || j.ID != jobID {
		t.Fatalf("claim: %v %v %s", ok, err, j.ID)
	}
	if j, err = e.db.StartJob(ctx, jobID, j.Attempt, now); err != nil {
		t.Fatal(err)
	}
	return j
}

func logToken(t *testing.T, e *env, number int) string {
	t.Helper()
	r := e.do("getBuildLogToken", "GET", fmt.Sprintf("/api/v0/organizations/acme/pipelines/ci/builds/%d/log-token", number), e.tokens["acme/user"], nil)
	var lt logTokenView
	r.decode(t, &lt)
	return lt.Token
}

func TestLogStream(t *testing.T) {
	e := newEnv(t)
	e.submit("ci", nil)
	e.submit("ci", nil)
	jobID := e.jobs("ci", 1)[0].ID
	tok := logToken(t, e, 1)
	j := running(t, e, jobID)
	ts := time.Unix(1767225600, 0)
	if _, err := e.db.AppendLogs(t.Context(), jobID, j.Attempt, []store.LogChunk{
		{Seq: 1, Stream: store.StreamStdout, Content: "hello\n", TS: ts}, {Seq: 2, Stream: store.StreamStderr, Content: "oops"}}); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, testutil.HangGuard(t, 20*time.Second), e.url+"//v0/jobs/"+jobID+"/logs?token="+tok, e.tokens["acme/user"], "")
	if s.resp.StatusCode != 200 || s.resp.Header.Get("Content-Type") != "text/event-stream" || s.resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("log stream: %d %v", s.resp.StatusCode, s.resp.Header)
	}
	f, _ := s.next()
	want := frame{Event: "history", Data: `{"chunks":[{"seq":1,"stream_kind":0,"content":"hello\n","ts":1767225600000000000},{"seq":2,"stream_kind":1,"content":"oops\n","ts":null}]}`}
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("history frame (-want +got):\n%s", diff)
	}
	if _, err := e.db.AppendLogs(t.Context(), jobID, j.Attempt, []store.LogChunk{{Seq: 3, Stream: store.StreamSystem, Content: "third\n"}}); err != nil {
		t.Fatal(err)
	}
	f, _ = s.next()
	if diff := cmp.Diff(frame{ID: "3", Event: "chunk", Data: `{"seq":3,"stream_kind":2,"content":"third\n","ts":null}`}, f); diff != "" {
		t.Errorf("chunk frame (-want +got):\n%s", diff)
	}
	// The last chunk and the finish land together: the chunk comes before done.
	if _, err := e.db.AppendLogs(t.Context(), jobID, j.Attempt, []store.LogChunk{{Seq: 4, Content: "last\n"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.FinishJob(t.Context(), jobID, j.Attempt, store.Finish{ExitCode: 0, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rest := s.rest()
	if diff := cmp.Diff([]frame{{ID: "4", Event: "chunk", Data: `{"seq":4,"stream_kind":0,"content":"last\n","ts":null}`}, {Event: "done", Data: "{}"}}, rest); diff != "" {
		t.Errorf("end of stream (-want +got):\n%s", diff)
	}
	// A terminal job: history, done, end at once; resumed after Last-Event-ID.
	fs := streamLogs(t, e, jobID, tok, "3")
	if len(fs) != 2 || fs[0].Data != `{"chunks":[{"seq":4,"stream_kind":0,"content":"last\n","ts":null}]}` || fs[1] != (frame{Event: "done", Data: "{}"}) {
		t.Errorf("resumed stream: %+v", fs)
	}
	// Refusals, before the stream, in the contract's body.
	other := e.jobs("ci", 2)[0].ID
	for _, c := range []struct {
		name, job, token string
		want             int
		code             string
	}{
		{"no token", jobID, "", 401, "log_stream_unauthorized"},
		{"forged", jobID, tok[:len(tok)-2] + "xx", 401, "log_stream_unauthorized"},
		{"api token", jobID, e.tokens["acme/user"], 401, "log_stream_unauthorized"},
		{"another build's job", other, tok, 403, "log_stream_forbidden"},
		{"no such job", "nope", tok, 403, "log_stream_forbidden"},
	} {
		r := e.do("", "GET", "/v0/jobs/"+c.job+"/logs?token="+c.token, "", nil)
		var body struct{ Code, Message string }
		json.Unmarshal(r.Body, &body)
		if r.Status != c.want || body.Code != c.code || r.errorCode(t) != c.code {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
		}
	}
}

func TestLogTokenExpires(t *testing.T) {
	now := time.Now()
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return now } })
	e.submit("ci", nil)
	jobID := e.jobs("ci", 1)[0].ID
	tok := logToken(t, e, 1)
	now = now.Add(DefaultLogTokenTTL + time.Second)
	if r := e.do("", "GET", "/v0/jobs/"+jobID+"/logs?token="+tok, "", nil); r.Status != 401 {
		t.Errorf("expired token: %d %s", r.Status, r.Body)
	}
}

func TestEventStream(t *testing.T) {
	e := newEnv(t)
	b := e.submit("ci", nil)
	st, err := e.db.GetBuildByNumber(t.Context(), mustPipeline(t, e, "ci"), b.Number)
	if err != nil {
		t.Fatal(err)
	}
	evs := []string{
		`{"kind":"build_start","run_id":"r","plan":{"step_count":1,"chain_count":1,"default_runner":"sandbox"},"started_at":"2026-01-01T00:00:00.000Z"}`,
		`{"kind":"step_log","step_id":"s","stream":"stdout","line":"hi","ts":"2026-01-01T00:00:00.100Z"}`,
	}
	if _, err := e.db.AppendEvents(t.Context(), st.ID, []byte(evs[0]), []byte(evs[1])); err != nil {
		t.Fatal(err)
	}
	url := e.url + "/api/v0/organizations/acme/pipelines/ci/builds/1/events"
	s := openStream(t, testutil.HangGuard(t, 20*time.Second), url, e.tokens["acme/user"], "")
	if s.resp.StatusCode != 200 || s.resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("event stream: %d", s.resp.StatusCode)
	}
	for i, want := range evs {
		f, _ := s.next()
		if diff := cmp.Diff(frame{ID: fmt.Sprint(i + 1), Data: want}, f); diff != "" {
			t.Errorf("event %d (-want +got):\n%s", i+1, diff)
		}
	}
	end := `{"kind":"build_end","exit_code":0,"duration_ms":5}`
	if _, err := e.db.AppendEvents(t.Context(), st.ID, []byte(end), []byte(`{"kind":"after_end"}`)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]frame{{ID: "3", Data: end}}, s.rest()); diff != "" {
		t.Errorf("the stream ends after build_end (-want +got):\n%s", diff)
	}
	// Resumed after Last-Event-ID.
	s = openStream(t, testutil.HangGuard(t, 20*time.Second), url, e.tokens["acme/user"], "2")
	if diff := cmp.Diff([]frame{{ID: "3", Data: end}}, s.rest()); diff != "" {
		t.Errorf("resumed (-want +got):\n%s", diff)
	}
	// Refused like every user route.
	if s := openStream(t, testutil.HangGuard(t, 5*time.Second), url, e.tokens["acme/agent"], ""); s.resp.StatusCode != 401 {
		t.Errorf("agent token: %d", s.resp.StatusCode)
	}
}

// TestDrainEndsStreams: Drain ends an open stream, so that Shutdown is not held by it.
func TestDrainEndsStreams(t *testing.T) {
	e := newEnv(t)
	e.submit("ci", nil)
	s := openStream(t, testutil.HangGuard(t, 20*time.Second), e.url+"/api/v0/organizations/acme/pipelines/ci/builds/1/events", e.tokens["acme/user"], "")
	done := make(chan []frame)
	go func() { done <- s.rest() }()
	time.Sleep(50 * time.Millisecond)
	e.srv.Drain()
	select {
	case fs := <-done:
		if len(fs) != 0 {
			t.Errorf("frames %+v", fs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end on Drain")
	}
}

// TestLogStreamGap: chunks stored after a gap (an agent's later call stored first) wait
// until the gap is filled, so the stream stays in seq order; a terminal job sends what is
// stored.
func TestLogStreamGap(t *testing.T) {
	e := newEnv(t)
	e.submit("ci", nil)
	jobID := e.jobs("ci", 1)[0].ID
	tok := logToken(t, e, 1)
	j := running(t, e, jobID)
	chunk := func(seq int64) store.LogChunk { return store.LogChunk{Seq: seq, Content: fmt.Sprint("l", seq, "\n")} }
	if _, err := e.db.AppendLogs(t.Context(), jobID, j.Attempt, []store.LogChunk{chunk(1), chunk(3)}); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, testutil.HangGuard(t, 20*time.Second), e.url+"/v0/jobs/"+jobID+"/logs?token="+tok, e.tokens["acme/user"], "")
	f, _ := s.next()
	if want := `{"chunks":[{"seq":1,"stream_kind":0,"content":"l1\n","ts":null}]}`; f.Data != want {
		t.Errorf("history = %s, want only the chunk before the gap: %s", f.Data, want)
	}
	if _, err := e.db.AppendLogs(t.Context(), jobID, j.Attempt, []store.LogChunk{chunk(2), chunk(5)}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2", "3"} {
		if f, _ := s.next(); f.ID != want {
			t.Errorf("frame %+v, want chunk %s", f, want)
		}
	}
	// The job ends with 4 never stored: 5 is sent all the same, then done.
	if _, err := e.db.FinishJob(t.Context(), jobID, j.Attempt, store.Finish{ExitCode: 0, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rest := s.rest()
	if len(rest) != 2 || rest[0].ID != "5" || rest[1].Event != "done" {
		t.Errorf("end of stream: %+v", rest)
	}
}
