package agent

import (
	"context"
	"encoding/json"
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
