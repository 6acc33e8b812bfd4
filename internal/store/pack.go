package store

import (
	"bytes"
	"fmt"
	"math"
	"time"
)

// Event packs: how both drivers store a build's events. A big log is nearly all step_log
// events, appended by the hundred; one row per event made the row inserts and reads the
// largest cost of a log line on the server. So the events of one append are stored in rows
// of up to PackEvents events (PackBytes of payload), their payloads joined by '\n' (an event
// holds none), the row's seq the first event's and n_events their count. The sequence, its
// gap-free numbering and the API are unchanged: ListEvents unpacks, and resumes inside a row.

// The bounds of one row.
const (
	PackEvents = 256
	PackBytes  = 256 << 10
)

// EventPack is one stored row: Count events from Seq, Payload their payloads joined by '\n'.
type EventPack struct {
	Seq     int64
	Count   int
	Payload []byte
}

// PackPayloads groups payloads, numbered from first, into rows. A payload that holds a newline
// (not an NDJSON event, but the store does not judge) is a row of its own.
func PackPayloads(first int64, payloads [][]byte) []EventPack {
	var packs []EventPack
	for i := 0; i < len(payloads); {
		j, size := i+1, len(payloads[i])
		if bytes.IndexByte(payloads[i], '\n') < 0 {
			for j < len(payloads) && j-i < PackEvents && size+1+len(payloads[j]) <= PackBytes &&
				bytes.IndexByte(payloads[j], '\n') < 0 {
				size += 1 + len(payloads[j])
				j++
			}
		}
		var p []byte
		if j == i+1 {
			p = payloads[i]
		} else {
			p = bytes.Join(payloads[i:j], []byte{'\n'})
		}
		packs = append(packs, EventPack{Seq: first + int64(i), Count: j - i, Payload: p})
		i = j
	}
	return packs
}

// Unpack appends to evs the events of p with seq > after, up to limit events in all.
func (p EventPack) Unpack(evs []Event, after int64, limit int, created time.Time) ([]Event, error) {
	rest := p.Payload
	for i := range p.Count {
		var one []byte
		if p.Count == 1 {
			one, rest = rest, nil
		} else if i == p.Count-1 {
			if bytes.IndexByte(rest, '\n') >= 0 {
				return evs, fmt.Errorf("event row %d holds more than its %d events", p.Seq, p.Count)
			}
			one = rest
		} else {
			var ok bool
			if one, rest, ok = bytes.Cut(rest, []byte{'\n'}); !ok {
				return evs, fmt.Errorf("event row %d holds fewer than its %d events", p.Seq, p.Count)
			}
		}
		seq := p.Seq + int64(i)
		if seq <= after {
			continue
		}
		if len(evs) >= limit {
			break
		}
		evs = append(evs, Event{Seq: seq, Payload: one[:len(one):len(one)], CreatedAt: created})
	}
	return evs, nil
}

// SeqAfter is seq after+n, for a read of n events after seq after (sqlq.ListEvents),
// saturated: a resume point near the largest seq does not wrap around.
func SeqAfter(after int64, n int) int64 {
	if s := after + int64(n); s >= after {
		return s
	}
	return math.MaxInt64
}
