package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
)

// The SQLite driver's statements (internal/store/sqlite/leader.go), rebound: the election is
// one upsert, atomic under concurrent replicas (ON CONFLICT takes the row lock and re-checks
// the WHERE against the committed row).
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
	err := s.write(ctx, "acquire leader lease", func(tx pgx.Tx) error {
		ok = true
		err := row(ctx, tx, acquireLeader, name, owner, ns(now.Add(ttl)), ns(now), ns(now)).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			ok = false
			return nil
		}
		return err
	})
	return epoch, ok && err == nil, err
}

func (s *DB) ReleaseLeader(ctx context.Context, name, owner string, epoch int64) error {
	return s.write(ctx, "release leader lease", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, releaseLeader, name, owner, epoch)
		return err
	})
}

const jobCounts = `SELECT state, COUNT(*) FROM jobs
	WHERE state IN ('pending', 'scheduled', 'assigned', 'running', 'canceling', 'timing_out') GROUP BY state`

func (s *DB) JobCounts(ctx context.Context) (map[store.JobState]int64, error) {
	type cnt struct {
		state string
		n     int64
	}
	rows, err := list(ctx, s.pool, "count jobs", func(r scanner) (cnt, error) {
		var v cnt
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
