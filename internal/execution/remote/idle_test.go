package remote

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestIdleWatch: a stream that keeps reading is never ended; once it reads nothing, it is
// ended with errIdle, and not before the idle timeout has passed since its last read.
func TestIdleWatch(t *testing.T) {
	h := &handle{idle: 100 * time.Millisecond}
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	w := h.watchIdle(stop)
	defer w.stop()
	for range 40 { // 400 ms of reads, 4 × the timeout
		time.Sleep(10 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatalf("ended while reading: %v", context.Cause(ctx))
		}
		w.seen.Add(1)
	}
	last := time.Now() // just after the last read
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second): // hang guard
		t.Fatal("a quiet stream was not ended")
	}
	if quiet := time.Since(last); quiet < h.idle {
		t.Errorf("ended after %v of quiet, before the %v timeout", quiet, h.idle)
	}
	if err := context.Cause(ctx); !errors.Is(err, errIdle) {
		t.Errorf("cause %v, want errIdle", err)
	}

	// Stopped, it ends nothing.
	ctx2, stop2 := context.WithCancelCause(context.Background())
	defer stop2(nil)
	h.watchIdle(stop2).stop()
	time.Sleep(3 * h.idle)
	if ctx2.Err() != nil {
		t.Errorf("a stopped watch ended the stream: %v", context.Cause(ctx2))
	}
}
