package buildlog

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/hmci/hm/internal/events"
)

// The bounds in force; tests shrink them.
var maxLineBytes, maxBuildBytes int64 = MaxLineBytes, MaxBuildBytes

func sizeText(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Writer appends one build's events. It is used from one goroutine.
type Writer struct {
	s      *Store
	f      *os.File
	meta   Meta
	size   int64
	capped map[string]bool // steps already told that the build reached MaxBuildBytes
	ended  bool
	buf    []byte
}

// Create starts the record of build m.ID (status Running) and takes its lock.
func (s *Store) Create(m Meta) (*Writer, error) {
	if !validID(m.ID) {
		return nil, fmt.Errorf("buildlog: invalid build id %q", m.ID)
	}
	dir := filepath.Join(s.dir, m.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.EventsPath(m.ID), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	// Locked before meta says "running", so no reader sees a running record without its lock.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("buildlog: build %s is already being written: %w", m.ID, err)
	}
	m.Status, m.EndedAt, m.ExitCode = Running, nil, nil
	w := &Writer{s: s, f: f, meta: m, capped: map[string]bool{}}
	if err := s.writeMeta(m); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Write appends ev (bounded as the package doc says) and, at build_end, writes the final meta.
func (w *Writer) Write(ev events.Event) error {
	_, err := w.write(ev)
	return err
}

// write is Write that also returns ev's wire form when it was written as it is (not cut,
// not capped), for the next writer of the same event (events.Event.Wire).
func (w *Writer) write(ev events.Event) (wire []byte, _ error) {
	same := true
	if l := ev.StepLog; l != nil {
		if int64(len(l.Line)) > maxLineBytes {
			cut := *l
			cut.Line = cutLine(l.Line, maxLineBytes)
			ev = events.Event{Kind: ev.Kind, StepLog: &cut}
			w.meta.CutLines++
			same = false
		}
		if w.size+int64(len(ev.StepLog.Line)) >= maxBuildBytes {
			w.meta.DroppedLines++
			if w.capped[l.StepID] {
				return nil, nil
			}
			w.capped[l.StepID] = true
			same = false
			ev = events.Event{Kind: ev.Kind, StepLog: &events.StepLog{StepID: l.StepID, Stream: events.Stderr, TS: l.TS,
				Line: fmt.Sprintf("hm: this build's stored log reached its limit of %s: later lines of this step are not kept", sizeText(maxBuildBytes))}}
		}
	}
	b, err := events.Encode(ev)
	if err != nil {
		return nil, err
	}
	// One write per event, as it comes: hm logs --follow reads the file live.
	w.buf = append(append(w.buf[:0], b...), '\n')
	n, err := w.f.Write(w.buf)
	if cap(w.buf) > 64<<10 {
		w.buf = nil // do not pin the buffer of one long line
	}
	w.size += int64(n)
	if err != nil {
		return nil, err
	}
	if e := ev.BuildEnd; e != nil {
		code := e.ExitCode
		return nil, w.finish(StatusOf(code), &code, e.DurationMS)
	}
	if !same {
		return nil, nil
	}
	return b[:len(b):len(b)], nil
}

func cutLine(s string, n int64) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func (w *Writer) finish(st Status, code *int, ms int64) error {
	if w.ended {
		return nil
	}
	w.ended = true
	now := time.Now().UTC()
	w.meta.Status, w.meta.EndedAt, w.meta.ExitCode, w.meta.DurationMS = st, &now, code, ms
	return w.s.writeMeta(w.meta)
}

// Close ends the record; a build that did not reach build_end is recorded as Interrupted.
// The lock is released last, after the final meta.
func (w *Writer) Close() error {
	var err error
	if !w.ended {
		err = w.finish(Interrupted, nil, time.Since(w.meta.StartedAt).Milliseconds())
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}
