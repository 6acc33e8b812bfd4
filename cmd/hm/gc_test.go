package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// gcPercent reads GOGC's current value (SetGCPercent returns the previous one).
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestDeferFirstGC: GOGC is firstGCPercent until the first collection and Go's default after
// it; a GOGC from the environment is left alone.
func TestDeferFirstGC(t *testing.T) {
	defer debug.SetGCPercent(gcPercent())
	t.Run("default", func(t *testing.T) {
		t.Setenv("GOGC", "") // set, so that t.Setenv restores it; unset below
		unsetenv(t, "GOGC")
		debug.SetGCPercent(100)
		deferFirstGC()
		if p := gcPercent(); p != firstGCPercent {
			t.Fatalf("GOGC %d before the first collection, want %d", p, firstGCPercent)
		}
		runtime.GC()
		deadline := time.Now().Add(10 * time.Second) // the cleanup runs in its own goroutine
		for gcPercent() != 100 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if p := gcPercent(); p != 100 {
			t.Errorf("GOGC %d after the first collection, want 100", p)
		}
	})
	t.Run("GOGC set", func(t *testing.T) {
		t.Setenv("GOGC", "50")
		debug.SetGCPercent(50)
		deferFirstGC()
		if p := gcPercent(); p != 50 {
			t.Errorf("GOGC %d, want the environment's 50", p)
		}
	})
}

// unsetenv unsets key for the rest of the test (t.Setenv beforehand restores it after).
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}
