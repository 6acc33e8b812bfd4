// Package render draws hm's human output (on stderr) from the build event stream of package
// events: plain prefixed lines (`[key] line`) when the output is not a terminal, under CI or
// with --logs, and otherwise a live terminal view built on Bubble Tea.
//
// A renderer only consumes: the engine publishes into an events.Queue, which never blocks, so
// a slow terminal makes the renderer lag but never stalls a step.
package render

import (
	"bytes"
	"context"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/hmci/hm/internal/events"
)

// Options selects the renderer and its details.
type Options struct {
	// NoColor turns colours and text attributes off (so does a non-empty NO_COLOR).
	NoColor bool
	// Verbose adds build and step start lines in plain mode; in the live view it streams every
	// log line, prefixed `[key] `, above the progress lines.
	Verbose bool
	// Live selects the live terminal view; otherwise plain lines are written. See UseLive.
	Live bool
	// LogHint, when set, names the command that prints a step's whole log (e.g. "hm logs
	// 6f0c1a2b test") or returns "" when there is none; the live view's report shows it
	// under a failed step's tail, which keeps only the last lines.
	LogHint func(runID, stepKey string) string
}

// Run renders evs on w until the channel is closed, then returns. If ctx ends first, Run
// returns ctx.Err() at once and discards the rest of the stream in the background, so the
// queue feeding evs can still drain. A write error stops the output but not the consuming; it
// is returned when the stream ends.
func Run(ctx context.Context, w io.Writer, evs <-chan events.Event, opts Options) error {
	if opts.Live {
		return runLive(ctx, w, evs, opts)
	}
	return runPlain(ctx, w, evs, opts)
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// UseLive reports whether human output on f gets the live view (semantics.md, Events and
// output): f is a terminal that can move its cursor, CI is unset, and logs (--logs) is false.
func UseLive(f *os.File, logs bool) bool {
	return !logs && os.Getenv("CI") == "" && os.Getenv("TERM") != "dumb" && IsTerminal(f)
}

// maxBatch bounds how many queued events are folded before the output is updated, so a flood
// of log lines costs one write (or one repaint) per batch rather than per line.
const maxBatch = 1024

// nextBatch blocks for one event, then takes whatever else is already queued, up to maxBatch.
// open is false once evs is closed (batch holds what came before the close).
func nextBatch(ctx context.Context, evs <-chan events.Event, batch []events.Event) (_ []events.Event, open bool, err error) {
	select {
	case <-ctx.Done():
		return batch, true, ctx.Err()
	case ev, ok := <-evs:
		if !ok {
			return batch, false, nil
		}
		batch = append(batch, ev)
	}
	for len(batch) < maxBatch {
		select {
		case ev, ok := <-evs:
			if !ok {
				return batch, false, nil
			}
			batch = append(batch, ev)
		default:
			return batch, true, nil
		}
	}
	return batch, true, nil
}

// discard drains evs so that its producer's delivery goroutine can finish.
func discard(evs <-chan events.Event) {
	for range evs {
	}
}

func runPlain(ctx context.Context, w io.Writer, evs <-chan events.Event, opts Options) error {
	lw := &lineWriter{
		b:       newBuild(false, time.Now),
		st:      newStyles(w, opts.NoColor),
		status:  true,
		logs:    true,
		verbose: opts.Verbose,
	}
	var (
		buf      bytes.Buffer
		batch    []events.Event
		writeErr error
	)
	for {
		var open bool
		var err error
		batch, open, err = nextBatch(ctx, evs, batch[:0])
		if err != nil {
			go discard(evs)
			return err
		}
		for i := range batch {
			lw.write(&buf, batch[i])
			batch[i] = events.Event{}
		}
		if writeErr == nil && buf.Len() > 0 {
			_, writeErr = w.Write(buf.Bytes())
		}
		buf.Reset()
		if !open {
			return writeErr
		}
	}
}
