package buildlog

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hmci/hm/internal/events"
)

// Info is what a record needs that the events do not say, and the pruning limits.
type Info struct {
	Pipeline, SourceDir, Backend string
	// Artifacts is the directory the build's artifacts go to, a build's in Artifacts/ID
	// (scheduler.Options.ArtifactsDir); pruning the record removes them too.
	Artifacts string
	// Keep is how many builds to keep, this one included (0: no count limit); MaxAge how old
	// a build may get (0: no age limit).
	Keep   int
	MaxAge time.Duration
}

// Recording tees a build's event stream into the store.
type Recording struct {
	c    chan events.Event
	done chan struct{}

	mu  sync.Mutex
	id  string
	err error
}

// Record prunes the store, then passes every event of in through to C while writing it to
// the record of the build that build_start names. The returned error says the store cannot
// be written at all (a read-only or full state dir): the stream is then passed through
// unrecorded. A later write failure stops the recording, never the stream; see Err.
// C is closed after the record is complete.
func (s *Store) Record(in <-chan events.Event, info Info) (*Recording, error) {
	r := &Recording{c: make(chan events.Event), done: make(chan struct{})}
	if err := s.probe(); err != nil {
		r.err = err
		go r.pass(in)
		return r, err
	}
	keep := -1
	if info.Keep > 0 {
		keep = info.Keep - 1 // room for this one
	}
	_, _ = s.Prune(keep, info.MaxAge, time.Now()) // a build that cannot be pruned now is pruned next time
	go r.record(s, in, info)
	return r, nil
}

// probe checks that a build's directory can be created, before any output is drawn, so the
// warning comes first rather than in the middle of the live view.
func (s *Store) probe() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// C delivers the events of in, in order.
func (r *Recording) C() <-chan events.Event { return r.c }

// Wait blocks until in is drained and the record is complete.
func (r *Recording) Wait() { <-r.done }

// ID is the recorded build's id, or "" when nothing is (being) recorded.
func (r *Recording) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return ""
	}
	return r.id
}

// Err is the failure that stopped the recording, if any.
func (r *Recording) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *Recording) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *Recording) pass(in <-chan events.Event) {
	defer close(r.done)
	defer close(r.c)
	for ev := range in {
		r.c <- ev
	}
}

func (r *Recording) record(s *Store, in <-chan events.Event, info Info) {
	defer close(r.done)
	defer close(r.c)
	var w *Writer
	stop := func(err error) {
		r.fail(err)
		if w != nil {
			_ = w.Close()
			w = nil
		}
	}
	failed := false
	for ev := range in {
		if bs := ev.BuildStart; bs != nil && w == nil && !failed {
			var err error
			w, err = s.Create(Meta{ID: bs.RunID, Pipeline: info.Pipeline, SourceDir: info.SourceDir,
				Backend: info.Backend, StartedAt: bs.StartedAt, Artifacts: artifactsOf(info, bs.RunID)})
			if err != nil {
				failed = true
				stop(fmt.Errorf("cannot create the build's record: %w", err))
			} else {
				r.mu.Lock()
				r.id = bs.RunID
				r.mu.Unlock()
			}
		}
		if w != nil {
			wire, err := w.write(ev)
			if err != nil {
				failed = true
				stop(fmt.Errorf("cannot write the build's record: %w", err))
			} else if ev.Wire == nil {
				ev.Wire = wire // encoded once, for the NDJSON output too
			}
		}
		// Written before it is passed on, so whatever a consumer has seen is already on disk.
		r.c <- ev
	}
	if w != nil {
		if err := w.Close(); err != nil {
			r.fail(err)
		}
	}
}

func artifactsOf(info Info, id string) string {
	if info.Artifacts == "" {
		return ""
	}
	return filepath.Join(info.Artifacts, id)
}
