package events

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string
	}{
		{"one chunk", []string{"a\nb\n"}, []string{"a", "b"}},
		{"split across chunks", []string{"hel", "lo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"final partial line", []string{"a\nno newline"}, []string{"a", "no newline"}},
		{"empty lines kept", []string{"\n\nx\n"}, []string{"", "", "x"}},
		{"crlf", []string{"dos\r\n"}, []string{"dos"}},
		{"newline alone", []string{"abc", "\n"}, []string{"abc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			w := NewLineWriter(func(l string) { got = append(got, l) })
			for _, c := range tt.chunks {
				if _, err := w.Write([]byte(c)); err != nil {
					t.Fatal(err)
				}
			}
			w.Flush()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestLineWriterLongLines(t *testing.T) {
	var got []int
	w := NewLineWriter(func(l string) { got = append(got, len(l)) })
	mib := strings.Repeat("x", 1<<20)
	// A 1 MiB line in 4 KiB chunks stays whole; a line over MaxLine is cut at MaxLine.
	for i := 0; i < len(mib); i += 4096 {
		w.Write([]byte(mib[i : i+4096]))
	}
	w.Write([]byte("\n"))
	w.Write([]byte(strings.Repeat("y", MaxLine+10) + "\n"))
	if diff := cmp.Diff([]int{1 << 20, MaxLine, 10}, got); diff != "" {
		t.Errorf("line lengths (-want +got):\n%s", diff)
	}
}

// Publish never blocks, whatever the consumer does, and nothing is lost or reordered.
func TestQueueSlowConsumer(t *testing.T) {
	q := NewQueue()
	const n = 50000
	for i := 0; i < n; i++ {
		q.Publish(Event{Kind: KindBuildEnd, BuildEnd: &BuildEnd{ExitCode: i}})
	}
	q.Close()
	q.Publish(Event{Kind: KindBuildEnd, BuildEnd: &BuildEnd{ExitCode: -1}}) // after Close: dropped
	i := 0
	for e := range q.C() {
		if e.BuildEnd.ExitCode != i {
			t.Fatalf("event %d has %d", i, e.BuildEnd.ExitCode)
		}
		i++
	}
	if i != n {
		t.Fatalf("got %d events, want %d", i, n)
	}
}

func TestWireFormat(t *testing.T) {
	ts := time.Date(2026, 11, 25, 18, 0, 0, 123000000, time.UTC)
	img := "busybox"
	tests := []struct {
		ev   Event
		want string
	}{
		{Event{Kind: KindStepQueued, StepQueued: &StepQueued{StepID: "s", Key: "k", ChainIdx: 1, DisplayName: "d"}},
			`{"kind":"step_queued","step_id":"s","key":"k","chain_idx":1,"parent_key":null,"display_name":"d"}`},
		{Event{Kind: KindStepStart, StepStart: &StepStart{StepID: "s", Runner: "host", Image: &img}},
			`{"kind":"step_start","step_id":"s","runner":"host","image":"busybox"}`},
		{Event{Kind: KindStepLog, StepLog: &StepLog{StepID: "s", Stream: Stdout, Line: "hi", TS: ts, Attempt: 1}},
			`{"kind":"step_log","step_id":"s","stream":"stdout","line":"hi","ts":"2026-11-25T18:00:00.123Z","attempt":1}`},
		{Event{Kind: KindStepEnd, StepEnd: &StepEnd{StepID: "s", ExitCode: 3, DurationMS: 5, Attempt: 2}},
			`{"kind":"step_end","step_id":"s","exit_code":3,"duration_ms":5,"snapshot":null,"attempt":2}`},
		{Event{Kind: KindStepArtifact, StepArtifact: &StepArtifact{StepID: "s", Path: "dist/a", Size: 3, SHA256: "ab", TS: ts}},
			`{"kind":"step_artifact","step_id":"s","path":"dist/a","size":3,"sha256":"ab","ts":"2026-11-25T18:00:00.123Z"}`},
		{Event{Kind: KindStepRetry, StepRetry: &StepRetry{StepID: "s", Attempt: 1, Attempts: 3, ExitCode: 1, Message: "m", TS: ts}},
			`{"kind":"step_retry","step_id":"s","attempt":1,"attempts":3,"exit_code":1,"message":"m","ts":"2026-11-25T18:00:00.123Z"}`},
		{Event{Kind: KindBuildEnd, BuildEnd: &BuildEnd{ExitCode: 1, DurationMS: 9}},
			`{"kind":"build_end","exit_code":1,"duration_ms":9}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.ev)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("got  %s\nwant %s", b, tt.want)
		}
		var back Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.ev, back); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
	if _, err := json.Marshal(Event{Kind: KindStepEnd}); err == nil {
		t.Error("an event without its payload was encoded")
	}
}

// WithStepID renames the step of every kind that has one, on a copy: the event it came from
// (which other readers may hold) keeps its id, and no stale encoding travels with the copy.
func TestWithStepID(t *testing.T) {
	for _, e := range []Event{
		{Kind: KindStepQueued, StepQueued: &StepQueued{StepID: "s"}},
		{Kind: KindStepStart, StepStart: &StepStart{StepID: "s"}},
		{Kind: KindStepLog, StepLog: &StepLog{StepID: "s", Line: "x"}},
		{Kind: KindStepCacheHit, StepCacheHit: &StepCacheHit{StepID: "s"}},
		{Kind: KindStepEnd, StepEnd: &StepEnd{StepID: "s"}},
		{Kind: KindStepSkipped, StepSkipped: &StepSkipped{StepID: "s"}},
		{Kind: KindStepRetry, StepRetry: &StepRetry{StepID: "s"}},
		{Kind: KindStepArtifact, StepArtifact: &StepArtifact{StepID: "s"}},
		{Kind: KindChainFailed, ChainFailed: &ChainFailed{FailedStepID: "s"}},
	} {
		t.Run(string(e.Kind), func(t *testing.T) {
			e.Wire = []byte("stale")
			got := e.WithStepID("job-1")
			if id := got.StepID(); id != "job-1" {
				t.Errorf("renamed: step id %q, want job-1", id)
			}
			if id := e.StepID(); id != "s" {
				t.Errorf("original: step id %q, want s (changed in place)", id)
			}
			if got.Wire != nil {
				t.Errorf("renamed event kept its encoding %q", got.Wire)
			}
		})
	}
	b := Event{Kind: KindBuildEnd, BuildEnd: &BuildEnd{ExitCode: 1}, Wire: []byte("w")}
	if got := b.WithStepID("x"); string(got.Wire) != "w" || got.BuildEnd != b.BuildEnd {
		t.Errorf("an event of no step changed: %+v", got)
	}
}
