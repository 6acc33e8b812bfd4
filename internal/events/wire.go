package events

import (
	"bytes"
	"strconv"
	"time"

	"github.com/hmci/hm/internal/jsonwire"
)

// The step_log fast path. A build's log is nearly all step_log events, and encoding/json
// spends most of a client's CPU on them (reflection, then validating its own output, twice
// per event: the NDJSON output and the build's record). Their wire form is fixed (the field
// order of StepLog), so the common case, a line of plain text, is written and read here
// directly; anything else (a form encoding/json would not write, a year past 9999) falls
// back to encoding/json, which these functions match byte for byte (wire_test.go).

// appendStepLog appends l's wire form to b; ok false when the time is not one json.Marshal
// writes (a year past 9999).
func appendStepLog(b []byte, l *StepLog) ([]byte, bool) {
	if y := l.TS.Year(); y < 0 || y > 9999 {
		return nil, false
	}
	b = append(b, `{"kind":"step_log","step_id":`...)
	b = jsonwire.AppendString(b, l.StepID)
	b = append(b, `,"stream":`...)
	b = jsonwire.AppendString(b, l.Stream)
	b = append(b, `,"line":`...)
	b = jsonwire.AppendString(b, l.Line)
	b = append(b, `,"ts":"`...)
	b = l.TS.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(l.Attempt), 10)
	return append(b, '}'), true
}

// Decode reads one event's wire form. A step_log in the form appendStepLog writes is
// read directly and keeps b as its Wire (b must not change afterwards); anything else is
// read by UnmarshalJSON.
func Decode(b []byte) (Event, error) {
	if l, ok := readStepLog(b); ok {
		return Event{Kind: KindStepLog, StepLog: l, Wire: b[:len(b):len(b)]}, nil
	}
	var e Event
	err := e.UnmarshalJSON(b)
	return e, err
}

func readStepLog(b []byte) (*StepLog, bool) {
	var l StepLog
	rest, ok := bytes.CutPrefix(b, []byte(`{"kind":"step_log","step_id":`))
	if ok {
		l.StepID, rest, ok = jsonwire.CanonicalString(rest, `,"stream":`)
	}
	if ok {
		l.Stream, rest, ok = jsonwire.CanonicalString(rest, `,"line":`)
	}
	if ok {
		l.Line, rest, ok = jsonwire.CanonicalString(rest, `,"ts":`)
	}
	if !ok || len(rest) == 0 || rest[0] != '"' {
		return nil, false
	}
	i := bytes.IndexByte(rest[1:], '"') + 1
	if i <= 0 {
		return nil, false
	}
	// Read back only when written back the same: Wire stays what MarshalJSON would write.
	var scratch [64]byte // the checks' writes, off the heap: this runs per log line
	if err := l.TS.UnmarshalJSON(rest[:i+1]); err != nil || !bytes.Equal(l.TS.AppendFormat(scratch[:0], time.RFC3339Nano), rest[1:i]) {
		return nil, false
	}
	rest, ok = bytes.CutPrefix(rest[i+1:], []byte(`,"attempt":`))
	if !ok {
		return nil, false
	}
	digits, ok := bytes.CutSuffix(rest, []byte("}"))
	if !ok {
		return nil, false
	}
	n, err := strconv.ParseInt(string(digits), 10, 0)
	// A decimal exactly as strconv writes it: no '+', no leading zero, no "-0".
	if err != nil || !bytes.Equal(strconv.AppendInt(scratch[:0], n, 10), digits) {
		return nil, false
	}
	l.Attempt = int(n)
	return &l, true
}
