package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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
	err := s.write(ctx, "append events", func(tx *sql.Tx) error {
		// The build row is the counter, taken for the whole batch in the same transaction as
		// the inserts: gap-free, and a rolled-back append gives its numbers back.
		var last int64
		err := tx.QueryRowContext(ctx, `UPDATE builds SET event_seq = event_seq + ? WHERE id = ? AND (? < 0 OR driver_epoch = ?)
			RETURNING event_seq`, len(payloads), buildID, epoch, epoch).Scan(&last)
		if errors.Is(err, sql.ErrNoRows) {
			var cur int64
			if err := tx.QueryRowContext(ctx, `SELECT driver_epoch FROM builds WHERE id = ?`, buildID).Scan(&cur); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
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
		return s.insertRows(ctx, tx, len(packs), 5,
			`INSERT INTO build_events (build_id, seq, n_events, payload, created_at) VALUES `, "",
			func(args []any, i int) []any {
				p := packs[i]
				return append(args, buildID, p.Seq, p.Count, string(p.Payload), now)
			})
	})
	if err != nil {
		return nil, err
	}
	s.hub.Notify(store.BuildEvents(buildID))
	return seqs, nil
}

func (s *DB) ListEvents(ctx context.Context, buildID string, after int64, limit int) ([]store.Event, error) {
	type row struct {
		store.EventPack
		created int64
	}
	// From the row holding seq after (it may hold later ones too): limit+1 rows hold at
	// least limit events after it.
	rows, err := list(ctx, s.db, "list events", func(r scanner) (row, error) {
		var v row
		var p string
		err := r.Scan(&v.Seq, &v.Count, &p, &v.created)
		v.Payload = []byte(p)
		return v, err
	}, listEvents, buildID, buildID, after, limit+1)
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

// listEvents reads the rows from the one that holds seq ? (the greatest seq at or before it),
// in order: an index seek, then the rows after.
const listEvents = `SELECT seq, n_events, payload, created_at FROM build_events WHERE build_id = ?
	AND seq >= COALESCE((SELECT MAX(seq) FROM build_events WHERE build_id = ? AND seq <= ?), 0)
	ORDER BY seq LIMIT ?`

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

// advance moves the head of (job, attempt) after chunks were inserted. The head was maximal
// before (every append advances it in its transaction), so head+1 was not stored: the new
// run from the head is the one these chunks make, plus whatever stored chunks continue it.
// In order, the usual case, that is one seek for the chunk after the batch's run; only when
// it exists (chunks that came early) does the query over the chunks above the head run.
func (s *DB) advance(ctx context.Context, tx *sql.Tx, jobID string, attempt int, chunks []store.LogChunk) (int64, error) {
	var head int64
	if err := tx.QueryRowContext(ctx, `SELECT contiguous FROM log_heads WHERE job_id = ? AND attempt = ?`, jobID, attempt).Scan(&head); err != nil {
		return 0, err
	}
	seqs := make([]int64, len(chunks))
	for i, c := range chunks {
		seqs[i] = c.Seq
	}
	slices.Sort(seqs)
	run := head
	for _, q := range seqs {
		if q == run+1 {
			run++
		} else if q > run+1 {
			break
		}
	}
	if run == head {
		return head, nil // head+1 is still not stored
	}
	var more bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq = ?)`,
		jobID, attempt, run+1).Scan(&more); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE log_heads SET contiguous = ? WHERE job_id = ? AND attempt = ?`, run, jobID, attempt); err != nil {
		return 0, err
	}
	if !more {
		return run, nil
	}
	err := tx.QueryRowContext(ctx, advanceHead, jobID, attempt).Scan(&head)
	return head, err
}

