package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/scheduler"
)

// maxFrame bounds one SSE line: an event carries at most one log line, which a step may make
// as long as it likes; the server's record keeps 1 MiB lines and more.
const maxFrame = 80 << 20

// errIdle ends a stream connection that went quiet past the keep-alive.
var errIdle = errors.New("the event stream sent nothing, not even a keep-alive")

// handle is one submitted build: the watcher goroutine (run) owns the stream position and
// the outcome; Cancel only sends cancelBuild.
type handle struct {
	c         *client
	q         *events.Queue
	buildPath string
	retries   int
	delay     time.Duration
	idle      time.Duration
	// runID is the build's id; artifactsDir where its artifacts go once it ended
	// (download.go), "" for nowhere.
	runID, artifactsDir string
	// infraStep is the key of the first step that could not run (stepfail.go).
	infraStep string

	cancelOnce sync.Once
	cancel     chan struct{} // closed once cancelBuild was answered (or failed)
	cancelErr  error

	done chan struct{} // closed when run has ended; out is set then
	out  execution.Outcome
}

func (h *handle) Events() <-chan events.Event { return h.q.C() }

// Cancel sends one cancelBuild, whatever the number of calls; the build then ends canceled
// on the server and its build_end arrives on the stream as usual.
func (h *handle) Cancel() {
	h.cancelOnce.Do(func() {
		go func() {
			defer close(h.cancel)
			ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
			defer stop()
			h.cancelErr = h.c.call(ctx, "cancelBuild", http.MethodPut, h.buildPath+"/cancel", nil, nil)
		}()
	})
}

// Wait blocks until the stream ended (after build_end, or when the server stayed
// unreachable past the retries).
// A cancel the server did not take is reported as Err when the build did not end canceled.
func (h *handle) Wait() execution.Outcome {
	<-h.done
	out := h.out
	select {
	case <-h.cancel:
		if h.cancelErr != nil && out.Err == nil && out.ExitCode != errs.ExitCanceled {
			out.Err = h.cancelErr
		}
	default:
	}
	return out
}

// run watches the stream to build_end, reconnecting after the last seq delivered.
func (h *handle) run() {
	defer close(h.done)
	defer h.q.Close()
	ctx := context.Background()
	var last int64
	fails := 0
	for {
		progressed, ended, err := h.stream(ctx, &last)
		if ended {
			h.artifacts(ctx)
			h.stepFailure(ctx)
			return
		}
		if progressed {
			fails = 0
		}
		if err != nil && !retryable(err) {
			h.out = execution.Outcome{ExitCode: errs.ExitCode(err), Err: err}
			return
		}
		if err == nil {
			// The server ended the stream without build_end: draining for a restart (come
			// back), or a build that ended before any scheduler ran it (say how it ended).
			if code, ok := h.endedWithoutEvents(ctx); ok {
				h.q.Publish(events.Event{Kind: events.KindBuildEnd, BuildEnd: &events.BuildEnd{ExitCode: code}})
				h.out = execution.Outcome{ExitCode: code}
				return
			}
		}
		fails++
		if fails > h.retries {
			if err == nil {
				err = errors.New("the stream kept ending before the build did")
			}
			if _, ok := err.(*errs.RemoteError); !ok {
				err = &errs.RemoteError{Server: h.c.base, Op: "buildEvents", Class: errs.ErrUnavailable, Err: err,
					Msg: fmt.Sprintf("lost the build's event stream from %s after %d reconnects: %v", h.c.base, h.retries, err)}
			}
			h.out = execution.Outcome{ExitCode: errs.ExitUnavailable, Err: err}
			return
		}
		d := h.delay << (fails - 1)
		if d > 5*time.Second || d <= 0 {
			d = 5 * time.Second
		}
		time.Sleep(d)
	}
}

// endedWithoutEvents reads the build: ok when it is terminal, with its exit code.
func (h *handle) endedWithoutEvents(ctx context.Context) (int, bool) {
	var bv buildView
	if h.c.call(ctx, "getBuild", http.MethodGet, h.buildPath, nil, &bv) != nil {
		return 0, false
	}
	switch bv.State {
	case "passed":
		return errs.ExitPassed, true
	case "failed":
		if bv.ErrorCode != nil && *bv.ErrorCode == "pipeline_timeout" {
			return errs.ExitTimedOut, true
		}
		return errs.ExitFailed, true
	case "canceled":
		return errs.ExitCanceled, true
	}
	return 0, false
}

