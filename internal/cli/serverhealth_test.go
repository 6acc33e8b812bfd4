package cli

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store/postgres/pgtest"
	"github.com/hmci/hm/internal/testutil"
)

// startServerCmd runs hm server with args until ctx ends; it returns its address and its exit.
func startServerCmd(t *testing.T, ctx context.Context, args ...string) (string, <-chan int, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	exit := make(chan int, 1)
	go func() {
		exit <- Main(ctx, append([]string{"server", "--listen", "127.0.0.1:0"}, args...), IO{Out: io.Discard, Err: logs})
	}()
	re := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1], exit, logs
		}
	}
	t.Fatalf("server did not start: %s", logs.String())
	return "", nil, nil
}

// probe answers the status code and status of GET path.
func probe(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct{ Status string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<10)).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, body.Status
}

func wantProbe(t *testing.T, addr, path string, code int, status string) {
	t.Helper()
	if c, s := probe(t, addr, path); c != code || s != status {
		t.Errorf("GET %s = %d %q, want %d %q", path, c, s, code, status)
	}
}

// On SIGTERM (here: the context) the server says not ready at once but keeps serving for
// --drain-delay, then drains and exits 0.
func TestServerProbesDraining(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, exit, logs := startServerCmd(t, ctx, "--data", t.TempDir(), "--drain-delay", "3s")
	wantProbe(t, addr, "/healthz", 200, "ok")
	wantProbe(t, addr, "/readyz", 200, "ready")
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, s := probe(t, addr, "/readyz")
		if c == 503 && s == "draining" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %q after the stop", c, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantProbe(t, addr, "/healthz", 200, "ok") // still up and serving during the delay
	wantProbe(t, addr, "/api/v0/ping", 200, "ok")
	select {
	case c := <-exit:
		if c != 0 {
			t.Errorf("exit %d: %s", c, logs.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatal("server did not stop")
	}
}

// On PostgreSQL, /readyz follows the database: not ready when its schema is behind this hm
// or when it does not answer, ready again when it is back; /healthz stays up throughout.
func TestServerProbesPostgres(t *testing.T) {
	dbURL := pgtest.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px := newCutProxy(t, u.Host)
	u.Host = px.addr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, exit, logs := startServerCmd(t, ctx, "--data", t.TempDir(), "--db", u.String())
	wantProbe(t, addr, "/readyz", 200, "ready")

	conn, err := pgx.Connect(context.Background(), dbURL) // direct, not through the proxy
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var top int
	if err := conn.QueryRow(context.Background(), `DELETE FROM hm_schema WHERE version = (SELECT max(version) FROM hm_schema) RETURNING version`).Scan(&top); err != nil {
		t.Fatal(err)
	}
	wantProbe(t, addr, "/readyz", 503, "store_not_migrated")
	if _, err := conn.Exec(context.Background(), `INSERT INTO hm_schema (version, applied_at) VALUES ($1, 0)`, top); err != nil {
		t.Fatal(err)
	}
	wantProbe(t, addr, "/readyz", 200, "ready")

	px.cut(true)
	wantProbe(t, addr, "/readyz", 503, "store_unreachable")
	wantProbe(t, addr, "/healthz", 200, "ok")
	px.cut(false)
	deadline := time.Now().Add(10 * time.Second)
	for c, s := probe(t, addr, "/readyz"); c != 200; c, s = probe(t, addr, "/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %q with the database back", c, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case c := <-exit:
		if c != 0 {
			t.Errorf("exit %d: %s", c, logs.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatal("server did not stop")
	}
}

// cutProxy forwards TCP to target; cut(true) closes every connection and refuses new ones.
type cutProxy struct {
	addr   string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
	target string
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), target: target}
	t.Cleanup(func() { ln.Close(); p.cut(true) })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				in.Close()
				continue
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				in.Close()
				continue
			}
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}
