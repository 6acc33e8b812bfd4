// Package wake is the in-process fan-out of the store's wake-ups (store.Watcher): a Hub that
// store drivers notify after each commit and that waiters subscribe to by topic. It is not a
// message bus: a notification carries no data, only "topic T changed, read the store again",
// and it is best effort (a waiter that is not listening, or sits in another process, misses
// it; waiters poll as a fallback).
//
// The SQLite driver notifies its Hub after every committed change, which wakes waiters of the
// same server process. A driver shared by several replicas (PostgreSQL) notifies its local Hub
// the same way and can bridge the low-rate topics (store.Topic.HighRate false: one per
// transition, never one per log line) to other replicas with NOTIFY on commit and a LISTEN
// connection that calls Notify on the receiving side.
package wake

import (
	"sync"

	"github.com/hmci/hm/internal/store"
)

// Hub fans notifications out to subscriptions. The zero value is ready to use.
type Hub struct {
	mu   sync.Mutex
	subs map[store.Topic]map[*sub]struct{}
}

type sub struct {
	c      chan struct{}
	topics []store.Topic
}

// Watch implements store.Watcher.
func (h *Hub) Watch(topics ...store.Topic) (<-chan struct{}, func()) {
	s := &sub{c: make(chan struct{}, 1), topics: topics}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[store.Topic]map[*sub]struct{}{}
	}
	for _, t := range topics {
		m := h.subs[t]
		if m == nil {
			m = map[*sub]struct{}{}
			h.subs[t] = m
		}
		m[s] = struct{}{}
	}
	h.mu.Unlock()
	var once sync.Once
	return s.c, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, t := range s.topics {
				if m := h.subs[t]; m != nil {
					delete(m, s)
					if len(m) == 0 {
						delete(h.subs, t)
					}
				}
			}
		})
	}
}

// Notify wakes every subscription of any of topics. It never blocks: a subscription with a
// wake-up pending already keeps that one.
func (h *Hub) Notify(topics ...store.Topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range topics {
		for s := range h.subs[t] {
			select {
			case s.c <- struct{}{}:
			default:
			}
		}
	}
}

// NotifyAll wakes every subscription: whatever they wait on may have changed (a bridge from
// other replicas reconnected after it may have missed notifications).
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			select {
			case s.c <- struct{}{}:
			default:
			}
		}
	}
}

// Watchers is how many subscriptions are open (tests: nothing leaks).
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[*sub]bool{}
	for _, m := range h.subs {
		for s := range m {
			seen[s] = true
		}
	}
	return len(seen)
}
