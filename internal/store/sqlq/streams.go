package sqlq

import (
	"fmt"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

// Build events and log chunks. Statements taking bigint put it after each parameter whose type
// PostgreSQL cannot infer from its context: "::bigint" there, "" on SQLite. The batch inserts
// differ wholly (multi-row VALUES on SQLite, unnest over arrays on PostgreSQL) and stay in the
// drivers.

// EventSeq takes the build's event counter for a batch, fenced by the driver lease epoch when
// it is >= 0. Parameters: batch size, build, epoch twice.
func EventSeq(bigint string) string {
	return `UPDATE builds SET event_seq = event_seq + ? WHERE id = ? AND (?` + bigint + ` < 0 OR driver_epoch = ?)
			RETURNING event_seq`
}

// BuildEpoch: build.
const BuildEpoch = `SELECT driver_epoch FROM builds WHERE id = ?`

// ListEvents reads the rows from the one that holds seq ? (the greatest seq at or before it),
// in order: an index seek, then the rows after, up to the one holding seq after+limit (the
// numbering is gap-free, so those rows hold the events wanted and no more: without that
// bound a reader behind by a big log read up to limit+1 rows of PackEvents events each to
// keep limit of them, and read them again for its next page). Parameters: build twice,
// after, after+limit, limit. Rows for ScanEventRow.
func ListEvents(bigint string) string {
	return `SELECT seq, n_events, payload, created_at FROM build_events WHERE build_id = ?
	AND seq >= COALESCE((SELECT MAX(seq) FROM build_events WHERE build_id = ? AND seq <= ?` + bigint + `), 0)
	AND seq <= ?` + bigint + `
	ORDER BY seq LIMIT ?`
}

// EventRow is a row of ListEvents.
type EventRow struct {
	store.EventPack
	Created int64
}

// ScanEventRow reads a row of ListEvents.
func ScanEventRow(r Scanner) (EventRow, error) {
	var v EventRow
	var p string
	err := r.Scan(&v.Seq, &v.Count, &p, &v.Created)
	v.Payload = []byte(p)
	return v, err
}

// NextLogRow is the chunk count of the row of (job, attempt) at seq. Parameters: job,
// attempt, seq.
func NextLogRow(bigint string) string {
	return `SELECT n_chunks FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq = ?` + bigint
}

const (
	// The fence: the head row exists only for the job's current attempt. Parameters: job,
	// attempt.
	InsertLogHead = `INSERT INTO log_heads (job_id, attempt, contiguous)
			SELECT id, attempt, 0 FROM jobs WHERE id = ? AND attempt = ? ON CONFLICT DO NOTHING`
	// job
	JobAttempt = `SELECT attempt FROM jobs WHERE id = ?`
	// job, attempt; the PostgreSQL driver adds FOR UPDATE.
	LogHead = `SELECT contiguous FROM log_heads WHERE job_id = ? AND attempt = ?`
)

// LogRowsBetween are the (seq, n_chunks) of the rows of (job, attempt) starting in a seq
// range. Parameters: job, attempt, low, high. Rows for ScanChunkPackHead.
func LogRowsBetween(bigint string) string {
	return `SELECT seq, n_chunks FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq BETWEEN ?` + bigint + ` AND ?` + bigint
}

// ScanChunkPackHead reads the seq and count of a row of log chunks.
func ScanChunkPackHead(r Scanner) (store.ChunkPack, error) {
	var p store.ChunkPack
	return p, r.Scan(&p.Seq, &p.Count)
}

// SetLogHead: contiguous, job, attempt.
func SetLogHead(bigint string) string {
	return `UPDATE log_heads SET contiguous = ?` + bigint + ` WHERE job_id = ? AND attempt = ?`
}

// ListLogs reads from the row holding seq after, like ListEvents. Parameters: job, attempt,
// job, attempt, after, limit.
func ListLogs(bigint string) string {
	return `SELECT seq, n_chunks, stream, content, ts FROM log_chunks WHERE job_id = ? AND attempt = ?
		AND seq >= COALESCE((SELECT MAX(seq) FROM log_chunks WHERE job_id = ? AND attempt = ? AND seq <= ?` + bigint + `), 0)
		ORDER BY seq LIMIT ?`
}

// UnpackEvents is ListEvents' answer from the rows ListEvents read: the events after seq
// after, at most limit.
func UnpackEvents(rows []EventRow, after int64, limit int) ([]store.Event, error) {
	var evs []store.Event
	var err error
	for _, r := range rows {
		if evs, err = r.Unpack(evs, after, limit, Tm(r.Created)); err != nil {
			return nil, fmt.Errorf("%w: list events: %w", errs.ErrInfra, err)
		}
	}
	return evs, nil
}
