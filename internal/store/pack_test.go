package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPackPayloads(t *testing.T) {
	ps := func(ss ...string) [][]byte {
		var out [][]byte
		for _, s := range ss {
			out = append(out, []byte(s))
		}
		return out
	}
	many := make([]string, PackEvents+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	half := strings.Repeat("x", PackBytes/2)
	tests := []struct {
		name string
		in   [][]byte
		want []int // events per row
	}{
		{"one", ps("a"), []int{1}},
		{"several in one row", ps("a", "b", "c"), []int{3}},
		{"a newline alone", ps("a", "b\nc", "d"), []int{1, 1, 1}},
		{"count bound", ps(many...), []int{PackEvents, 1}},
		{"byte bound", ps(half, half, "y"), []int{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			packs := PackPayloads(10, tt.in)
			var counts []int
			var back []string
			seq := int64(10)
			for _, p := range packs {
				if p.Seq != seq {
					t.Fatalf("row seq %d, want %d", p.Seq, seq)
				}
				seq += int64(p.Count)
				counts = append(counts, p.Count)
				evs, err := p.Unpack(nil, 0, 1<<30, time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					back = append(back, string(e.Payload))
				}
			}
			if diff := cmp.Diff(tt.want, counts); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			var want []string
			for _, p := range tt.in {
				want = append(want, string(p))
			}
			if diff := cmp.Diff(want, back); diff != "" {
				t.Errorf("unpacked (-want +got):\n%s", diff)
			}
		})
	}
}

// A row whose payload does not hold its count of events is refused, not misnumbered.
func TestUnpackCorrupt(t *testing.T) {
	for _, p := range []EventPack{{Seq: 1, Count: 3, Payload: []byte("a\nb")}, {Seq: 1, Count: 2, Payload: []byte("a\nb\nc")}} {
		if _, err := p.Unpack(nil, 0, 10, time.Time{}); err == nil {
			t.Errorf("Unpack(%q, count %d) took it", p.Payload, p.Count)
		}
	}
}
