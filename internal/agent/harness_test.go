package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hmci/hm/internal/agent"
	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/server"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/server/servertest"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/testutil"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/host"
)

// env is a real server (internal/server on a real store, SQLite unless envOpts.driver says,
// served on 127.0.0.1) with its driver manager and lease reaper, one org, a user and an agent
// token.
type env struct {
	t         *testing.T
	ctx       context.Context
	db        store.Store
	dir       string // the server's data: the database file, the blobs
	url       string
	user      string
	agentTok  string
	logs      *testutil.SyncBuffer
	srcDigest string
	srcB64    string
}

type envOpts struct {
	leaseTTL   time.Duration
	maxRetries int // < 0: none
	// finishNextWait is the server's Config.FinishNextWait (0: its default).
	finishNextWait time.Duration
	// driver is the store's (servertest.OpenDriver; "" for sqlite).
	driver string
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.leaseTTL == 0 {
		o.leaseTTL = 3 * time.Second
	}
	ctx := testutil.HangGuard(t, 60*time.Second)
	if o.driver == "" {
		o.driver = "sqlite"
	}
	st := servertest.OpenDriver(ctx, t, o.driver)
	db, dir := st.Store, st.Dir
	key, err := server.LoadLogKey(filepath.Join(dir, "log-token.key"))
	if err != nil {
		t.Fatal(err)
	}
	skey, err := server.LoadKey(filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := secret.NewSealer(skey)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	mgr := &driver.Manager{Driver: driver.Config{Store: db, Owner: "test-server", Poll: 20 * time.Millisecond, LeaseTTL: 3 * time.Second, Secrets: sealer},
		Scan: 500 * time.Millisecond, Reap: 100 * time.Millisecond, MaxRetries: o.maxRetries, AgentTTL: o.leaseTTL, Logger: logger}
	srv, err := server.New(server.Config{Store: db, Blobs: st.Blobs, LogKey: key, Secrets: sealer, PollInterval: 20 * time.Millisecond,
		AgentLeaseTTL: o.leaseTTL, FinishNextWait: o.finishNextWait, OnBuild: mgr.Kick, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv) // 127.0.0.1
	mctx, stopMgr := context.WithCancel(context.Background())
	mdone := make(chan struct{})
	go func() { defer close(mdone); mgr.Run(mctx) }()
	t.Cleanup(func() {
		srv.Drain()
		stopMgr()
		<-mdone
		hs.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	e := &env{t: t, ctx: ctx, db: db, dir: dir, url: hs.URL, logs: logs}
	tokens := st.Org(ctx, t, "acme")
	e.user, e.agentTok = tokens[store.TokenUser], tokens[store.TokenAgent]
	e.packSource()
	return e
}

// packSource packs a small source tree the way a client does.
func (e *env) packSource() {
	src := e.t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from source\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	tree, err := source.Pack(e.ctx, src, source.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := tree.WriteArchive(e.ctx, e.t.TempDir())
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(a.Path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srcDigest, e.srcB64 = a.Digest, base64.StdEncoding.EncodeToString(b)
}

// request is one API call; it returns the status and body.
func (e *env) request(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// submit creates a build of ir through the Harmont createBuild API; it returns its id.
func (e *env) submit(ir string, opts map[string]any, secrets ...map[string]string) store.Build {
	e.t.Helper()
	body := map[string]any{"branch": "main", "commit": "abc", "pipeline_ir": ir, "source_b64": e.srcB64}
	if opts != nil {
		body["hm_options"] = opts
	}
	if len(secrets) > 0 {
		body["hm_secrets"] = secrets[0]
	}
	code, b := e.request("POST", "/api/v0/organizations/acme/pipelines/ci/builds", e.user, body)
	if code != http.StatusCreated {
		e.t.Fatalf("createBuild: %d %s", code, b)
	}
	var v struct {
		Number int64 `json:"number"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatal(err)
	}
	o, _ := e.db.GetOrgBySlug(e.ctx, "acme")
	p, err := e.db.GetPipeline(e.ctx, o.ID, "ci")
	if err != nil {
		e.t.Fatal(err)
	}
	bd, err := e.db.GetBuildByNumber(e.ctx, p.ID, v.Number)
	if err != nil {
		e.t.Fatal(err)
	}
	return bd
}

// waitFor polls cond (bounded: the test's hang guard) until it holds.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	for !cond() {
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (e *env) build(id string) store.Build {
	b, err := e.db.GetBuild(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) waitBuild(id string) store.Build {
	e.t.Helper()
	var b store.Build
	e.waitFor("build "+id+" to end", func() bool { b = e.build(id); return b.State.Terminal() })
	return b
}

func (e *env) jobs(buildID string) map[string]store.Job {
	js, err := e.db.ListJobs(e.ctx, buildID)
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]store.Job{}
	for _, j := range js {
		m[j.StepKey] = j
	}
	return m
}

func (e *env) logLines(j store.Job, attempt int) []store.LogChunk {
	cs, err := e.db.ListLogs(e.ctx, j.ID, attempt, 0, 100000)
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

// runningAgent is an agent started by a test.
type runningAgent struct {
	a    *agent.Agent
	kill context.CancelFunc
	done chan error
	tr   *flaky
}

type agentOpts struct {
	backend vm.Backend
	token   string
	slots   int
	state   string        // the agent's state dir (its id); default a new one
	alive   time.Duration // Config.AlivePeriod
	// cutAfter cuts the agent's connection once a request it matches was answered.
	cutAfter func(*http.Request) bool
	// claimApart strips Next from the agent's Finish calls: it claims each step with a
	// Claim of its own (as an agent without Finish.Next does), so that a step released
	// after a finish waits for that claim.
	claimApart bool
	// dropReply loses the reply of each request it matches: the server answered it, the
	// agent sees the connection cut (the call's retry then goes through unless matched too).
	dropReply func(*http.Request) bool
}

// startAgent runs a real agent (host backend unless told) against the server.
func (e *env) startAgent(o agentOpts) *runningAgent {
	e.t.Helper()
	state := o.state
	if state == "" {
		state = e.t.TempDir()
	}
	if o.backend == nil {
		o.backend = host.New(state)
	}
	if o.token == "" {
		o.token = e.agentTok
	}
	tr := &flaky{base: http.DefaultTransport, cutAfter: o.cutAfter, claimApart: o.claimApart, dropReply: o.dropReply}
	a, err := agent.New(agent.Config{Server: e.url, Token: o.token, Backend: o.backend, StateDir: state, Slots: o.slots,
		HTTP: &http.Client{Transport: tr}, StopPoll: 200 * time.Millisecond, ClaimWait: 2 * time.Second, AlivePeriod: o.alive,
		Logger: slog.New(slog.NewTextHandler(e.logs, nil))})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, kill := context.WithCancel(e.ctx)
	ra := &runningAgent{a: a, kill: kill, done: make(chan error, 1), tr: tr}
	go func() { ra.done <- a.Run(ctx) }()
	e.t.Cleanup(func() { ra.stop(e.t) })
	return ra
}

// stop kills the agent (its steps too) and waits for it.
func (ra *runningAgent) stop(t *testing.T) error {
	ra.kill()
	select {
	case err := <-ra.done:
		ra.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
		return nil
	}
}

// flaky is a transport a test can cut: while down every request fails as a refused
// connection would.
type flaky struct {
	base http.RoundTripper
	down atomic.Bool
	hits atomic.Int64 // requests refused
	// sent is every Logs and Finish body the agent sent: what it uploads, before the server
	// sees it.
	sent testutil.SyncBuffer
	// cutAfter, when set, cuts the connection once a request it matches was answered.
	cutAfter func(*http.Request) bool
	// claimApart strips Next from Finish bodies (agentOpts.claimApart).
	claimApart bool
	// dropReply loses the replies it matches (agentOpts.dropReply); dropped counts them.
	dropReply func(*http.Request) bool
	dropped   atomic.Int64
	// claims counts Claim calls answered with a job; nexts Finish calls answered with one
	// (replies the agent got, not the dropped ones).
	claims, nexts atomic.Int64
}

var errCut = errors.New("connection cut by the test")

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	if f.down.Load() {
		f.hits.Add(1)
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errCut
	}
	if p := r.URL.Path; r.Body != nil && (strings.HasSuffix(p, "/logs") || strings.HasSuffix(p, "/finish")) {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		f.sent.Write(append(b, '\n'))
		if f.claimApart && strings.HasSuffix(p, "/finish") {
			var fin agentproto.Finish
			if err := json.Unmarshal(b, &fin); err != nil {
				return nil, err
			}
			fin.Next = nil
			if b, err = json.Marshal(fin); err != nil {
				return nil, err
			}
			r.ContentLength = int64(len(b))
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := f.base.RoundTrip(r)
	if err == nil && f.dropReply != nil && f.dropReply(r) {
		// The whole answer is read first: the server's handler has returned, its writes
		// are committed.
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		f.dropped.Add(1)
		return nil, errCut
	}
	if err == nil && resp.StatusCode == http.StatusOK {
		switch p := r.URL.Path; {
		case strings.HasSuffix(p, "/claim"):
			f.claims.Add(1)
		case strings.HasSuffix(p, "/finish"):
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr != nil {
				return nil, rerr
			}
			var st agentproto.State
			if json.Unmarshal(b, &st) == nil && st.Next != nil {
				f.nexts.Add(1)
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
	}
	if err == nil && f.cutAfter != nil && f.cutAfter(r) {
		f.down.Store(true)
	}
	return resp, err
}

func ir(steps ...string) string {
	return fmt.Sprintf(`{"version":"0","default_image":"host","steps":[%s]}`, join(steps))
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

func step(key, cmd string, extra ...string) string {
	s := fmt.Sprintf(`{"type":"command","key":%q,"cmd":%q`, key, cmd)
	for _, x := range extra {
		s += "," + x
	}
	return s + "}"
}
