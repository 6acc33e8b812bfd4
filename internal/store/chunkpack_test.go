package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestChunkPacks(t *testing.T) {
	at := func(s int64) time.Time { return time.Unix(0, s*1000).UTC() }
	chunk := func(s int64, content string) LogChunk {
		return LogChunk{Seq: s, Stream: int(s % 3), Content: content, TS: at(s)}
	}
	in := []LogChunk{chunk(5, "five"), chunk(0, "zero"), chunk(2, "two"), chunk(3, "three"), chunk(2, "two again"),
		chunk(4, "four"), chunk(9, "nine"), chunk(10, ""), {Seq: 11, Content: "zero time"}}
	norm := Normalize(in)
	var seqs []int64
	for _, c := range norm {
		seqs = append(seqs, c.Seq)
	}
	if d := cmp.Diff([]int64{2, 3, 4, 5, 9, 10, 11}, seqs); d != "" || norm[0].Content != "two" {
		t.Fatalf("Normalize: seqs (-want +got):\n%s, first seq 2 %q", d, norm[0].Content)
	}
	// Stored: 3..4 (a row of two) and 10: the rest are packed by run.
	packs := SplitNew(norm, []ChunkPack{{Seq: 10, Count: 1}, {Seq: 3, Count: 2}})
	var got [][2]int64
	for _, p := range packs {
		got = append(got, [2]int64{p.Seq, int64(p.Count)})
	}
	if d := cmp.Diff([][2]int64{{2, 1}, {5, 1}, {9, 1}, {11, 1}}, got); d != "" {
		t.Errorf("SplitNew rows (-want +got):\n%s", d)
	}
	all := SplitNew(norm, nil)
	var back []LogChunk
	for _, p := range all {
		var err error
		if back, err = p.Unpack(back, 0, 100); err != nil {
			t.Fatal(err)
		}
	}
	if d := cmp.Diff(norm, back); d != "" {
		t.Errorf("Unpack(SplitNew) (-want +got):\n%s", d)
	}
	if len(all) != 2 || all[0].Count != 4 || all[1].Count != 3 {
		t.Errorf("rows %+v, want runs 2..5 and 9..11", all)
	}
	if cs, _ := all[0].Unpack(nil, 3, 1); len(cs) != 1 || cs[0].Seq != 4 {
		t.Errorf("Unpack after 3, limit 1 = %+v", cs)
	}
	// A row that does not hold its count is an error, not a short log.
	for _, bad := range []ChunkPack{
		{Seq: 1, Count: 3, Content: all[0].Content},
		{Seq: 1, Count: 5, Content: all[0].Content},
		{Seq: 1, Count: 4, Content: all[0].Content[:len(all[0].Content)-1]},
		{Seq: 1, Count: 2, Content: []byte{0, 0, 200}},
	} {
		if _, err := bad.Unpack(nil, 0, 100); err == nil {
			t.Errorf("Unpack of a row of %d with %d bytes: no error", bad.Count, len(bad.Content))
		}
	}
}
