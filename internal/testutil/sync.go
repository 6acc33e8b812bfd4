package testutil

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// HangGuard bounds a test: the context it returns ends after d, and in any case 5s before
// the test binary's deadline, so that a hung test fails itself instead of the whole binary
// timing out.
func HangGuard(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	if dl, ok := t.Deadline(); ok && time.Until(dl)-5*time.Second < d {
		d = time.Until(dl) - 5*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// SyncBuffer is a bytes.Buffer safe for a logger writing while a test reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
