package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/agentproto"
)

// TestShipperBatchesByBytes: a burst of 1 MiB lines, each byte escaped to 6 in JSON ('<'), is
// shipped in calls that each fit the server's body cap, all lines once and in order.
func TestShipperBatchesByBytes(t *testing.T) {
	var mu sync.Mutex
	var got []agentproto.Chunk
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, agentproto.MaxLogsBody)
		var req agentproto.Logs
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, c := range req.Chunks {
			if c.Seq == int64(len(got)+1) {
				got = append(got, c)
			}
		}
		_ = json.NewEncoder(w).Encode(agentproto.LogsAck{Contiguous: int64(len(got))})
	}))
	defer hs.Close()
	c := &client{base: hs.URL, token: "t", hc: hs.Client(), timeout: time.Minute, minBackoff: time.Millisecond, maxBackoff: time.Millisecond}
	s := newShipper(c, "job", 1)
	const n = 8 // 48 MiB of JSON in one call without a byte bound
	line := strings.Repeat("<", 1<<20)
	for range n {
		s.add(agentproto.Stdout, line) // queued before run: one burst
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go s.run(ctx)
	last, err := s.close(ctx)
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	if last != n || len(got) != n {
		t.Fatalf("last seq %d, %d chunks stored, want %d", last, len(got), n)
	}
	for i, ch := range got {
		if ch.Content != line {
			t.Fatalf("chunk %d: %d bytes", i, len(ch.Content))
		}
	}
}

// TestShipperPipelinedResends: with two calls in flight, replies out of order, calls refused
// before storing (503) and replies lost after storing (503 once the chunks are in), every
// line reaches the server once, in order, and no more than the window is ever in flight.
func TestShipperPipelinedResends(t *testing.T) {
	var mu sync.Mutex
	stored := map[int64]string{}
	var contiguous int64
	calls, inflight, maxInflight := 0, 0, 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.Logs
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls++
		k := calls
		inflight++
		maxInflight = max(maxInflight, inflight)
		mu.Unlock()
		defer func() { mu.Lock(); inflight--; mu.Unlock() }()
		// Odd calls are slow, so the next one overtakes them and is answered first.
		if k%2 == 1 {
			time.Sleep(20 * time.Millisecond)
		}
		if k%7 == 3 {
			http.Error(w, "refused before storing", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		for _, c := range req.Chunks {
			if _, ok := stored[c.Seq]; !ok {
				stored[c.Seq] = c.Content
			}
		}
		for stored[contiguous+1] != "" {
			contiguous++
		}
		n := contiguous
		mu.Unlock()
		if k%5 == 4 {
			http.Error(w, "reply lost after storing", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(agentproto.LogsAck{Contiguous: n})
	}))
	defer hs.Close()
	c := &client{base: hs.URL, token: "t", hc: hs.Client(), timeout: time.Minute, minBackoff: time.Millisecond, maxBackoff: time.Millisecond}
	s := newShipper(c, "job", 1)
	const n = 20000
	for i := range n {
		s.add(agentproto.Stdout, fmt.Sprintf("line %d", i+1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go s.run(ctx)
	// More lines while calls are in flight.
	for i := n; i < 2*n; i++ {
		s.add(agentproto.Stdout, fmt.Sprintf("line %d", i+1))
	}
	last, err := s.close(ctx)
	if err != nil {
		t.Fatalf("close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if last != 2*n || contiguous != 2*n || len(stored) != 2*n {
		t.Fatalf("last seq %d, contiguous %d, %d stored; want %d", last, contiguous, len(stored), 2*n)
	}
	for i := int64(1); i <= 2*n; i++ {
		if stored[i] != fmt.Sprintf("line %d", i) {
			t.Fatalf("seq %d = %q", i, stored[i])
		}
	}
	if maxInflight > s.window || maxInflight < 2 {
		t.Errorf("at most %d calls were in flight at once, want the window (%d)", maxInflight, s.window)
	}
}
