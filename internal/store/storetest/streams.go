package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

var streamCases = []testCase{
	{"EventsResume", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		seqs := get(e.s.AppendEvents(e.ctx, b.ID, []byte(`{"kind":"build_start"}`), []byte(`{"kind":"step_queued"}`)))(t)
		if !slices.Equal(seqs, []int64{1, 2}) {
			t.Errorf("seqs = %v, want [1 2]", seqs)
		}
		get(e.s.AppendEvents(e.ctx, b.ID, []byte(`{"kind":"build_end"}`)))(t)
		evs := get(e.s.ListEvents(e.ctx, b.ID, 1, 100))(t) // Last-Event-ID: 1
		if len(evs) != 2 || evs[0].Seq != 2 || string(evs[1].Payload) != `{"kind":"build_end"}` {
			t.Errorf("events after 1 = %+v", evs)
		}
		if evs := get(e.s.ListEvents(e.ctx, b.ID, 0, 1))(t); len(evs) != 1 || evs[0].Seq != 1 {
			t.Errorf("limit 1 = %+v", evs)
		}
		_, err := e.s.AppendEvents(e.ctx, "nope", []byte(`{}`))
		isNotFound(t, err, "events of an unknown build")
	}},
	{"EventsPackedResumeAnywhere", func(t *testing.T, e *env) {
		// Appends big enough to span several rows (store.PackEvents, store.PackBytes), with a
		// payload holding a newline among them: every resume point, every limit, reads the
		// same events back with their own seqs.
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		var want []string
		appendAll := func(ps ...string) {
			bs := make([][]byte, len(ps))
			for i, s := range ps {
				bs[i] = []byte(s)
			}
			seqs := get(e.s.AppendEvents(e.ctx, b.ID, bs...))(t)
			for i, s := range seqs {
				if s != int64(len(want)+i+1) {
					t.Fatalf("seq %d for event %d", s, len(want)+i+1)
				}
			}
			want = append(want, ps...)
		}
		var batch []string
		for i := range store.PackEvents + 10 {
			batch = append(batch, fmt.Sprintf(`{"kind":"step_log","line":"%d"}`, i))
		}
		appendAll(batch...)
		appendAll(`{"kind":"step_end"}`)
		big := strings.Repeat("x", store.PackBytes/3)
		appendAll(`{"a":"`+big+`"}`, `{"b":"`+big+`"}`, `{"c":"`+big+`"}`, "{\n\"multi\":\"line\"\n}", `{"d":1}`, `{"e":2}`)
		n := int64(len(want))
		for _, after := range []int64{0, 1, 2, store.PackEvents - 1, store.PackEvents, store.PackEvents + 1, n - 4, n - 3, n - 1, n, n + 5} {
			for _, limit := range []int{1, 2, 7, store.PackEvents, 1000} {
				evs := get(e.s.ListEvents(e.ctx, b.ID, after, limit))(t)
				wantN := min(max(n-after, 0), int64(limit))
				if int64(len(evs)) != wantN {
					t.Fatalf("after %d limit %d: %d events, want %d", after, limit, len(evs), wantN)
				}
				for i, ev := range evs {
					if ev.Seq != after+int64(i)+1 || string(ev.Payload) != want[ev.Seq-1] {
						t.Fatalf("after %d limit %d: event %d is seq %d %q, want seq %d %q", after, limit, i, ev.Seq, ev.Payload, after+int64(i)+1, want[after+int64(i)])
					}
				}
			}
		}
	}},
	{"EventsConcurrentGapFree", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		const writers, each = 8, 25
		var mu sync.Mutex
		var all []int64
		parallel(t, writers, func(w int) {
			last := int64(0)
			for i := range each {
				s, err := e.s.AppendEvents(e.ctx, b.ID, fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i))
				if err != nil {
					t.Error(err)
					return
				}
				if s[0] <= last {
					t.Errorf("writer %d: seq %d after %d", w, s[0], last)
				}
				last = s[0]
				mu.Lock()
				all = append(all, s[0])
				mu.Unlock()
			}
		})
		evs := get(e.s.ListEvents(e.ctx, b.ID, 0, writers*each+10))(t)
		if len(evs) != writers*each {
			t.Fatalf("%d events stored, want %d", len(evs), writers*each)
		}
		for i, ev := range evs {
			if ev.Seq != int64(i+1) {
				t.Fatalf("event %d has seq %d: want 1…N without gaps", i, ev.Seq)
			}
		}
	}},
	{"LogChunksIdempotentContiguous", func(t *testing.T, e *env) {
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		chunk := func(seqs ...int64) []store.LogChunk {
			var cs []store.LogChunk
			for _, s := range seqs {
				cs = append(cs, store.LogChunk{Seq: s, Stream: store.StreamStdout, Content: fmt.Sprintf("line %d", s), TS: e.at(time.Duration(s))})
			}
			return cs
		}
		for _, c := range []struct {
			name string
			seqs []int64
			want int64
		}{
			{"first batch", []int64{1, 2, 3}, 3},
			{"a resend", []int64{2, 3}, 3},
			{"after a gap", []int64{5, 6}, 3},
			{"the gap filled", []int64{4}, 6},
			{"an empty batch", nil, 6},
			{"out of order", []int64{9, 8, 7}, 9},
		} {
			if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, chunk(c.seqs...)))(t); got != c.want {
				t.Errorf("%s: contiguous = %d, want %d", c.name, got, c.want)
			}
		}
		get(e.s.AppendLogs(e.ctx, j.ID, 1, []store.LogChunk{{Seq: 2, Content: "a different resend"}}))(t)
		cs := get(e.s.ListLogs(e.ctx, j.ID, 1, 0, 100))(t)
		if len(cs) != 9 || cs[1].Content != "line 2" || !cs[1].TS.Equal(e.at(2)) {
			t.Fatalf("logs = %+v: want 9 chunks, the first write of each seq kept", cs)
		}
		if cs := get(e.s.ListLogs(e.ctx, j.ID, 1, 7, 100))(t); len(cs) != 2 || cs[0].Seq != 8 {
			t.Errorf("logs after 7 = %+v", cs)
		}
		// Two chunks with one seq in one batch: the first is kept, in either driver's insert.
		if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, []store.LogChunk{{Seq: 100, Content: "first"}, {Seq: 100, Content: "second"}}))(t); got != 9 {
			t.Errorf("a batch with one seq twice: contiguous = %d, want 9", got)
		}
		if cs := get(e.s.ListLogs(e.ctx, j.ID, 1, 99, 100))(t); len(cs) != 1 || cs[0].Content != "first" {
			t.Errorf("a batch with one seq twice stored %+v, want the first chunk only", cs)
		}
		_, err := e.s.AppendLogs(e.ctx, j.ID, 2, chunk(1))
		isConflict(t, err, "chunks of an attempt not yet claimed")
		_, err = e.s.AppendLogs(e.ctx, "nope", 1, chunk(1))
		isNotFound(t, err, "chunks of an unknown job")
		// Late chunks of the current attempt still land after the job finished: the agent
		// flushes what it buffered, then finishes, in either order.
		get(e.s.FinishJob(e.ctx, j.ID, 1, store.Finish{}))(t)
		if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, chunk(10)))(t); got != 10 {
			t.Errorf("after finish: contiguous = %d, want 10", got)
		}
		// A batch that extends the run up to chunks stored early continues through them,
		// and through its own chunks after them; a gap inside a batch stops the run there.
		for _, c := range []struct {
			seqs []int64
			want int64
		}{{[]int64{13, 14}, 10}, {[]int64{11, 12, 15}, 15}, {[]int64{16, 18}, 16}, {[]int64{18, 16}, 16}, {[]int64{17}, 18}} {
			if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, chunk(c.seqs...)))(t); got != c.want {
				t.Errorf("chunks %v: contiguous = %d, want %d", c.seqs, got, c.want)
			}
		}
	}},
	{"LogChunksAnyBytes", func(t *testing.T, e *env) {
		// A step's output is bytes: NUL, control characters and the replacement character
		// come back as they went in (a TEXT column of PostgreSQL refuses NUL).
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		want := []string{"nul\x00in the middle", "\x00", "tab\tbell\a\x1b[31mred\x1b[0m", "\ufffd é 日本", ""}
		var cs []store.LogChunk
		for i, c := range want {
			cs = append(cs, store.LogChunk{Seq: int64(i + 1), Stream: store.StreamStderr, Content: c, TS: e.t0})
		}
		if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, cs))(t); got != int64(len(want)) {
			t.Fatalf("contiguous = %d, want %d", got, len(want))
		}
		var got []string
		for _, c := range get(e.s.ListLogs(e.ctx, j.ID, 1, 0, 100))(t) {
			got = append(got, c.Content)
		}
		if !slices.Equal(got, want) {
			t.Errorf("contents %q, want %q", got, want)
		}
	}},
	{"LogChunksConcurrentResends", func(t *testing.T, e *env) {
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		const n = 200
		// Four senders each send every chunk, in different orders: each seq is stored once.
		parallel(t, 4, func(w int) {
			for i := range n {
				s := int64(i + 1)
				if w%2 == 1 {
					s = int64(n - i)
				}
				if _, err := e.s.AppendLogs(e.ctx, j.ID, 1, []store.LogChunk{{Seq: s, Content: "x"}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
		if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, nil))(t); got != n {
			t.Errorf("contiguous = %d, want %d", got, n)
		}
		if cs := get(e.s.ListLogs(e.ctx, j.ID, 1, 0, 2*n))(t); len(cs) != n {
			t.Errorf("%d chunks stored, want %d", len(cs), n)
		}
	}},
	{"LogChunksPackedRowsResume", func(t *testing.T, e *env) {
		// Chunks are stored packed by run (store.ChunkPack): reading resumes inside a row at
		// any seq, a page ends inside a row, a chunk over PackBytes is a row of its own,
		// and concurrent batches overlapping each other's rows store each seq once.
		e.ready(t, "acme", 1)
		e.agent(t, "a1", "sandbox")
		j, _ := e.claim(t, "a1", e.t0)
		big := strings.Repeat("b", store.PackBytes+1)
		var want []store.LogChunk
		for s := int64(1); s <= 60; s++ {
			c := store.LogChunk{Seq: s, Stream: int(s % 3), Content: fmt.Sprintf("line\n%d\x00", s), TS: e.at(time.Duration(s))}
			if s == 30 {
				c.Content = big
			}
			want = append(want, c)
		}
		// Two rows with a gap between them, then a batch over both and the gap.
		for _, b := range [][2]int{{0, 20}, {40, 60}, {10, 50}} {
			get(e.s.AppendLogs(e.ctx, j.ID, 1, want[b[0]:b[1]]))(t)
		}
		if got := get(e.s.AppendLogs(e.ctx, j.ID, 1, nil))(t); got != 60 {
			t.Fatalf("contiguous = %d, want 60", got)
		}
		for _, page := range []int{1, 7, 19, 100} {
			var got []store.LogChunk
			for after := int64(0); ; {
				cs := get(e.s.ListLogs(e.ctx, j.ID, 1, after, page))(t)
				if len(cs) > page {
					t.Fatalf("page of %d: %d chunks", page, len(cs))
				}
				if len(cs) == 0 {
					break
				}
				got = append(got, cs...)
				after = cs[len(cs)-1].Seq
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("pages of %d (-want +got):\n%s", page, d)
			}
		}
	}},
}
