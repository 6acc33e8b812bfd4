package store

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// Chunk packs: how both drivers store a job's log chunks (schema 12). An agent's batch of up
// to a thousand chunks was a row each, and inserting and reading those rows back was half the
// server's CPU per log line. So each run of consecutive seqs of an append is stored in rows
// of up to PackChunks chunks (PackBytes of content), the row's seq the first chunk's and
// n_chunks their count; a row of one chunk is stored as before (content the chunk's bytes),
// so rows written before schema 12 read unchanged. A row of several holds them in content as
// EncodeChunks writes them. Resends are deduplicated by seq range (SplitNew): a stored seq is
// never stored again, whatever the batch boundaries of the resend.

// PackChunks bounds the chunks of one row (and so how far below a seq the row holding it
// starts: a driver looks for the rows overlapping a batch from its lowest seq − PackChunks+1).
const PackChunks = 1000

// ChunkPack is one stored row: Count chunks from Seq.
type ChunkPack struct {
	Seq   int64
	Count int
	// Stream and TS are the first chunk's; Content is its bytes when Count is 1, else
	// EncodeChunks of all Count chunks.
	Stream  int
	Content []byte
	TS      time.Time
}

// Normalize is chunks with seq >= 1 (seq starts at 1, remote.md; a 0 would hold the head at
// 0 forever), in seq order, the first of two with one seq kept.
func Normalize(chunks []LogChunk) []LogChunk {
	valid := make([]LogChunk, 0, len(chunks))
	for _, c := range chunks {
		if c.Seq >= 1 {
			valid = append(valid, c)
		}
	}
	slices.SortStableFunc(valid, func(a, b LogChunk) int { return int(min(max(a.Seq-b.Seq, -1), 1)) })
	return slices.CompactFunc(valid, func(a, b LogChunk) bool { return a.Seq == b.Seq })
}

// SplitNew drops from chunks (Normalize'd) the seqs the stored rows (Seq, Count; they do not
// overlap) already hold, and packs the rest: each run of consecutive seqs into rows of up to PackChunks chunks
// and PackBytes of content (a larger chunk is a row of its own).
func SplitNew(chunks []LogChunk, stored []ChunkPack) []ChunkPack {
	stored = slices.SortedFunc(slices.Values(stored), func(a, b ChunkPack) int { return int(min(max(a.Seq-b.Seq, -1), 1)) })
	fresh := chunks[:0:0]
	k := 0 // both in seq order: the first stored row not wholly below c
	for _, c := range chunks {
		for k < len(stored) && stored[k].Seq+int64(stored[k].Count) <= c.Seq {
			k++
		}
		if k == len(stored) || stored[k].Seq > c.Seq {
			fresh = append(fresh, c)
		}
	}
	var packs []ChunkPack
	for i := 0; i < len(fresh); {
		j, size := i+1, len(fresh[i].Content)
		for j < len(fresh) && j-i < PackChunks && fresh[j].Seq == fresh[j-1].Seq+1 && size+len(fresh[j].Content) <= PackBytes {
			size += len(fresh[j].Content)
			j++
		}
		p := ChunkPack{Seq: fresh[i].Seq, Count: j - i, Stream: fresh[i].Stream, TS: fresh[i].TS}
		if p.Count == 1 {
			p.Content = []byte(fresh[i].Content)
		} else {
			p.Content = EncodeChunks(make([]byte, 0, size+12*p.Count), fresh[i:j])
		}
		packs = append(packs, p)
		i = j
	}
	return packs
}

// EncodeChunks appends the chunks' packed form to b: per chunk its stream, its time (Unix
// nanoseconds, 0 the zero time), its content's length (varints) and its content.
func EncodeChunks(b []byte, chunks []LogChunk) []byte {
	for _, c := range chunks {
		b = binary.AppendUvarint(b, uint64(c.Stream))
		b = binary.AppendVarint(b, unixNano(c.TS))
		b = binary.AppendUvarint(b, uint64(len(c.Content)))
		b = append(b, c.Content...)
	}
	return b
}

// Unpack appends to cs the chunks of p with seq > after, up to limit chunks in all.
func (p ChunkPack) Unpack(cs []LogChunk, after int64, limit int) ([]LogChunk, error) {
	if p.Count == 1 {
		if p.Seq > after && len(cs) < limit {
			cs = append(cs, LogChunk{Seq: p.Seq, Stream: p.Stream, Content: string(p.Content), TS: p.TS})
		}
		return cs, nil
	}
	// One string for the row, the chunks' contents slices of it: an allocation per row, not
	// one per chunk (it stays alive while any of its chunks is held; a row is ≤ PackBytes).
	whole := string(p.Content)
	rest := p.Content
	for i := range p.Count {
		stream, n := binary.Uvarint(rest)
		if n <= 0 {
			return cs, fmt.Errorf("log row %d: chunk %d of %d unreadable", p.Seq, i+1, p.Count)
		}
		rest = rest[n:]
		ts, n := binary.Varint(rest)
		if n <= 0 {
			return cs, fmt.Errorf("log row %d: chunk %d of %d unreadable", p.Seq, i+1, p.Count)
		}
		rest = rest[n:]
		size, n := binary.Uvarint(rest)
		if n <= 0 || size > uint64(len(rest)-n) {
			return cs, fmt.Errorf("log row %d: chunk %d of %d unreadable", p.Seq, i+1, p.Count)
		}
		start := len(p.Content) - len(rest) + n // where the content starts in the row
		content := whole[start : start+int(size)]
		rest = rest[n+int(size):]
		seq := p.Seq + int64(i)
		if seq <= after {
			continue
		}
		if len(cs) >= limit {
			return cs, nil
		}
		cs = append(cs, LogChunk{Seq: seq, Stream: int(stream), Content: content, TS: fromUnixNano(ts)})
	}
	if len(rest) != 0 {
		return cs, fmt.Errorf("log row %d holds more than its %d chunks", p.Seq, p.Count)
	}
	return cs, nil
}

// unixNano and fromUnixNano are the drivers' time columns: nanoseconds, 0 the zero time, UTC.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
