package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

// Build events and log chunks: the two append-only streams.

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
	err := s.write(ctx, "append events", func(tx pgx.Tx) error {
		// The build row is the counter, taken for the whole batch in the same transaction as
		// the inserts: gap-free, and a rolled-back append gives its numbers back.
		var last int64
		err := row(ctx, tx, `UPDATE builds SET event_seq = event_seq + ? WHERE id = ? AND (?::bigint < 0 OR driver_epoch = ?)
			RETURNING event_seq`, len(payloads), buildID, epoch, epoch).Scan(&last)
		if errors.Is(err, pgx.ErrNoRows) {
			var cur int64
			if err := row(ctx, tx, `SELECT driver_epoch FROM builds WHERE id = ?`, buildID).Scan(&cur); err != nil {
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
		packs := store.PackPayloads(first, payloads)
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
	s.notify(store.BuildEvents(buildID))
	return seqs, nil
}

func (s *DB) ListEvents(ctx context.Context, buildID string, after int64, limit int) ([]store.Event, error) {
	type row struct {
		store.EventPack
		created int64
	}
	// From the row holding seq after (it may hold later ones too): limit+1 rows hold at
	// least limit events after it.
	rows, err := list(ctx, s.pool, "list events", func(r scanner) (row, error) {
		var v row
		var p string
		err := r.Scan(&v.Seq, &v.Count, &p, &v.created)
		v.Payload = []byte(p)
		return v, err
	}, `SELECT seq, n_events, payload, created_at FROM build_events WHERE build_id = ?
		AND seq >= COALESCE((SELECT MAX(seq) FROM build_events WHERE build_id = ? AND seq <= ?::bigint), 0)
		ORDER BY seq LIMIT ?`, buildID, buildID, after, limit+1)
	if err != nil {
		return nil, err
	}
	var evs []store.Event
	for _, r := range rows {
		if evs, err = r.Unpack(evs, after, limit, tm(r.created)); err != nil {
			return nil, fmt.Errorf("%w: list events: %w", errs.ErrInfra, err)
		}
	}
	return evs, nil
}

// advanceHead moves (job, attempt)'s contiguous seq, h (its head row locked), past the run of
// chunks h+1, h+2, … now stored. Numbered in order, the chunks above h have seq = h + their
// rank exactly while the run lasts (seqs are unique), so the run's length is a count over the
// chunks above the head: an in-order stream costs its batch, not its whole log. PostgreSQL
// only: the SQLite driver's NOT EXISTS form plans here as an anti-join over every chunk of
// the table, once per append.
const advanceHead = `UPDATE log_heads SET contiguous = contiguous + (
		SELECT COUNT(*) FROM (
			SELECT c.seq, row_number() OVER (ORDER BY c.seq) AS rn FROM log_chunks c
			WHERE c.job_id = ? AND c.attempt = ? AND c.seq > ?::bigint
		) AS above WHERE above.seq = ?::bigint + above.rn)
	WHERE job_id = ? AND attempt = ? RETURNING contiguous`

func (s *DB) AppendLogs(ctx context.Context, jobID string, attempt int, chunks []store.LogChunk) (int64, error) {
	var head int64
	err := s.write(ctx, "append logs", func(tx pgx.Tx) error {
		// The fence: the head row exists only for the job's current attempt (created here on
		// its first chunk), and every insert below is conditional on the same test, so chunks
		// of an attempt that was reclaimed in between are dropped, not stored.
		res, err := exec(ctx, tx, `INSERT INTO log_heads (job_id, attempt, contiguous)
			SELECT id, attempt, 0 FROM jobs WHERE id = ? AND attempt = ? ON CONFLICT DO NOTHING`, jobID, attempt)
		if err != nil {
			return err
		}
		var cur int
		err = row(ctx, tx, `SELECT attempt FROM jobs WHERE id = ?`, jobID).Scan(&cur)
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
		// READ COMMITTED, advanceHead would otherwise not see chunks a concurrent append
		// committed after it began, and store a head short of what is stored.
		var h int64
		if err := row(ctx, tx, `SELECT contiguous FROM log_heads WHERE job_id = ? AND attempt = ? FOR UPDATE`, jobID, attempt).Scan(&h); err != nil {
			return err
		}
		// PostgreSQL only: the batch is one statement over arrays (unnest), not one round
		// trip per chunk; the first of two chunks with one seq wins, as in the SQLite loop.
		var seqs, streams, tss []int64
		var contents [][]byte
		for _, c := range chunks {
			if c.Seq < 1 {
				continue // seq starts at 1 (remote.md); a 0 would hold the head at 0 forever
			}
			seqs, streams, tss = append(seqs, c.Seq), append(streams, int64(c.Stream)), append(tss, ns(c.TS))
			contents = append(contents, []byte(c.Content))
		}
		if len(seqs) > 0 {
			if _, err := exec(ctx, tx, `INSERT INTO log_chunks (job_id, attempt, seq, stream, content, ts)
				SELECT j.id, j.attempt, c.seq, c.stream, c.content, c.ts
				FROM jobs j, unnest(?::bigint[], ?::bigint[], ?::bytea[], ?::bigint[]) WITH ORDINALITY AS c (seq, stream, content, ts, n)
				WHERE j.id = ? AND j.attempt = ?
				ORDER BY c.n
				ON CONFLICT (job_id, attempt, seq) DO NOTHING`,
				seqs, streams, contents, tss, jobID, attempt); err != nil {
				return err
			}
		}
		return row(ctx, tx, advanceHead, jobID, attempt, h, h, jobID, attempt).Scan(&head)
	})
	if err == nil {
		s.notify(store.JobLogs(jobID))
	}
	return head, err
}

func (s *DB) ListLogs(ctx context.Context, jobID string, attempt int, after int64, limit int) ([]store.LogChunk, error) {
	return list(ctx, s.pool, "list logs", func(r scanner) (store.LogChunk, error) {
		var c store.LogChunk
		var ts int64
		var content []byte
		err := r.Scan(&c.Seq, &c.Stream, &content, &ts)
		c.Content, c.TS = string(content), tm(ts)
		return c, err
	}, `SELECT seq, stream, content, ts FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq > ? ORDER BY seq LIMIT ?`,
		jobID, attempt, after, limit)
}
