package stats

import (
	"testing"
	"time"
)

func TestPct(t *testing.T) {
	for _, c := range []struct {
		d    []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{3}, 0.5, 3},
		{[]time.Duration{3, 1, 2}, 0.5, 2},
		{[]time.Duration{4, 1, 3, 2}, 0.5, 3}, // the upper middle, as s[len/2]
		{[]time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}, 0.9, 9},
		{[]time.Duration{2, 1}, 1, 2},
	} {
		if got := Pct(c.d, c.p); got != c.want {
			t.Errorf("Pct(%v, %v) = %v, want %v", c.d, c.p, got, c.want)
		}
	}
	if got := Median([]time.Duration{9, 1, 5}); got != 5 {
		t.Errorf("Median = %v, want 5", got)
	}
}