// stream reads one connection of the event stream, publishing each event after *last and
// moving *last on. ended: build_end was delivered (h.out is set). err nil with !ended: the
// server closed the stream cleanly.
func (h *handle) stream(ctx context.Context, last *int64) (progressed, ended bool, err error) {
	sctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	idle := h.watchIdle(stop)
	defer idle.stop()
	req, err := h.c.request(sctx, http.MethodGet, h.buildPath+"/events", nil)
	if err != nil {
		return false, false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(*last, 10))
	}
	resp, err := h.c.hc.Do(req)
	if err != nil {
		if context.Cause(sctx) == errIdle {
			return false, false, errIdle
		}
		return false, false, h.c.classify(ctx, "buildEvents", nil, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return false, false, h.c.classify(ctx, "buildEvents", resp, nil)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxFrame)
	var id string
	var data []byte
	framed := false // a data line was read
	for sc.Scan() {
		idle.seen.Add(1)
		line := sc.Bytes()
		if len(line) == 0 { // the end of a frame
			if framed {
				done, err := h.deliver(id, data, last)
				if err != nil {
					return progressed, false, err
				}
				progressed = true
				if done {
					return true, true, nil
				}
			}
			id, data, framed = "", nil, false
			continue
		}
		if line[0] == ':' { // a keep-alive
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			id = string(value)
		case "data":
			if framed {
				data = append(data, '\n')
			}
			data, framed = append(data, value...), true
		}
	}
	err = sc.Err()
	if context.Cause(sctx) == errIdle {
		err = errIdle
	}
	if errors.Is(err, bufio.ErrTooLong) {
		err = &errs.RemoteError{Server: h.c.base, Op: "buildEvents", Status: resp.StatusCode, Class: errs.ErrInfra, Err: err,
			Msg: fmt.Sprintf("an event of the build's stream is longer than %d bytes", maxFrame)}
	}
	return progressed, false, err
}

// idleWatch ends a stream that read nothing for the idle timeout. The reader counts what
// it reads (an atomic add per line) and a check a quarter of the timeout apart sees whether
// the count moved: resetting a timer per line cost more than parsing the line. A quiet
// stream is ended between idle and 1.25 × idle after its last line.
type idleWatch struct {
	seen atomic.Int64
	t    *time.Timer
	mu   sync.Mutex
	done bool
}

func (h *handle) watchIdle(stop context.CancelCauseFunc) *idleWatch {
	w := &idleWatch{}
	period := max(h.idle/4, time.Millisecond)
	last, quiet := int64(0), time.Duration(0)
	check := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.done {
			return
		}
		if n := w.seen.Load(); n != last {
			last, quiet = n, 0
		} else if quiet += period; quiet >= h.idle {
			stop(errIdle)
			return
		}
		w.t.Reset(period)
	}
	w.mu.Lock()
	w.t = time.AfterFunc(period, check)
	w.mu.Unlock()
	return w
}

func (w *idleWatch) stop() {
	w.mu.Lock()
	w.done = true
	w.t.Stop()
	w.mu.Unlock()
}

// deliver publishes one frame's event unless its seq was delivered already. done: it was
// build_end. A frame hm cannot read is final: the same frame would come again.
func (h *handle) deliver(id string, data []byte, last *int64) (done bool, _ error) {
	seq, perr := strconv.ParseInt(id, 10, 64)
	if perr == nil && seq <= *last {
		return false, nil // sent again after a resume
	}
	e, err := events.Decode(data) // keeps data as the event's wire form: not reused after
	if err != nil {
		return false, &errs.RemoteError{Server: h.c.base, Op: "buildEvents", Status: http.StatusOK, Class: errs.ErrInfra, Err: err,
			Msg: fmt.Sprintf("the server sent an event hm cannot read (id %q): %v", id, err)}
	}
	if perr == nil {
		*last = seq
	}
	h.q.Publish(e)
	if cf := e.ChainFailed; cf != nil && cf.ExitCode == scheduler.ExitInfra && h.infraStep == "" {
		h.infraStep = cf.FailedStepKey
	}
	if e.BuildEnd != nil {
		h.out = execution.Outcome{ExitCode: e.BuildEnd.ExitCode}
		return true, nil
	}
	return false, nil
}
