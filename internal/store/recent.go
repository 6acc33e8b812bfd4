package store

import (
	"bytes"
	"sync"
	"time"
)

// RecentEvents keeps, per build, the last events this process appended, so that the
// readers of the same process (the build's event streams, its next driver) read them from
// memory instead of reading back and unpacking the rows just written: that read-back was
// the largest store cost of an event stream following a big log. The store stays the
// source of truth: the cache answers only a read whose start it holds, and only with
// events it holds.
//
// It is exact because a build's stream is append-only and gap-free, and its seqs are taken
// in the appending transaction: once committed, the events of [first, last] never change.
// A run of the cache is the events of consecutive appends of this process; an append that
// does not follow on (another process or replica appended in between, or two appends of
// this one finishing out of order) starts a new run. What another process appended after
// a run's last event is not in it: a read from there goes to the store, and a read that
// ends at the run's last event is a page shorter than the limit, which is what a read
// made just before that other append would have answered (readers go on from the last
// seq they got, as from any short page).
//
// Bounded: per build the last recentEvents events and recentBytes bytes of payload, and
// at most recentBuilds builds and recentTotal bytes in all (the least recently used builds
// dropped first).
type RecentEvents struct {
	mu     sync.Mutex
	builds map[string]*eventRun
	bytes  int // of every run
	tick   uint64
}

// The cache's bounds: a stream reads a page of 1000 events at a time, and a step_log event
// is ~150 bytes, so 2 MiB hold the 8192 of a build's last appends. The server collects at
// GOGC=400: what is held here counts 5× in its heap's target.
const (
	recentBuilds = 64
	recentEvents = 8192
	recentBytes  = 2 << 20
	recentTotal  = 16 << 20
)

type eventRun struct {
	evs   []Event // consecutive seqs
	bytes int
	used  uint64
}

// AddPacks records the committed events of one append, as PackPayloads packed them for
// the store. The events of a pack of several share its payload (PackPayloads joined them
// into new bytes, and the store copies what it binds); a pack of one is the caller's
// payload, copied.
func (r *RecentEvents) AddPacks(buildID string, packs []EventPack, created time.Time) {
	if len(packs) == 0 {
		return
	}
	var evs []Event
	size := 0
	for _, p := range packs {
		size += len(p.Payload)
		if p.Count == 1 {
			evs = append(evs, Event{Seq: p.Seq, Payload: append([]byte(nil), p.Payload...), CreatedAt: created})
			continue
		}
		rest := p.Payload
		for i := range p.Count {
			one := rest
			if i < p.Count-1 {
				j := bytes.IndexByte(rest, '\n')
				if j < 0 {
					return // not PackPayloads' work: record nothing rather than guess
				}
				one, rest = rest[:j], rest[j+1:]
			}
			evs = append(evs, Event{Seq: p.Seq + int64(i), Payload: one[:len(one):len(one)], CreatedAt: created})
		}
	}
	first := evs[0].Seq
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.builds == nil {
		r.builds = map[string]*eventRun{}
	}
	r.tick++
	run := r.builds[buildID]
	if run == nil || run.evs[len(run.evs)-1].Seq+1 != first {
		if run == nil && len(r.builds) >= recentBuilds {
			r.evict()
		}
		if run != nil {
			r.bytes -= run.bytes
		}
		run = &eventRun{}
		r.builds[buildID] = run
	}
	run.used = r.tick
	run.evs = append(run.evs, evs...)
	run.bytes += size
	r.bytes += size
	drop := 0
	for len(run.evs)-drop > recentEvents || run.bytes > recentBytes && len(run.evs)-drop > 1 {
		run.bytes -= len(run.evs[drop].Payload)
		r.bytes -= len(run.evs[drop].Payload)
		drop++
	}
	if drop > 0 {
		// A new array: the dropped events' payloads are not kept alive by it.
		run.evs = append([]Event(nil), run.evs[drop:]...)
	}
	for r.bytes > recentTotal && len(r.builds) > 1 {
		r.evict()
	}
}

// Forget drops the build's events: it was deleted (store.Retention). Another process's cache
// may still hold some until they age out, never read: a reader looks the build up first,
// which answers not found.
func (r *RecentEvents) Forget(buildID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run, ok := r.builds[buildID]; ok {
		r.bytes -= run.bytes
		delete(r.builds, buildID)
	}
}

// evict drops the least recently used build (never the one used last: its tick is the
// newest).
func (r *RecentEvents) evict() {
	var old string
	var oldest *eventRun
	for id, run := range r.builds {
		if oldest == nil || run.used < oldest.used {
			old, oldest = id, run
		}
	}
	if oldest != nil {
		r.bytes -= oldest.bytes
		delete(r.builds, old)
	}
}

// After answers the events of the build after seq after, up to limit, when it holds the
// event after+1; ok false sends the read to the store. Payloads are shared: read-only.
func (r *RecentEvents) After(buildID string, after int64, limit int) (_ []Event, ok bool) {
	if limit <= 0 {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	run := r.builds[buildID]
	if run == nil {
		return nil, false
	}
	first, last := run.evs[0].Seq, run.evs[len(run.evs)-1].Seq
	if after+1 < first || after >= last {
		return nil, false
	}
	r.tick++
	run.used = r.tick
	i := int(after + 1 - first)
	n := min(limit, len(run.evs)-i)
	return append([]Event(nil), run.evs[i:i+n]...), true
}
