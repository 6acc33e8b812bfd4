package store

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestContiguous(t *testing.T) {
	cs := func(seqs ...int64) []LogChunk {
		var out []LogChunk
		for _, s := range seqs {
			out = append(out, LogChunk{Seq: s})
		}
		return out
	}
	for _, c := range []struct {
		name  string
		in    []LogChunk
		after int64
		want  []LogChunk
	}{
		{"none", nil, 0, nil},
		{"all", cs(1, 2, 3), 0, cs(1, 2, 3)},
		{"after 5", cs(6, 7), 5, cs(6, 7)},
		{"a gap", cs(1, 2, 4, 5), 0, cs(1, 2)},
		{"a gap first", cs(3, 4), 0, cs()},
	} {
		if d := cmp.Diff(c.want, Contiguous(c.in, c.after), cmp.Comparer(func(a, b []LogChunk) bool {
			return len(a) == len(b) && (len(a) == 0 || cmp.Equal(a, b))
		})); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, d)
		}
	}
}
