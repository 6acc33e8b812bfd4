package store

import (
	"fmt"
	"testing"
	"time"
)

func TestRecentEvents(t *testing.T) {
	payloads := func(from, n int) [][]byte {
		var ps [][]byte
		for i := range n {
			ps = append(ps, []byte(fmt.Sprintf("e%d", from+i)))
		}
		return ps
	}
	t0 := time.Unix(1, 0)
	type read struct {
		after int64
		limit int
		want  []int64 // seqs; nil with ok false
		ok    bool
	}
	cases := []struct {
		name  string
		adds  [][2]int // first seq, count
		reads []read
	}{
		{"one run", [][2]int{{1, 3}, {4, 2}}, []read{
			{0, 10, []int64{1, 2, 3, 4, 5}, true}, {2, 2, []int64{3, 4}, true}, {4, 10, []int64{5}, true},
			{5, 10, nil, false}, {9, 10, nil, false}, {0, 0, nil, false},
		}},
		{"a gap starts a new run", [][2]int{{1, 3}, {6, 2}}, []read{
			{0, 10, nil, false}, {3, 10, nil, false}, {5, 10, []int64{6, 7}, true},
		}},
		{"out of order", [][2]int{{4, 2}, {1, 3}}, []read{
			{0, 10, []int64{1, 2, 3}, true}, {3, 10, nil, false},
		}},
		{"bounded by count", [][2]int{{1, recentEvents}, {recentEvents + 1, 10}}, []read{
			{0, 10, nil, false}, {9, 2, nil, false}, {10, 2, []int64{11, 12}, true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r RecentEvents
			for _, a := range c.adds {
				r.AddPacks("b", PackPayloads(int64(a[0]), payloads(a[0], a[1])), t0)
			}
			for _, rd := range c.reads {
				evs, ok := r.After("b", rd.after, rd.limit)
				if ok != rd.ok || len(evs) != len(rd.want) {
					t.Fatalf("After(%d, %d) = %d events, %v; want %v, %v", rd.after, rd.limit, len(evs), ok, rd.want, rd.ok)
				}
				for i, e := range evs {
					if e.Seq != rd.want[i] || string(e.Payload) != fmt.Sprintf("e%d", e.Seq) || !e.CreatedAt.Equal(t0) {
						t.Fatalf("After(%d, %d)[%d] = %+v, want seq %d", rd.after, rd.limit, i, e, rd.want[i])
					}
				}
			}
			if _, ok := r.After("other", 0, 10); ok {
				t.Error("a build never appended is answered")
			}
		})
	}
	t.Run("copies and bounds bytes and builds", func(t *testing.T) {
		var r RecentEvents
		p := [][]byte{[]byte("abc")}
		r.AddPacks("b", PackPayloads(1, p), t0)
		p[0][0] = 'X'
		if evs, _ := r.After("b", 0, 1); string(evs[0].Payload) != "abc" {
			t.Errorf("payload %q: the caller's buffer is kept", evs[0].Payload)
		}
		big := make([]byte, recentBytes/2+1)
		r.AddPacks("b", PackPayloads(2, [][]byte{big, big}), t0)
		if _, ok := r.After("b", 1, 1); ok {
			t.Error("the bytes bound kept event 2")
		}
		if evs, ok := r.After("b", 2, 1); !ok || evs[0].Seq != 3 {
			t.Errorf("the last event is not kept: %v", ok)
		}
		for i := range recentBuilds {
			r.AddPacks(fmt.Sprint("x", i), PackPayloads(1, payloads(1, 1)), t0)
		}
		if len(r.builds) > recentBuilds {
			t.Errorf("%d builds kept, bound %d", len(r.builds), recentBuilds)
		}
		if _, ok := r.After("b", 2, 1); ok {
			t.Error("the least recently used build was not dropped")
		}
		// The total bound: builds of recentBytes each, never more than recentTotal in all.
		var r2 RecentEvents
		for i := range recentTotal/recentBytes + 3 {
			r2.AddPacks(fmt.Sprint("y", i), PackPayloads(1, [][]byte{make([]byte, recentBytes)}), t0)
			if r2.bytes > recentTotal+recentBytes || r2.bytes < 0 {
				t.Fatalf("%d bytes held, bound %d", r2.bytes, recentTotal)
			}
		}
		if r2.bytes > recentTotal {
			t.Errorf("%d bytes held, bound %d", r2.bytes, recentTotal)
		}
		sum := 0
		for _, run := range r2.builds {
			sum += run.bytes
		}
		if sum != r2.bytes {
			t.Errorf("runs hold %d bytes, total says %d", sum, r2.bytes)
		}
		if _, ok := r2.After(fmt.Sprint("y", recentTotal/recentBytes+2), 0, 1); !ok {
			t.Error("the build appended last was dropped")
		}
	})
}