func (s *DB) AppendLogs(ctx context.Context, jobID string, attempt int, chunks []store.LogChunk) (int64, error) {
	var head int64
	err := s.write(ctx, "append logs", func(tx *sql.Tx) error {
		// The fence: the head row exists only for the job's current attempt (created here on
		// its first chunk), and every insert below is conditional on the same test, so chunks
		// of an attempt that was reclaimed in between are dropped, not stored.
		res, err := tx.ExecContext(ctx, `INSERT INTO log_heads (job_id, attempt, contiguous)
			SELECT id, attempt, 0 FROM jobs WHERE id = ? AND attempt = ? ON CONFLICT DO NOTHING`, jobID, attempt)
		if err != nil {
			return err
		}
		var cur int
		err = tx.QueryRowContext(ctx, `SELECT attempt FROM jobs WHERE id = ?`, jobID).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return &store.NotFoundError{Kind: "job", Key: jobID}
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 && cur != attempt {
			return &store.ConflictError{Kind: "job", Key: jobID, Reason: "log chunks of a stale attempt", Attempt: cur}
		}
		valid := make([]store.LogChunk, 0, len(chunks))
		for _, c := range chunks {
			if c.Seq >= 1 { // seq starts at 1 (remote.md); a 0 would hold the head at 0 forever
				valid = append(valid, c)
			}
		}
		// Fenced by the test above: the transaction is IMMEDIATE (it holds the database's
		// write lock from its start), so the job's attempt cannot change before it commits.
		// (A join with jobs per insert, as PostgreSQL's driver needs, cost a third of it.)
		// The job and attempt are bound once per statement (?1, ?2), not per row: binding a
		// text is a copy into SQLite's memory under the connection's mutex. The rows of
		// VALUES are inserted in their order, so the first of two chunks with one seq wins.
		// ("WHERE true": SQLite's parser needs it before an upsert clause after a SELECT.)
		if err := s.insertRows(ctx, tx, len(valid), 4,
			`INSERT INTO log_chunks (job_id, attempt, seq, stream, content, ts)
			SELECT ?1, ?2, column1, column2, column3, column4 FROM (VALUES `,
			`) WHERE true ON CONFLICT (job_id, attempt, seq) DO NOTHING`,
			func(args []any, i int) []any {
				c := valid[i]
				return append(args, c.Seq, c.Stream, c.Content, ns(c.TS))
			}, jobID, attempt); err != nil {
			return err
		}
		head, err = s.advance(ctx, tx, jobID, attempt, valid)
		return err
	})
	if err == nil {
		s.hub.Notify(store.JobLogs(jobID))
	}
	return head, err
}

func (s *DB) ListLogs(ctx context.Context, jobID string, attempt int, after int64, limit int) ([]store.LogChunk, error) {
	return list(ctx, s.db, "list logs", func(r scanner) (store.LogChunk, error) {
		var c store.LogChunk
		var ts int64
		err := r.Scan(&c.Seq, &c.Stream, &c.Content, &ts)
		c.TS = tm(ts)
		return c, err
	}, `SELECT seq, stream, content, ts FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq > ? ORDER BY seq LIMIT ?`,
		jobID, attempt, after, limit)
}

// rowsPerInsert is how many rows one multi-row INSERT carries: a batch of log chunks or
// events is a few statements, not one per row (parsing a statement per row was most of the
// log path's cost), and far below SQLite's limit on bound parameters (32766).
const rowsPerInsert = 200

// insertRows inserts n rows of width parameters each with statements head + "(?, …), …" +
// tail, rowsPerInsert rows at a time; row appends row i's values. lead are each statement's
// first parameters (?1, ?2, … in head); the rows' bare ? number after them.
func (s *DB) insertRows(ctx context.Context, tx *sql.Tx, n, width int, head, tail string, row func(args []any, i int) []any, lead ...any) error {
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?, ", width), ", ") + ")"
	for start := 0; start < n; start += rowsPerInsert {
		end := min(start+rowsPerInsert, n)
		var q strings.Builder
		q.WriteString(head)
		args := make([]any, 0, (end-start)*width+len(lead))
		args = append(args, lead...)
		for i := start; i < end; i++ {
			if i > start {
				q.WriteString(", ")
			}
			q.WriteString(tuple)
			args = row(args, i)
		}
		q.WriteString(tail)
		st, err := s.prepared(ctx, q.String())
		if err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// prepared is the statement of query, prepared once per process (database/sql prepares it
// again on each connection it first runs on, then reuses it there). Only insertRows' queries
// are cached: at most rowsPerInsert shapes per stream, so the cache is bounded.
func (s *DB) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if s.stmts == nil {
		s.stmts = map[string]*sql.Stmt{}
	}
	s.stmts[query] = st
	return st, nil
}
