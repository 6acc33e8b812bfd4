package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/hmci/hm/internal/store"
)

// acquireLeader is the whole election: one upsert that takes a free or lapsed lease, renews
// the owner's own, and changes nothing when another owner's is live (no row returned). The
// PostgreSQL driver runs the same statement.
const acquireLeader = `INSERT INTO leader_leases (name, owner, expires, epoch) VALUES (?, ?, ?, 1)
	ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires,
		epoch = CASE WHEN leader_leases.owner = excluded.owner AND leader_leases.expires >= ?
			THEN leader_leases.epoch ELSE leader_leases.epoch + 1 END
	WHERE leader_leases.owner = excluded.owner OR leader_leases.expires < ?
	RETURNING epoch`

const releaseLeader = `UPDATE leader_leases SET owner = '', expires = 0 WHERE name = ? AND owner = ? AND epoch = ?`

func (s *DB) AcquireLeader(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (int64, bool, error) {
	var epoch int64
	ok := true
	err := s.write(ctx, "acquire leader lease", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, acquireLeader, name, owner, ns(now.Add(ttl)), ns(now), ns(now)).Scan(&epoch)
		if errors.Is(err, sql.ErrNoRows) {
			ok = false
			return nil
		}
		return err
	})
	return epoch, ok && err == nil, err
}

func (s *DB) ReleaseLeader(ctx context.Context, name, owner string, epoch int64) error {
	return s.write(ctx, "release leader lease", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, releaseLeader, name, owner, epoch)
		return err
	})
}

// jobCounts is the queue and what runs, by state; the terminal states are left out so that
// the count stays over the live rows whatever the history.
const jobCounts = `SELECT state, COUNT(*) FROM jobs
	WHERE state IN ('pending', 'scheduled', 'assigned', 'running', 'canceling', 'timing_out') GROUP BY state`

func (s *DB) JobCounts(ctx context.Context) (map[store.JobState]int64, error) {
	type row struct {
		state string
		n     int64
	}
	rows, err := list(ctx, s.db, "count jobs", func(r scanner) (row, error) {
		var v row
		return v, r.Scan(&v.state, &v.n)
	}, jobCounts)
	if err != nil {
		return nil, err
	}
	out := map[store.JobState]int64{}
	for _, r := range rows {
		out[store.JobState(r.state)] = r.n
	}
	return out, nil
}
