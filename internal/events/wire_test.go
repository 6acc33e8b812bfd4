package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The step_log fast path writes what encoding/json writes and reads what it reads, for plain
// and for awkward lines alike (these take the fallback).
func TestStepLogWire(t *testing.T) {
	ts := time.Date(2026, 12, 1, 10, 30, 0, 123456789, time.UTC)
	lines := []string{"", "plain text 123", "tab\there", `quote " and \ backslash`, "<b>&amp;</b>", "héllo wörld ✓",
		"bad utf8 \xff\xfe", "sep \u2028 \u2029", "ctl \x01\x7f", `","line":"x`, strings.Repeat("x", 70000)}
	stamps := []time.Time{ts, {}, ts.In(time.FixedZone("", 3600)), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for _, line := range lines {
		for _, stamp := range stamps {
			for _, try := range []int{0, 1, 12, -3} {
				ev := Event{Kind: KindStepLog, StepLog: &StepLog{StepID: "j_1", Stream: Stdout, Line: line, TS: stamp, Attempt: try}}
				want, err := encode(ev)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Encode(ev)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(want) {
					t.Fatalf("Encode(%q) = %s, encoding/json %s", line, got, want)
				}
				dec, err := Decode(got)
				if err != nil {
					t.Fatal(err)
				}
				var slow Event
				if err := json.Unmarshal(want, &slow); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(slow, dec, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
					cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Wire" }, cmp.Ignore())); diff != "" {
					t.Fatalf("Decode(%s) (-encoding/json +fast):\n%s", got, diff)
				}
				if dec.Wire != nil && string(dec.Wire) != string(want) {
					t.Fatalf("Decode kept %s as the wire form of %s", dec.Wire, want)
				}
				// (Not want itself: invalid UTF-8 reads back as U+FFFD, written plainly.)
				slowAgain, _ := encode(slow)
				if again, _ := Encode(dec); string(again) != string(slowAgain) {
					t.Fatalf("re-encoded %s, encoding/json %s", again, slowAgain)
				}
			}
		}
	}
}

// Frames that are not the canonical form are read by encoding/json (or refused), never
// half-read, and keep no Wire: it would not be what hm writes.
func TestDecodeOtherForms(t *testing.T) {
	tests := []struct {
		in       string
		wantLine string
		wantErr  bool
	}{
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00Z","attempt":1}`, "x", false},
		{`{"kind":"step_log", "step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00Z","attempt":1}`, "x", false},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00+00:00","attempt":1}`, "x", false},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00Z","attempt":01}`, "", true},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00Z","attempt":+1}`, "", true},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00Z","attempt":1,"extra":2}`, "x", false},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"a\"b","ts":"2026-12-01T10:30:00Z","attempt":1}`, `a"b`, false},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"2026-12-01T10:30:00Z","attempt":1}}`, "", true},
		{`{"kind":"step_log","step_id":"a","stream":"stdout","line":"x","ts":"nope","attempt":1}`, "", true},
	}
	for i, tt := range tests {
		e, err := Decode([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Fatalf("%d: Decode(%s) error %v, want error %v", i, tt.in, err, tt.wantErr)
		}
		if err != nil {
			continue
		}
		if e.StepLog == nil || e.StepLog.Line != tt.wantLine {
			t.Fatalf("%d: Decode(%s) = %+v", i, tt.in, e.StepLog)
		}
		canon, _ := encode(e)
		if e.Wire != nil && string(e.Wire) != string(canon) {
			t.Fatalf("%d: kept wire %s, canonical %s", i, e.Wire, canon)
		}
	}
}

func BenchmarkStepLogWire(b *testing.B) {
	ev := Event{Kind: KindStepLog, StepLog: &StepLog{StepID: "j_0123456789", Stream: Stdout, Line: "ok  \tgithub.com/x/y\t0.123s <tab>", TS: time.Now().UTC(), Attempt: 1}}
	wire, _ := encode(ev)
	b.Run("encode/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/fast", func(b *testing.B) {
		for b.Loop() {
			ev.Wire = nil
			if _, err := Encode(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		for b.Loop() {
			var e Event
			if err := json.Unmarshal(wire, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := Decode(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
}
