package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

// Build events and log chunks: the two append-only streams.

// bigint follows a parameter whose type PostgreSQL cannot infer (sqlq.EventSeq).
const bigint = "::bigint"

func (s *DB) AppendEvents(ctx context.Context, buildID string, payloads ...[]byte) ([]int64, error) {
	return s.appendEvents(ctx, buildID, -1, payloads)
}

func (s *DB) AppendEventsFenced(ctx context.Context, buildID string, epoch int64, payloads ...[]byte) ([]int64, error) {
	return s.appendEvents(ctx, buildID, epoch, payloads)
}

// appendEvents appends; epoch >= 0 fences the append by the build's driver lease epoch.
func (s *DB) appendEvents(ctx context.Context, buildID string, epoch int64, payloads [][]byte) ([]int64, error) {
	if len(payloads) == 0 {
		return nil, nil
	}
	now := ns(time.Now())
	seqs := make([]int64, 0, len(payloads))
	var packs []store.EventPack
	err := s.write(ctx, "append events", func(tx pgx.Tx) error {
		// The build row is the counter, taken for the whole batch in the same transaction as
		// the inserts: gap-free, and a rolled-back append gives its numbers back.
		var last int64
		err := row(ctx, tx, sqlq.EventSeq(bigint), len(payloads), buildID, epoch, epoch).Scan(&last)
		if errors.Is(err, pgx.ErrNoRows) {
			var cur int64
			if err := row(ctx, tx, sqlq.BuildEpoch, buildID).Scan(&cur); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					return &store.NotFoundError{Kind: "build", Key: buildID}
				}
				return err
			}
			return &store.ConflictError{Kind: "build", Key: buildID,
				Reason: fmt.Sprintf("driver lease epoch %d is not the current one (%d)", epoch, cur)}
		}
		if err != nil {
			return err
		}
		first := last - int64(len(payloads)) + 1
		for i := range payloads {
			seqs = append(seqs, first+int64(i))
		}
		packs = store.PackPayloads(first, payloads)
		starts, counts, texts := make([]int64, len(packs)), make([]int64, len(packs)), make([]string, len(packs))
		for i, p := range packs {
			starts[i], counts[i], texts[i] = p.Seq, int64(p.Count), string(p.Payload)
		}
		// PostgreSQL only: the batch is one statement over arrays, not one round trip per
		// row while the build row (the counter) is held.
		_, err = exec(ctx, tx, `INSERT INTO build_events (build_id, seq, n_events, payload, created_at)
			SELECT ?, x.seq, x.n, x.payload, ?::bigint FROM unnest(?::bigint[], ?::bigint[], ?::text[]) AS x (seq, n, payload)`,
			buildID, now, starts, counts, texts)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.recent.AddPacks(buildID, packs, tm(now))
	s.notify(store.BuildEvents(buildID))
	return seqs, nil
}

func (s *DB) ListEvents(ctx context.Context, buildID string, after int64, limit int) ([]store.Event, error) {
	if evs, ok := s.recent.After(buildID, after, limit); ok {
		return evs, nil
	}
	// From the row holding seq after (it may hold later ones too): limit+1 rows hold at
	// least limit events after it.
	rows, err := list(ctx, s.pool, "list events", sqlq.ScanEventRow, sqlq.ListEvents(bigint), buildID, buildID, after, store.SeqAfter(after, limit), limit+1)
	if err != nil {
		return nil, err
	}
	return sqlq.UnpackEvents(rows, after, limit)
}

// advance moves the head of (job, attempt) past the rows stored from head+1 on: one seek per
// row of the run, so an in-order batch costs a seek or two, not a query over its chunks.
func advance(ctx context.Context, tx pgx.Tx, jobID string, attempt int, head int64) (int64, error) {
	for {
		var n int64
		err := row(ctx, tx, sqlq.NextLogRow(bigint), jobID, attempt, head+1).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			return head, nil
		}
		if err != nil {
			return 0, err
		}
		head += n
	}
}

