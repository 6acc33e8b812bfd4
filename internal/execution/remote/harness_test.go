package remote

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/prepare"
	"github.com/hmci/hm/internal/server"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
	"github.com/hmci/hm/internal/store/sqlite"
)

// env is a real hm server (internal/server on a SQLite store) on 127.0.0.1, with the
// scheduling driver running every submitted build and a fake agent running its steps. A
// step's command is a script of ';'-separated words: print TEXT, gate NAME (wait until the
// test opens it), block (until stopped), exit N.
type env struct {
	t     *testing.T
	url   string
	db    *sqlite.DB
	token string

	mu      sync.Mutex
	calls   []string // "METHOD path" of every request
	resumes []string // Last-Event-ID of every event stream request
	gates   map[string]chan struct{}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ctx, stop := context.WithCancel(context.Background())
	db, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobdir.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := server.LoadLogKey(filepath.Join(dir, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: db, Blobs: blobs, LogKey: key, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, gates: map[string]chan struct{}{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.calls = append(e.calls, r.Method+" "+r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/events") {
			e.resumes = append(e.resumes, r.Header.Get("Last-Event-ID"))
		}
		e.mu.Unlock()
		srv.ServeHTTP(w, r)
	}))
	e.url = hs.URL
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop()
		srv.Drain()
		hs.Close()
		wg.Wait()
		db.Close()
	})
	org, err := db.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	secret, h := store.NewToken(store.TokenUser)
	if _, err := db.CreateToken(ctx, store.Token{OrgID: org.ID, Kind: store.TokenUser, Name: "t", Hash: h}); err != nil {
		t.Fatal(err)
	}
	e.token = secret
	wg.Add(2)
	go func() { defer wg.Done(); e.drive(ctx) }()
	go func() { defer wg.Done(); e.agent(ctx) }()
	return e
}

// drive starts a driver for every unfinished build, as hm server does.
func (e *env) drive(ctx context.Context) {
	started := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for e.tick(ctx) {
		bs, err := e.db.ListUnfinishedBuilds(ctx)
		if err != nil {
			continue
		}
		for _, b := range bs {
			if started[b.ID] {
				continue
			}
			started[b.ID] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				driver.Drive(ctx, driver.Config{Store: e.db, Owner: "test", Poll: 5 * time.Millisecond, Backend: "fake"}, b.ID)
			}()
		}
	}
}

func (e *env) tick(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(5 * time.Millisecond):
		return true
	}
}

// agent claims jobs and runs their scripts.
func (e *env) agent(ctx context.Context) {
	if _, err := e.db.UpsertAgent(ctx, store.Agent{ID: "agent-1", Name: "agent-1"}, time.Now()); err != nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for e.tick(ctx) {
		j, ok, err := e.db.ClaimJob(ctx, store.Claim{AgentID: "agent-1", Now: time.Now(), LeaseTTL: time.Minute})
		if err != nil || !ok {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); e.exec(ctx, j) }()
	}
}

func (e *env) exec(ctx context.Context, j store.Job) {
	if _, err := e.db.StartJob(ctx, j.ID, j.Attempt, time.Now()); err != nil {
		return
	}
	var seq int64
	stopped := func() bool {
		h, err := e.db.Heartbeat(ctx, j.ID, j.Attempt, time.Now(), time.Minute)
		return err != nil || h.State.Stopping()
	}
	code := 0
words:
	for _, w := range strings.Split(j.Command, ";") {
		f := strings.Fields(w)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "print":
			seq++
			e.db.AppendLogs(ctx, j.ID, j.Attempt, []store.LogChunk{{Seq: seq, Stream: store.StreamStdout, Content: strings.Join(f[1:], " "), TS: time.Now()}})
		case "gate":
			select {
			case <-e.gate(f[1]):
			case <-ctx.Done():
				return
			}
		case "block":
			for !stopped() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			code = 130
			break words
		case "exit":
			code, _ = strconv.Atoi(f[1])
			break words
		}
	}
	f := store.Finish{ExitCode: code, Now: time.Now()}
	if code == 0 {
		f.Snapshot = "snap-" + j.StepKey
	}
	e.db.FinishJob(context.WithoutCancel(ctx), j.ID, j.Attempt, f)
}

func (e *env) gate(name string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gates[name] == nil {
		e.gates[name] = make(chan struct{})
	}
	return e.gates[name]
}

func (e *env) count(prefix, suffix string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.calls {
		if strings.HasPrefix(c, prefix) && strings.HasSuffix(c, suffix) {
			n++
		}
	}
	return n
}

// backend is a remote backend for the env's org.
func (e *env) backend(url string) *Backend {
	return &Backend{Server: url, Token: e.token, Org: "acme", RetryDelay: 10 * time.Millisecond}
}

// stored is the build's event stream as the store holds it.
func (e *env) stored(t *testing.T, runID string) []events.Event {
	t.Helper()
	evs, err := e.db.ListEvents(context.Background(), runID, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for _, se := range evs {
		var ev events.Event
		if err := ev.UnmarshalJSON(se.Payload); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// prepared is a build of doc (IR JSON) from a small source tree.
func prepared(t *testing.T, doc string, o prepare.Options) *prepare.Build {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if o.Parallelism == 0 {
		o.Parallelism = 2
	}
	b, err := prepare.New(context.Background(), prepare.Input{IR: []byte(doc), Slug: "ci", Dir: dir, Options: o, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// collect reads every event of h until the channel closes, then Waits; a hang guard fails
// the test instead of blocking it. each, when set, sees every event as it arrives.
func collect(t *testing.T, h execution.Handle, each func(events.Event)) ([]events.Event, execution.Outcome) {
	t.Helper()
	guard := time.NewTimer(30 * time.Second)
	defer guard.Stop()
	var evs []events.Event
	for {
		select {
		case ev, ok := <-h.Events():
			if !ok {
				return evs, h.Wait()
			}
			evs = append(evs, ev)
			if each != nil {
				each(ev)
			}
		case <-guard.C:
			t.Fatalf("hang: the build's events did not end; got %d", len(evs))
		}
	}
}

// proxy forwards TCP connections to target until cut closes every open one.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
