package events

import "sync"

// Queue is an unbounded, lossless FIFO between the engine (many producers) and one consumer.
//
// Publish never blocks and never drops, however slowly C is drained: a slow terminal or NDJSON
// pipe must not stall steps nor lose log lines (FIX over hm-exec, which dropped events). Order
// is the order of Publish calls, so events of one step, published from one goroutine, stay in
// order. Memory grows while the consumer lags; that is the price of losslessness.
//
// Publish and Close are safe for concurrent use. Publish after Close is a no-op.
type Queue struct {
	mu     sync.Mutex
	buf    []Event
	closed bool
	wake   chan struct{}
	out    chan Event
}

// NewQueue starts the queue's delivery goroutine; it ends after Close once all events have been
// received from C.
func NewQueue() *Queue {
	q := &Queue{wake: make(chan struct{}, 1), out: make(chan Event)}
	go q.pump()
	return q
}

// C delivers events in publish order and is closed after Close when the queue is drained.
func (q *Queue) C() <-chan Event { return q.out }

// Publish appends e.
func (q *Queue) Publish(e Event) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.buf = append(q.buf, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close marks the end of the stream; events already published are still delivered.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *Queue) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		batch := q.buf
		q.buf = nil
		closed := q.closed
		q.mu.Unlock()
		for i := range batch {
			q.out <- batch[i]
			batch[i] = Event{} // let delivered payloads be collected while the rest waits
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			return
		}
		<-q.wake
	}
}
