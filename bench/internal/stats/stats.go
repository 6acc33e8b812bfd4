// Package stats holds the order statistics the bench commands report.
package stats

import (
	"slices"
	"time"
)

// Median is the middle sample (the upper one of an even count); 0 of none.
func Median(d []time.Duration) time.Duration { return Pct(d, 0.5) }

// Pct is the sample nearest the p-th quantile (0 ≤ p ≤ 1); 0 of none.
func Pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1)+0.5)]
}
