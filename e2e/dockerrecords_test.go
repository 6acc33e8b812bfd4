package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiLog is a reverse proxy in front of the Docker socket that records the paths asked.
type apiLog struct {
	mu    sync.Mutex
	paths []string
}

func (l *apiLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.paths
	l.paths = nil
	return p
}

func startAPILog(t *testing.T) (*apiLog, string) {
	t.Helper()
	return startDockerProxy(t, nil)
}

// startDockerProxy is startAPILog with hook called on every request before it is forwarded
// (it may hold the request back).
func startDockerProxy(t *testing.T, hook func(*http.Request)) (*apiLog, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l := &apiLog{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker" },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", "/var/run/docker.sock")
		}},
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.paths = append(l.paths, r.Method+" "+r.URL.Path)
		l.mu.Unlock()
		if hook != nil {
			hook(r)
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return l, "unix://" + sock
}

func listed(paths []string, what string) bool {
	for _, p := range paths {
		if strings.HasPrefix(p, "GET ") && strings.HasSuffix(p, "/"+what+"/json") {
			return true
		}
	}
	return false
}

// The Docker backend's crash recovery goes by owner records: a clean start after clean runs
// asks the daemon for no listing, and after hm was killed with kill -9 the next run, even a
// fully cached one that makes no container, finds the dead run's record and removes what it
// left (its containers, its ephemeral snapshots, the record).
func TestDockerKill9RecordRecovery(t *testing.T) {
	bc, ok := dockerBackend(t)
	if !ok {
		t.Skip("no docker backend")
	}
	e := newBackendEnv(t, bc)
	api, host := startAPILog(t)
	cached := graph(0, []string{stepJSON("a", "echo a > a.txt", `"image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}`)}, "")
	run := func(proxied bool) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := e.cmd(ctx, append([]string{"run"}, bc.args...)...)
		if proxied {
			c.Env = append(c.Env, "DOCKER_HOST="+host)
		}
		out, err := c.CombinedOutput()
		code := c.ProcessState.ExitCode()
		if err != nil && code <= 0 {
			t.Fatalf("hm run: %v\n%s", err, out)
		}
		return result{code: code, stderr: string(out)}
	}
	records := func() []string {
		m, _ := filepath.Glob(filepath.Join(e.stateDir, "docker", "owners", "*", "*"))
		return m
	}

	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": cached})
	if r := run(false); r.code != 0 {
		t.Fatalf("first run: exit %d\n%s", r.code, r.stderr)
	}
	if left := records(); len(left) > 0 {
		t.Errorf("a clean run left its owner record: %v", left)
	}
	api.take()
	if r := run(true); r.code != 0 {
		t.Fatalf("cached run: exit %d\n%s", r.code, r.stderr)
	}
	if paths := api.take(); listed(paths, "images") || listed(paths, "containers") || len(paths) == 0 {
		t.Errorf("a clean start after clean runs asked for a listing (or went around the proxy): %v", paths)
	}

	token := strconv.Itoa(int(time.Now().UnixNano()%900000) + 100000)
	stubborn := fmt.Sprintf(`sh -c 'trap "" TERM; sleep %s1' & echo ready; sleep %s2`, token, token)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{
		stepJSON("parent", "echo p > p.txt", `"image":"ubuntu:24.04"`), stepJSON("child", stubborn, ""),
	}, `[0,1,"builds_in"]`)})
	code, _ := runUntilReady(t, e, append([]string{"run", "--format", "json"}, bc.args...), func(c *exec.Cmd) error { return c.Process.Kill() })
	if code != -1 {
		t.Fatalf("exit %d, want killed", code)
	}
	if len(bc.leftovers(t, e.stateDir)) == 0 || len(records()) != 1 {
		t.Fatalf("kill -9 left no container, snapshot or record (records %v): the test would prove nothing", records())
	}

	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": cached})
	if r := run(true); r.code != 0 {
		t.Fatalf("cached run after kill -9: exit %d\n%s", r.code, r.stderr)
	}
	if paths := api.take(); !listed(paths, "images") {
		t.Errorf("the start after kill -9 did not reconcile in full: %v", paths)
	}
	if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
		t.Errorf("left behind after the next run: %v", left)
	}
	if left := records(); len(left) > 0 {
		t.Errorf("the dead run's record outlived the reconcile: %v", left)
	}
	if left := processesWith(token); len(left) > 0 {
		t.Errorf("step processes survived: %v", left)
	}
}
