package postgres

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"time"

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
		for i, p := range payloads {
			if _, err := exec(ctx, tx, `INSERT INTO build_events (build_id, seq, payload, created_at) VALUES (?, ?, ?, ?)`,
				buildID, first+int64(i), string(p), now); err != nil {
				return err
			}
			seqs = append(seqs, first+int64(i))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return seqs, nil
}

func (s *DB) ListEvents(ctx context.Context, buildID string, after int64, limit int) ([]store.Event, error) {
	return list(ctx, s.pool, "list events", func(r scanner) (store.Event, error) {
		var e store.Event
		var p string
		var c int64
		err := r.Scan(&e.Seq, &p, &c)
		e.Payload, e.CreatedAt = []byte(p), tm(c)
		return e, err
	}, `SELECT seq, payload, created_at FROM build_events WHERE build_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
		buildID, after, limit)
}

// advanceHead moves (job, attempt)'s contiguous seq past every chunk now stored after it. The
// new head is the smallest s that is either the old head with no chunk after it, or a stored
// chunk above the head with none after it: the end of the run from the head. It reads only
// chunks above the head, so an in-order stream costs its batch, not its whole log.
const advanceHead = `UPDATE log_heads SET contiguous = (
		SELECT MIN(s) FROM (
			SELECT log_heads.contiguous AS s WHERE NOT EXISTS (SELECT 1 FROM log_chunks d
				WHERE d.job_id = log_heads.job_id AND d.attempt = log_heads.attempt AND d.seq = log_heads.contiguous + 1)
			UNION ALL
			SELECT c.seq AS s FROM log_chunks c
			WHERE c.job_id = log_heads.job_id AND c.attempt = log_heads.attempt AND c.seq > log_heads.contiguous
			  AND NOT EXISTS (SELECT 1 FROM log_chunks d WHERE d.job_id = c.job_id AND d.attempt = c.attempt AND d.seq = c.seq + 1)
		) AS runs)
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
		if _, err := exec(ctx, tx, `SELECT 1 FROM log_heads WHERE job_id = ? AND attempt = ? FOR UPDATE`, jobID, attempt); err != nil {
			return err
		}
		for _, c := range chunks {
			if c.Seq < 1 {
				continue // seq starts at 1 (remote.md); a 0 would hold the head at 0 forever
			}
			if _, err := exec(ctx, tx, `INSERT INTO log_chunks (job_id, attempt, seq, stream, content, ts)
				SELECT id, attempt, ?::bigint, ?::bigint, ?::text, ?::bigint FROM jobs WHERE id = ? AND attempt = ?
				ON CONFLICT (job_id, attempt, seq) DO NOTHING`,
				c.Seq, c.Stream, c.Content, ns(c.TS), jobID, attempt); err != nil {
				return err
			}
		}
		return row(ctx, tx, advanceHead, jobID, attempt).Scan(&head)
	})
	return head, err
}

func (s *DB) ListLogs(ctx context.Context, jobID string, attempt int, after int64, limit int) ([]store.LogChunk, error) {
	return list(ctx, s.pool, "list logs", func(r scanner) (store.LogChunk, error) {
		var c store.LogChunk
		var ts int64
		err := r.Scan(&c.Seq, &c.Stream, &c.Content, &ts)
		c.TS = tm(ts)
		return c, err
	}, `SELECT seq, stream, content, ts FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq > ? ORDER BY seq LIMIT ?`,
		jobID, attempt, after, limit)
}
