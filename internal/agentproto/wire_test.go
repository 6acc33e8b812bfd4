package agentproto

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The fast path reads what json.Marshal writes as encoding/json would, and declines
// every other form (the caller then decodes with encoding/json).
func TestLogsDecodeWire(t *testing.T) {
	ts := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	zone := time.FixedZone("x", 3600+1800)
	marshalled := []Logs{
		{Attempt: 1, Chunks: []Chunk{}},
		{Attempt: 3, Chunks: []Chunk{{Seq: 1, Stream: Stdout, Content: "hello", TS: ts}}},
		{Attempt: 2, Chunks: []Chunk{
			{Seq: 7, Stream: Stderr, Content: `quote " backslash \ tab 	 nl` + "\n" + `<&> é 😀 ` + "\u2028\x00\x1b[31m", TS: ts.In(zone)},
			{Seq: 8, Stream: System, Content: "", TS: time.Time{}},
			{Seq: 9, Stream: Stdout, Content: "invalid \xff utf-8", TS: ts.Add(time.Hour)},
			{Seq: 2147483647, Stream: Stdout, Content: "big seq", TS: ts},
		}},
	}
	for _, want := range marshalled {
		b, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var std, fast Logs
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatal(err)
		}
		if !fast.DecodeWire(b) {
			t.Fatalf("DecodeWire declined json.Marshal's form %s", b)
		}
		if d := cmp.Diff(std, fast); d != "" {
			t.Errorf("DecodeWire(%s) differs from encoding/json (-std +fast):\n%s", b, d)
		}
	}

	declined := []string{
		``,
		`null`,
		`{"attempt":1,"chunks":null}`,
		`{"chunks":[],"attempt":1}`,
		`{"attempt": 1,"chunks":[]}`,
		`{"attempt":01,"chunks":[]}`,
		`{"attempt":-0,"chunks":[]}`,
		`{"attempt":1e0,"chunks":[]}`,
		`{"attempt":99999999999,"chunks":[]}`,
		`{"attempt":1,"chunks":[]}x`,
		`{"attempt":1,"chunks":[],"x":1}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"a","ts":"2026-12-01T10:00:00Z","x":1}]}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"a","ts":"yesterday"}]}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"a","ts":"2026-12-01T10:00:00Z"}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"a` + "\n" + `","ts":"2026-12-01T10:00:00Z"}]}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"\x","ts":"2026-12-01T10:00:00Z"}]}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"a","ts":"2026-12-01T10:00:00Z"},]}`,
		`{"attempt":1,"chunks":[{"seq":1,"stream":0,"content":"a","ts":"2026-12-01T10:00:00Z"}` + strings.Repeat(" ", 3) + `]}`,
	}
	for _, in := range declined {
		l := Logs{Attempt: 42}
		if l.DecodeWire([]byte(in)) {
			t.Errorf("DecodeWire(%q) accepted a form json.Marshal does not write", in)
		}
		if l.Attempt != 42 || l.Chunks != nil {
			t.Errorf("DecodeWire(%q) declined but changed its Logs: %+v", in, l)
		}
	}
}

func BenchmarkLogsDecode(b *testing.B) {
	var l Logs
	l.Attempt = 1
	for i := range MaxLogChunks {
		l.Chunks = append(l.Chunks, Chunk{Seq: int64(i + 1), Content: strings.Repeat("x", 6), TS: time.Now()})
	}
	body, _ := json.Marshal(l)
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var v Logs
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeWire", func(b *testing.B) {
		for b.Loop() {
			var v Logs
			if !v.DecodeWire(body) {
				b.Fatal("declined")
			}
		}
	})
}

// AppendWire writes what json.Marshal writes, byte for byte, and declines what json.Marshal
// refuses.
func TestLogsAppendWire(t *testing.T) {
	ts := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	zone := time.FixedZone("x", -(3600 + 1800))
	for _, l := range []Logs{
		{},
		{Attempt: 1, Chunks: []Chunk{}},
		{Attempt: -4, Chunks: []Chunk{{Seq: 1, Stream: Stdout, Content: "hello", TS: ts}}},
		{Attempt: 2, Chunks: []Chunk{
			{Seq: 7, Stream: Stderr, Content: `quote " backslash \ tab 	 nl` + "\n" + `<&> é 😀 ` + "\u2028\u2029\x00\x1b[31m\x7f", TS: ts.In(zone)},
			{Seq: 8, Stream: System, Content: "", TS: time.Time{}},
			{Seq: 9, Stream: Stdout, Content: "invalid \xff utf-8 \xed\xa0\x80", TS: ts.Add(time.Hour).Round(time.Second)},
			{Seq: -1, Stream: 99, Content: strings.Repeat("x", 1000), TS: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.Local)},
		}},
	} {
		want, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := l.AppendWire([]byte("prefix"))
		if !ok || string(got) != "prefix"+string(want) {
			t.Errorf("AppendWire = %s, %v\njson.Marshal %s", got, ok, want)
		}
	}
	for _, y := range []int{-1, 10000} {
		l := Logs{Attempt: 1, Chunks: []Chunk{{Seq: 1, TS: ts}, {Seq: 2, TS: time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)}}}
		if _, err := json.Marshal(l); err == nil {
			t.Fatalf("json.Marshal takes year %d", y)
		}
		if got, ok := l.AppendWire([]byte("prefix")); ok || string(got) != "prefix" {
			t.Errorf("year %d: AppendWire = %s, %v; want declined, b unchanged", y, got, ok)
		}
	}
}

func BenchmarkLogsEncode(b *testing.B) {
	var l Logs
	l.Attempt = 1
	for i := range MaxLogChunks {
		l.Chunks = append(l.Chunks, Chunk{Seq: int64(i + 1), Content: strings.Repeat("x", 6), TS: time.Now().UTC()})
	}
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(l); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendWire", func(b *testing.B) {
		for b.Loop() {
			if _, ok := l.AppendWire(nil); !ok {
				b.Fatal("declined")
			}
		}
	})
}
