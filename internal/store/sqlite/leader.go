package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) AcquireLeader(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (int64, bool, error) {
	var epoch int64
	ok := true
	err := s.write(ctx, "acquire leader lease", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, sqlq.AcquireLeader, name, owner, ns(now.Add(ttl)), ns(now), ns(now)).Scan(&epoch)
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
		_, err := tx.ExecContext(ctx, sqlq.ReleaseLeader, name, owner, epoch)
		return err
	})
}

func (s *DB) JobCounts(ctx context.Context) (map[store.JobState]int64, error) {
	rows, err := list(ctx, s.db, "count jobs", sqlq.ScanStateCount, sqlq.JobCounts)
	if err != nil {
		return nil, err
	}
	out := map[store.JobState]int64{}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out, nil
}
