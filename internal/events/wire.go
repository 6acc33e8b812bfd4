package events

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
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
	b = appendString(b, l.StepID)
	b = append(b, `,"stream":`...)
	b = appendString(b, l.Stream)
	b = append(b, `,"line":`...)
	b = appendString(b, l.Line)
	b = append(b, `,"ts":"`...)
	b = l.TS.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(l.Attempt), 10)
	return append(b, '}'), true
}

// appendString appends s quoted as encoding/json writes a string (HTML characters escaped,
// invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped): the same algorithm.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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
		l.StepID, rest, ok = str(rest, `,"stream":`)
	}
	if ok {
		l.Stream, rest, ok = str(rest, `,"line":`)
	}
	if ok {
		l.Line, rest, ok = str(rest, `,"ts":`)
	}
	if !ok || len(rest) == 0 || rest[0] != '"' {
		return nil, false
	}
	i := bytes.IndexByte(rest[1:], '"') + 1
	if i <= 0 {
		return nil, false
	}
	// Read back only when written back the same: Wire stays what MarshalJSON would write.
	if err := l.TS.UnmarshalJSON(rest[:i+1]); err != nil || !bytes.Equal(l.TS.AppendFormat(nil, time.RFC3339Nano), rest[1:i]) {
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
	if err != nil || !bytes.Equal(strconv.AppendInt(nil, n, 10), digits) {
		return nil, false
	}
	l.Attempt = int(n)
	return &l, true
}

// str reads the JSON string at the start of b, followed by sep; ok only when the string is
// written as appendString writes it.
func str(b []byte, sep string) (_ string, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	escaped := false
	i := 1
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' {
			break
		} else if c == '\\' {
			escaped = true
			i++
		} else if c < 0x20 {
			return "", nil, false
		}
	}
	if i >= len(b) {
		return "", nil, false
	}
	quoted, rest := b[:i+1], b[i+1:]
	if rest, ok = bytes.CutPrefix(rest, []byte(sep)); !ok {
		return "", nil, false
	}
	if !escaped {
		raw := quoted[1 : len(quoted)-1]
		if !plain(raw) {
			return "", nil, false
		}
		return string(raw), rest, true
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil || !bytes.Equal(appendString(nil, s), quoted) {
		return "", nil, false
	}
	return s, rest, true
}

// plain: s, unescaped, is what appendString writes between its quotes: no character it
// escapes and valid UTF-8.
func plain(s []byte) bool {
	ascii := true
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	return ascii || utf8.Valid(s) && !bytes.Contains(s, []byte("\u2028")) && !bytes.Contains(s, []byte("\u2029"))
}
