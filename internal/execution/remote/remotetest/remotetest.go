// Package remotetest runs a real hm server for tests of its clients: internal/server on a
// SQLite store in a temp dir (or a store the test opened: NewOn), served on 127.0.0.1, with the scheduling driver running every
// submitted build and a fake agent running the steps' scripts in process. It is not the agent.
package remotetest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/server"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
	"github.com/hmci/hm/internal/store/sqlite"
)

// Env is a real hm server (internal/server on a SQLite store, or the one given to NewOn) on
// 127.0.0.1, with the scheduling driver running every submitted build and a fake agent
// running its steps. A step's command is a script of ';'-separated words: print TEXT, gate NAME (wait until the
// test opens it), block (until stopped), exit N.
type Env struct {
	URL   string // the server's base URL
	DB    store.Store
	Token string // a user token of the org "acme"

	mu      sync.Mutex
	calls   []string // "METHOD path" of every request
	resumes []string // Last-Event-ID of every event stream request
	gates   map[string]chan struct{}
}

// New starts an Env on a SQLite store in a temp dir; it stops when the test ends.
func New(t testing.TB) *Env {
	t.Helper()
	db, err := sqlite.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return NewOn(t, db)
}

// NewOn starts an Env on db, a fresh store (its own schema: another driver, PostgreSQL);
// the Env closes it when the test ends.
func NewOn(t testing.TB, db store.Store) *Env {
	t.Helper()
	dir := t.TempDir()
	ctx, stop := context.WithCancel(context.Background())
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
	e := &Env{DB: db, gates: map[string]chan struct{}{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.calls = append(e.calls, r.Method+" "+r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/events") {
			e.resumes = append(e.resumes, r.Header.Get("Last-Event-ID"))
		}
		e.mu.Unlock()
		srv.ServeHTTP(w, r)
	}))
	e.URL = hs.URL
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
	e.Token = secret
	wg.Add(2)
	go func() { defer wg.Done(); e.drive(ctx) }()
	go func() { defer wg.Done(); e.agent(ctx, org.ID) }()
	return e
}

// drive starts a driver for every unfinished build, as hm server does.
func (e *Env) drive(ctx context.Context) {
	started := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for e.tick(ctx) {
		bs, err := e.DB.ListUnfinishedBuilds(ctx)
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
				driver.Drive(ctx, driver.Config{Store: e.DB, Owner: "test", Poll: 5 * time.Millisecond, Backend: "fake"}, b.ID)
			}()
		}
	}
}

func (e *Env) tick(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(5 * time.Millisecond):
		return true
	}
}

// agent claims jobs and runs their scripts.
func (e *Env) agent(ctx context.Context, orgID string) {
	if _, err := e.DB.UpsertAgent(ctx, store.Agent{ID: "agent-1", Name: "agent-1"}, time.Now()); err != nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for e.tick(ctx) {
		j, ok, err := e.DB.ClaimJob(ctx, store.Claim{AgentID: "agent-1", OrgID: orgID, Now: time.Now(), LeaseTTL: time.Minute})
		if err != nil || !ok {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); e.exec(ctx, j) }()
	}
}

func (e *Env) exec(ctx context.Context, j store.Job) {
	if _, err := e.DB.StartJob(ctx, j.ID, j.Attempt, time.Now()); err != nil {
		return
	}
	var seq int64
	stopped := func() bool {
		h, err := e.DB.Heartbeat(ctx, j.ID, j.Attempt, time.Now(), time.Minute)
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
			e.DB.AppendLogs(ctx, j.ID, j.Attempt, []store.LogChunk{{Seq: seq, Stream: store.StreamStdout, Content: strings.Join(f[1:], " "), TS: time.Now()}})
		case "gate":
			select {
			case <-e.Gate(f[1]):
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
	e.DB.FinishJob(context.WithoutCancel(ctx), j.ID, j.Attempt, f)
}

// Gate is the gate NAME of the scripts: close it to let them on.
func (e *Env) Gate(name string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gates[name] == nil {
		e.gates[name] = make(chan struct{})
	}
	return e.gates[name]
}

// Count is the number of requests whose "METHOD path" has prefix and suffix.
func (e *Env) Count(prefix, suffix string) int {
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

// Stored is the build's event stream as the store holds it.
func (e *Env) Stored(t testing.TB, runID string) []events.Event {
	t.Helper()
	evs, err := e.DB.ListEvents(context.Background(), runID, 0, 100000)
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

// Resumes is the Last-Event-ID of every event stream request, in order.
func (e *Env) Resumes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.resumes...)
}
