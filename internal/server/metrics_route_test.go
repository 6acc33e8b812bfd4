package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/server/metrics"
)

// /metrics is served without a token when configured (as the probes are: a deployment keeps
// it off the public side of its proxy), and is no route otherwise.
func TestMetricsRoute(t *testing.T) {
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var m *metrics.Metrics
	e := newEnv(t, func(c *Config) {
		m = metrics.New(c.Store)
		c.Store = m.Store(c.Store)
		c.Metrics = m.Handler()
	})
	e.submit("ci", nil) // a build of pending jobs: store traffic the metrics saw
	code, body := get(e.url)
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, want := range []string{`hm_store_seconds_count{op="CreateBuild"} 1`, "hm_queue_depth 0", `hm_jobs{state="pending"} 3`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get(newEnv(t).url); code != 404 {
		t.Errorf("GET /metrics without Config.Metrics: %d, want 404", code)
	}
}
