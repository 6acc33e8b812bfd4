package proc

import "testing"

// BenchmarkKillCookie is what a step's end costs when it left nothing running: the scans of
// every process proving that none carries the cookie.
func BenchmarkKillCookie(b *testing.B) {
	c := NewCookie(Self())
	for b.Loop() {
		if n, all := KillCookie(c); n != 0 || !all {
			b.Fatalf("KillCookie = %d, %v", n, all)
		}
	}
}
