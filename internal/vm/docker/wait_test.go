package docker

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// cutWaitProxy serves the Docker API on a socket of its own, forwarding to the daemon's,
// except that it answers every next-exit wait with its headers and then ends the body at
// once, as a proxy in front of the daemon does when it cuts a request idle for too long. It
// returns the address and the waits it saw (their condition).
func cutWaitProxy(t *testing.T) (host string, waits func() []string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker" },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", "/var/run/docker.sock")
		}},
		FlushInterval: -1,
	}
	var mu sync.Mutex
	var seen []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/wait") {
			cond := r.URL.Query().Get("condition")
			mu.Lock()
			seen = append(seen, cond)
			mu.Unlock()
			if cond == "next-exit" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK) // and no body: the client reads EOF
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// TestRunWaitCut: a step container's exit status is asked for before its start; when that
// request is cut on the way (here: by a proxy) the status is asked for again once the output
// has ended, and the step's own exit code and output still come back.
func TestRunWaitCut(t *testing.T) {
	host, waits := cutWaitProxy(t)
	b := newBackendOpts(t, Options{Host: host})
	img := resolve(t, b, testImage)
	m, err := b.Create(t.Context(), rootSpec(t, img, "echo out; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	defer destroy(t, m)
	var out strings.Builder
	code, err := m.Run(t.Context(), &out, nil)
	if err != nil || code != 3 || out.String() != "out\n" {
		t.Fatalf("Run = %d, %v, stdout %q; want 3, nil, %q", code, err, out.String(), "out\n")
	}
	if got, want := waits(), []string{"next-exit", "not-running"}; !slices.Equal(got, want) {
		t.Errorf("waits asked for %q, want %q", got, want)
	}
}
