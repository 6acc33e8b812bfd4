package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

// Build events and log chunks: the two append-only streams.

// bigint follows a parameter whose type PostgreSQL cannot infer (sqlq.EventSeq): SQLite needs nothing.
const bigint = ""

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
	err := s.write(ctx, "append events", func(tx *sql.Tx) error {
		// The build row is the counter, taken for the whole batch in the same transaction as
		// the inserts: gap-free, and a rolled-back append gives its numbers back.
		var last int64
		err := tx.QueryRowContext(ctx, sqlq.EventSeq(bigint), len(payloads), buildID, epoch, epoch).Scan(&last)
		if errors.Is(err, sql.ErrNoRows) {
			var cur int64
			if err := tx.QueryRowContext(ctx, sqlq.BuildEpoch, buildID).Scan(&cur); err != nil {
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
		packs = store.PackPayloads(first, payloads)
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
	s.recent.AddPacks(buildID, packs, tm(now))
	s.hub.Notify(store.BuildEvents(buildID))
	return seqs, nil
}

func (s *DB) ListEvents(ctx context.Context, buildID string, after int64, limit int) ([]store.Event, error) {
	if evs, ok := s.recent.After(buildID, after, limit); ok {
		return evs, nil
	}
	// From the row holding seq after (it may hold later ones too): limit+1 rows hold at
	// least limit events after it.
	rows, err := list(ctx, s.db, "list events", sqlq.ScanEventRow, sqlq.ListEvents(bigint), buildID, buildID, after, store.SeqAfter(after, limit), limit+1)
	if err != nil {
		return nil, err
	}
	return sqlq.UnpackEvents(rows, after, limit)
}

// advance moves the head of (job, attempt) past the rows stored from head+1 on: one seek per
// row of the run, so an in-order batch costs a seek or two, not a query over its chunks.
func advance(ctx context.Context, tx *sql.Tx, jobID string, attempt int, head int64) (int64, error) {
	for {
		var n int64
		err := tx.QueryRowContext(ctx, sqlq.NextLogRow(bigint), jobID, attempt, head+1).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
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
	err := s.write(ctx, "append logs", func(tx *sql.Tx) error {
		// The fence: the head row exists only for the job's current attempt (created here on
		// its first chunk), and every insert below is conditional on the same test, so chunks
		// of an attempt that was reclaimed in between are dropped, not stored.
		res, err := tx.ExecContext(ctx, sqlq.InsertLogHead, jobID, attempt)
		if err != nil {
			return err
		}
		var cur int
		err = tx.QueryRowContext(ctx, sqlq.JobAttempt, jobID).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return &store.NotFoundError{Kind: "job", Key: jobID}
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 && cur != attempt {
			return &store.ConflictError{Kind: "job", Key: jobID, Reason: "log chunks of a stale attempt", Attempt: cur}
		}
		if err := tx.QueryRowContext(ctx, sqlq.LogHead, jobID, attempt).Scan(&head); err != nil {
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
			// Fenced by the test above: the transaction is IMMEDIATE (it holds the database's
			// write lock from its start), so the job's attempt cannot change before it
			// commits, and no other append of the attempt runs in between: the rows do not
			// overlap the stored ones (no ON CONFLICT: an overlap would be a bug, and fails).
			if err := s.insertRows(ctx, tx, len(packs), 5,
				`INSERT INTO log_chunks (job_id, attempt, seq, n_chunks, stream, content, ts)
				SELECT ?1, ?2, column1, column2, column3, column4, column5 FROM (VALUES `, `)`,
				func(args []any, i int) []any {
					p := packs[i]
					return append(args, p.Seq, p.Count, p.Stream, string(p.Content), ns(p.TS))
				}, jobID, attempt); err != nil {
				return err
			}
		}
		next, err := advance(ctx, tx, jobID, attempt, head)
		if err != nil || next == head {
			return err
		}
		head = next
		_, err = tx.ExecContext(ctx, sqlq.SetLogHead(bigint), head, jobID, attempt)
		return err
	})
	if err == nil {
		s.hub.Notify(store.JobLogs(jobID))
	}
	return head, err
}

func (s *DB) ListLogs(ctx context.Context, jobID string, attempt int, after int64, limit int) ([]store.LogChunk, error) {
	// From the row holding seq after (it may hold later ones too): limit+1 rows hold at
	// least limit chunks after it. Rows are read one at a time, and no further once limit
	// chunks are in hand (a row holds up to PackChunks).
	rows, err := s.db.QueryContext(ctx, sqlq.ListLogs(bigint), jobID, attempt, jobID, attempt, after, limit+1)
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
