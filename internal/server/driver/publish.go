package driver

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/store"
)

// publisher writes the scheduler's events to the store in publish order, from one
// goroutine, so that Publish never blocks the scheduler. See the package doc for the
// identity that drops the events of a replay already stored.
type publisher struct {
	life   context.Context
	st     store.Store
	build  store.Build
	epoch  int64
	now    func() time.Time
	jobs   map[string]string // step key → job id
	states map[string]store.JobState

	mu     sync.Mutex
	queue  []events.Event
	closed bool
	wake   chan struct{}
	done   chan struct{}
	err    error

	// writer-goroutine state
	ids      map[string]string   // the scheduler's step id → job id
	stored   map[string][]string // job id → kinds of its stored events, in order
	seen     map[string]int      // job id → events of it published by this run
	buildEv  map[events.Kind]bool
	Diverged int // replayed events whose kind differs from the stored one (appended anyway)
}

func newPublisher(life context.Context, st store.Store, b store.Build, epoch int64, jobs []store.Job, now func() time.Time) (*publisher, error) {
	p := &publisher{life: life, st: st, build: b, epoch: epoch, now: now,
		jobs: map[string]string{}, states: map[string]store.JobState{},
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		ids: map[string]string{}, stored: map[string][]string{}, seen: map[string]int{}, buildEv: map[events.Kind]bool{}}
	for _, j := range jobs {
		p.jobs[j.StepKey] = j.ID
	}
	var after int64
	for {
		evs, err := st.ListEvents(life, b.ID, after, 1000)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			break
		}
		for _, se := range evs {
			after = se.Seq
			e, err := events.Decode(se.Payload)
			if err != nil {
				return nil, fmt.Errorf("stored event %d: %w", se.Seq, err)
			}
			if id := e.StepID(); id != "" {
				p.stored[id] = append(p.stored[id], string(e.Kind))
			} else {
				p.buildEv[e.Kind] = true
			}
		}
	}
	go p.run()
	return p, nil
}

func (p *publisher) publish(e events.Event) {
	p.mu.Lock()
	if !p.closed {
		p.queue = append(p.queue, e)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close waits until every event published so far is written (or the driver stopped).
func (p *publisher) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
	return p.err
}

func (p *publisher) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		batch, closed := p.queue, p.closed
		p.queue = nil
		p.mu.Unlock()
		if len(batch) > 0 {
			if err := p.write(batch); err != nil {
				p.err = err
				return
			}
			continue
		}
		if closed {
			return
		}
		select {
		case <-p.wake:
		case <-p.life.Done():
			return
		}
	}
}

// write does the side effects of batch and appends what is new, in order, in one append.
func (p *publisher) write(batch []events.Event) error {
	var payloads [][]byte
	for _, e := range batch {
		// Nothing is written once the driver stopped: its last events are those of steps
		// it abandoned, not their outcome.
		if err := p.life.Err(); err != nil {
			return context.Cause(p.life)
		}
		e = p.rewrite(e)
		if err := p.sideEffect(e); err != nil {
			return err
		}
		if p.duplicate(e) {
			continue
		}
		b, err := events.Encode(e)
		if err != nil {
			return err
		}
		payloads = append(payloads, b)
	}
	for {
		_, err := p.st.AppendEventsFenced(p.life, p.build.ID, p.epoch, payloads...)
		if err == nil || store.IsConflict(err) || p.life.Err() != nil {
			return err
		}
		// A database hiccup: retry, in order, until the driver stops.
		select {
		case <-time.After(100 * time.Millisecond):
		case <-p.life.Done():
			return context.Cause(p.life)
		}
	}
}

// rewrite replaces the scheduler's step ids by job ids (stable across drivers).
func (p *publisher) rewrite(e events.Event) events.Event {
	if q := e.StepQueued; q != nil {
		p.ids[q.StepID] = p.jobs[q.Key]
	}
	e.Wire = nil // the payload changes below
	if j, ok := p.ids[e.StepID()]; ok && j != "" {
		e = e.WithStepID(j)
	}
	return e
}

// sideEffect mirrors the scheduler's decisions that involve no machine into the store. Each
// is idempotent: it is redone on a replay whether or not the event was stored.
func (p *publisher) sideEffect(e events.Event) error {
	switch {
	case e.StepSkipped != nil:
		_, err := p.st.SkipJob(p.life, e.StepSkipped.StepID, e.StepSkipped.Reason, p.now())
		if store.IsConflict(err) {
			err = nil // already past pending: a canceled step's machine ended it
		}
		return err
	case e.ChainFailed != nil:
		_, err := p.st.TransitionBuild(p.life, p.build.ID, []store.BuildState{store.BuildRunning}, store.BuildFailing,
			store.BuildUpdate{Now: p.now()})
		if store.IsConflict(err) {
			err = nil // failing already, or canceling
		}
		return err
	}
	return nil
}

// duplicate says e is already in the stored stream: the n-th event of its step, or a
// build-level event stored once.
func (p *publisher) duplicate(e events.Event) bool {
	id := e.StepID()
	if id == "" {
		if p.buildEv[e.Kind] {
			return true
		}
		p.buildEv[e.Kind] = true
		return false
	}
	n := p.seen[id]
	p.seen[id]++
	st := p.stored[id]
	if n >= len(st) {
		return false
	}
	if st[n] != string(e.Kind) {
		p.Diverged++
		return false
	}
	return true
}
