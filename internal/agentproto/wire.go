package agentproto

import (
	"bytes"
	"slices"
	"strconv"
	"time"

	"github.com/hmci/hm/internal/jsonwire"
)

// The Logs fast path. A big log reaches the server as Logs bodies of up to MaxLogChunks
// chunks, and encoding/json (two scanner passes over the body, then reflection per field)
// was a tenth of the server's CPU per log line. The agent writes the body with json.Marshal,
// whose form is fixed (the field order of Logs and Chunk, no spaces), so that form is read
// here directly; anything else (another field order, spaces, null, an unknown field, a number
// json.Marshal would not write) makes DecodeWire answer false and the caller decodes with
// encoding/json. On the fast path the values are the ones encoding/json would decode
// (wire_test.go compares them).

// DecodeWire reads b into l when b is in json.Marshal's form of a Logs; false (l unchanged)
// otherwise.
func (l *Logs) DecodeWire(b []byte) bool {
	rest, ok := bytes.CutPrefix(b, []byte(`{"attempt":`))
	var attempt int64
	if ok {
		attempt, rest, ok = integer(rest, `,"chunks":[`)
	}
	if !ok {
		return false
	}
	// A chunk's wire form is at least 40 bytes: a bounded first guess, not a trust in b.
	chunks := make([]Chunk, 0, min(len(rest)/40+1, MaxLogChunks))
	if r, ok := bytes.CutPrefix(rest, []byte("]}")); ok {
		if len(bytes.TrimRight(r, " \t\r\n")) != 0 {
			return false
		}
		l.Attempt, l.Chunks = int(attempt), chunks
		return true
	}
	for {
		var c Chunk
		if rest, ok = bytes.CutPrefix(rest, []byte(`{"seq":`)); !ok {
			return false
		}
		if c.Seq, rest, ok = integer(rest, `,"stream":`); !ok {
			return false
		}
		var stream int64
		if stream, rest, ok = integer(rest, `,"content":`); !ok {
			return false
		}
		c.Stream = int(stream)
		if c.Content, rest, ok = jsonwire.String(rest, `,"ts":`); !ok {
			return false
		}
		if len(rest) == 0 || rest[0] != '"' {
			return false
		}
		i := bytes.IndexByte(rest[1:], '"') + 1
		if i <= 0 || c.TS.UnmarshalJSON(rest[:i+1]) != nil {
			return false
		}
		rest = rest[i+1:]
		chunks = append(chunks, c)
		if r, ok := bytes.CutPrefix(rest, []byte("}]}")); ok {
			if len(bytes.TrimRight(r, " \t\r\n")) != 0 {
				return false
			}
			break
		}
		if rest, ok = bytes.CutPrefix(rest, []byte("},")); !ok {
			return false
		}
	}
	l.Attempt, l.Chunks = int(attempt), chunks
	return true
}

// integer reads the decimal at the start of b up to sep, exactly as strconv writes it (no
// '+', no leading zero, no "-0", no exponent) and within 32 bits, so that an int field holds
// it on every platform as encoding/json would.
func integer(b []byte, sep string) (int64, []byte, bool) {
	i := bytes.IndexByte(b, sep[0])
	if i <= 0 || i > 11 {
		return 0, nil, false
	}
	rest, ok := bytes.CutPrefix(b[i:], []byte(sep))
	if !ok {
		return 0, nil, false
	}
	digits := b[:i]
	n, err := strconv.ParseInt(string(digits), 10, 32)
	if err != nil || !bytes.Equal(strconv.AppendInt(nil, n, 10), digits) {
		return 0, nil, false
	}
	return n, rest, true
}

// AppendWire appends l in json.Marshal's form, the one DecodeWire reads, without
// encoding/json: on the agent, json.Marshal of a Logs body (reflection per field, then a
// validating pass over its own output) was 38 % of the agent's CPU on a big log. ok false
// (b unchanged) for a Logs it would not write the same, a timestamp json.Marshal refuses
// (a year outside 0-9999), which the caller then hands to json.Marshal.
func (l Logs) AppendWire(b []byte) (_ []byte, ok bool) {
	start := len(b)
	b = append(b, `{"attempt":`...)
	b = strconv.AppendInt(b, int64(l.Attempt), 10)
	if l.Chunks == nil {
		return append(b, `,"chunks":null}`...), true
	}
	size := 0
	for _, c := range l.Chunks {
		size += 80 + len(c.Content) // the fields' names, numbers and a timestamp
	}
	b = slices.Grow(b, size)
	b = append(b, `,"chunks":[`...)
	for i, c := range l.Chunks {
		if y := c.TS.Year(); y < 0 || y > 9999 {
			return b[:start], false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"seq":`...)
		b = strconv.AppendInt(b, c.Seq, 10)
		b = append(b, `,"stream":`...)
		b = strconv.AppendInt(b, int64(c.Stream), 10)
		b = append(b, `,"content":`...)
		b = jsonwire.AppendString(b, c.Content)
		b = append(b, `,"ts":"`...)
		b = c.TS.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...), true
}
