package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// firstGCPercent is GOGC until the first collection: with Go's default of 100 the first one
// comes at a 4 MiB heap, which a fully cached `hm run` reaches about halfway through. On 2
// cores its dedicated mark worker takes one of them for the cycle, in a process whose whole
// run is some 40 ms: interleaved, GOGC=400 made a fully cached 30-step Docker chain 10-17%
// faster (BENCHMARKS.md, issue #14). At 400 the first collection waits for a 16 MiB heap;
// from it on, GOGC is Go's default again, so a long build or `hm server` is collected as
// before and pays at most those 12 MiB once.
const firstGCPercent = 400

// deferFirstGC raises GOGC to firstGCPercent until the first collection has run, unless GOGC
// is set in the environment (which then rules, as always).
func deferFirstGC() {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	debug.SetGCPercent(firstGCPercent)
	// A cleanup runs after the collection that finds its object unreachable: the first one.
	// The object holds a pointer so that it is not batched with others by the tiny allocator,
	// whose blocks can outlive a collection.
	type sentinel struct{ _ *int }
	runtime.AddCleanup(new(sentinel), func(struct{}) { debug.SetGCPercent(100) }, struct{}{})
}
