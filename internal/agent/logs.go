package agent

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hmci/hm/internal/agentproto"
)

// shipper sends one attempt's output lines to the server as chunks in seq order. Lines are
// numbered as they come (from 1) and kept until the server acknowledges them: each Logs
// reply's contiguous seq drops what it covers, and the next batch starts right after it, so
// a lost request, a lost reply or a connection cut only resends, never loses or reorders
// (the server ignores repeats). The buffer is bounded by bytes: a step that writes faster
// than the server takes blocks in its pipe's write, which is what a full pipe does anyway.
//
// Up to window calls are in flight at once (pipelining: the next batch is encoded and sent
// while the server stores the previous one). Each carries the chunks after those already
// sent; replies may come back in any order, and the highest contiguous seq any of them
// reports is what is dropped. When every call has returned and the server still lacks some
// of what was sent, sending starts again from its contiguous seq.
type shipper struct {
	c       *client
	path    string
	attempt int
	limit   int // bytes held before add blocks
	every   time.Duration
	window  int // calls in flight at most

	mu      sync.Mutex
	pending []agentproto.Chunk // seq acked+1 … next-1
	bytes   int
	next    int64
	acked   int64
	sent    int64         // the highest seq handed to a call (≥ acked)
	err     error         // the shipper gave up: ErrDropped, ErrAuth or the agent stopping
	wake    chan struct{} // a line was added (cap 1)
	freed   chan struct{} // the buffer shrank or the shipper ended (closed and replaced)
	done    chan struct{} // run returned
	closing chan struct{} // flush what is left and stop
}

func newShipper(c *client, jobID string, attempt int) *shipper {
	return &shipper{c: c, path: strings.Replace(agentproto.PathLogs, "{job_id}", jobID, 1), attempt: attempt,
		limit: 32 << 20, every: 50 * time.Millisecond, window: 2, next: 1,
		wake: make(chan struct{}, 1), freed: make(chan struct{}), done: make(chan struct{}), closing: make(chan struct{})}
}

// add queues a line; it blocks while the buffer is full, and drops the line once the
// shipper gave up (the work is dropped anyway).
func (s *shipper) add(stream int, line string) {
	s.mu.Lock()
	for s.err == nil && s.bytes >= s.limit {
		ch := s.freed
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
	if s.err == nil {
		s.pending = append(s.pending, agentproto.Chunk{Seq: s.next, Stream: stream, Content: line, TS: time.Now().UTC()})
		s.next++
		s.bytes += len(line) + 64
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run sends batches until close was called and everything is acknowledged, or it gives up.
func (s *shipper) run(ctx context.Context) {
	defer close(s.done)
	type reply struct {
		contiguous int64
		err        error
	}
	replies := make(chan reply, s.window)
	inflight := 0
	// On return, wait for the calls in flight: their replies are not needed any more, but
	// nothing of this shipper may outlive run.
	defer func() {
		for ; inflight > 0; inflight-- {
			<-replies
		}
	}()
	closing := false
	for {
		var batch []agentproto.Chunk
		s.mu.Lock()
		if inflight == 0 && s.sent > s.acked {
			s.sent = s.acked // every call returned and some of it is missing: resend
		}
		if inflight < s.window {
			rest := s.pending[s.sent-s.acked:]
			n := batchLen(rest)
			// A second call only for a full batch: measured, pipelining small batches
			// cost more calls and transactions than the overlap saved.
			if inflight == 0 || n < len(rest) || n == agentproto.MaxLogChunks {
				// A copy: the acks of other calls drop (and clear) the head of pending.
				batch = append([]agentproto.Chunk(nil), rest[:n]...)
			}
			if len(batch) > 0 {
				s.sent = batch[len(batch)-1].Seq
			}
		}
		s.mu.Unlock()
		if len(batch) > 0 {
			inflight++
			go func() {
				var ack agentproto.LogsAck
				_, err := s.c.call(ctx, http.MethodPost, s.path, agentproto.Logs{Attempt: s.attempt, Chunks: batch}, &ack, 0, nil)
				replies <- reply{ack.Contiguous, err}
			}()
			continue
		}
		if inflight > 0 {
			// Wait for a reply: the lines added meanwhile make the next batches.
			select {
			case r := <-replies:
				inflight--
				if r.err != nil {
					s.fail(r.err)
					return
				}
				s.ackTo(r.contiguous)
			case <-ctx.Done():
				s.fail(context.Cause(ctx))
				return
			}
			continue
		}
		if s.idle() {
			if closing {
				return
			}
			select {
			case <-s.wake:
			case <-s.closing:
				closing = true
			case <-ctx.Done():
				s.fail(context.Cause(ctx))
				return
			}
			// A short pause batches the lines a burst writes.
			t := time.NewTimer(s.every)
			select {
			case <-t.C:
			case <-s.closing:
				t.Stop()
				closing = true
			case <-ctx.Done():
				t.Stop()
				s.fail(context.Cause(ctx))
				return
			}
			continue
		}
	}
}

// idle says every line added so far is acknowledged.
func (s *shipper) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) == 0
}

// batchLen is how many of pending the next Logs call carries: at most MaxLogChunks, and no
// more than MaxLogBatchBytes of content (but at least one), so that no batch of long lines
// exceeds the server's body cap.
func batchLen(pending []agentproto.Chunk) int {
	n, size := 0, 0
	for n < len(pending) && n < agentproto.MaxLogChunks {
		size += len(pending[n].Content) + 64
		if n > 0 && size > agentproto.MaxLogBatchBytes {
			break
		}
		n++
	}
	return n
}

func (s *shipper) ackTo(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= s.acked {
		return
	}
	n = min(n, s.next-1)
	drop := int(n - s.acked)
	for _, c := range s.pending[:drop] {
		s.bytes -= len(c.Content) + 64
	}
	// Resliced, not copied: copying what is left on every ack made a long backlog
	// quadratic. The acked chunks are cleared so their lines can be collected; the array
	// is replaced by append's growth once the tail reaches its end.
	clear(s.pending[:drop])
	s.pending = s.pending[drop:]
	s.acked = n
	s.sent = max(s.sent, n)
	close(s.freed)
	s.freed = make(chan struct{})
}

func (s *shipper) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
		close(s.freed)
		s.freed = make(chan struct{})
	}
}

// close waits until every line added so far is acknowledged (or the shipper gave up, or ctx
// ended) and returns the last seq and the shipper's error.
func (s *shipper) close(ctx context.Context) (int64, error) {
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return 0, errors.Join(context.Cause(ctx), errors.New("logs not acknowledged"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next - 1, s.err
}

// writer is the io.Writer of one stream: whole lines to add (events.LineWriter splits).
func (s *shipper) stream(kind int) func(string) { return func(l string) { s.add(kind, l) } }