func (s *DB) AppendLogs(ctx context.Context, jobID string, attempt int, chunks []store.LogChunk) (int64, error) {
	var head int64
	err := s.write(ctx, "append logs", func(tx pgx.Tx) error {
		// The fence: the head row exists only for the job's current attempt (created here on
		// its first chunk), and every insert below is conditional on the same test, so chunks
		// of an attempt that was reclaimed in between are dropped, not stored.
		res, err := exec(ctx, tx, sqlq.InsertLogHead, jobID, attempt)
		if err != nil {
			return err
		}
		var cur int
		err = row(ctx, tx, sqlq.JobAttempt, jobID).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return &store.NotFoundError{Kind: "job", Key: jobID}
		}
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 && cur != attempt {
			return &store.ConflictError{Kind: "job", Key: jobID, Reason: "log chunks of a stale attempt", Attempt: cur}
		}
		// PostgreSQL only: appends of one (job, attempt) take turns on its head row. Under
		// READ COMMITTED each statement below then sees every chunk a concurrent append
		// committed before: the stored rows read for deduplication and the head's run.
		if err := row(ctx, tx, sqlq.LogHead+` FOR UPDATE`, jobID, attempt).Scan(&head); err != nil {
			return err
		}
		valid := store.Normalize(chunks)
		if len(valid) > 0 {
			// The rows that may hold a seq of the batch: those starting at most PackChunks
			// below its lowest seq. Their seqs are not stored again (store.SplitNew).
			stored, err := list(ctx, tx, "list log rows", sqlq.ScanChunkPackHead, sqlq.LogRowsBetween(bigint),
				jobID, attempt, valid[0].Seq-store.PackChunks+1, valid[len(valid)-1].Seq)
			if err != nil {
				return err
			}
			packs := store.SplitNew(valid, stored)
			seqs, counts, streams, tss := make([]int64, len(packs)), make([]int64, len(packs)), make([]int64, len(packs)), make([]int64, len(packs))
			contents := make([][]byte, len(packs))
			for i, p := range packs {
				seqs[i], counts[i], streams[i], contents[i], tss[i] = p.Seq, int64(p.Count), int64(p.Stream), p.Content, ns(p.TS)
			}
			// PostgreSQL only: the rows are one statement over arrays (unnest), joined with
			// the job's current attempt (the fence). No ON CONFLICT: the rows do not overlap
			// the stored ones, and an overlap would be a bug, which fails.
			if _, err := exec(ctx, tx, `INSERT INTO log_chunks (job_id, attempt, seq, n_chunks, stream, content, ts)
				SELECT j.id, j.attempt, c.seq, c.n, c.stream, c.content, c.ts
				FROM jobs j, unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bytea[], ?::bigint[]) AS c (seq, n, stream, content, ts)
				WHERE j.id = ? AND j.attempt = ?`,
				seqs, counts, streams, contents, tss, jobID, attempt); err != nil {
				return err
			}
		}
		next, err := advance(ctx, tx, jobID, attempt, head)
		if err != nil || next == head {
			return err
		}
		head = next
		_, err = exec(ctx, tx, sqlq.SetLogHead(bigint), head, jobID, attempt)
		return err
	})
	if err == nil {
		s.notify(store.JobLogs(jobID))
	}
	return head, err
}

func (s *DB) ListLogs(ctx context.Context, jobID string, attempt int, after int64, limit int) ([]store.LogChunk, error) {
	// From the row holding seq after (it may hold later ones too): limit+1 rows hold at
	// least limit chunks after it; no further rows are read once limit chunks are in hand.
	rows, err := s.pool.Query(ctx, rebind(sqlq.ListLogs(bigint)), jobID, attempt, jobID, attempt, after, limit+1)
	if err != nil {
		return nil, wrap("list logs", err)
	}
	defer rows.Close()
	var cs []store.LogChunk
	for len(cs) < limit && rows.Next() {
		var p store.ChunkPack
		var ts int64
		if err := rows.Scan(&p.Seq, &p.Count, &p.Stream, &p.Content, &ts); err != nil {
			return nil, wrap("list logs", err)
		}
		p.TS = tm(ts)
		if cs, err = p.Unpack(cs, after, limit); err != nil {
			return nil, fmt.Errorf("%w: list logs: %w", errs.ErrInfra, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list logs", err)
	}
	return cs, nil
}
