package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) AcquireLeader(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (int64, bool, error) {
	var epoch int64
	ok := true
	err := s.write(ctx, "acquire leader lease", func(tx pgx.Tx) error {
		ok = true
		err := row(ctx, tx, sqlq.AcquireLeader, name, owner, ns(now.Add(ttl)), ns(now), ns(now)).Scan(&epoch)
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
		_, err := exec(ctx, tx, sqlq.ReleaseLeader, name, owner, epoch)
		return err
	})
}

func (s *DB) JobCounts(ctx context.Context) (map[store.JobState]int64, error) {
	rows, err := list(ctx, s.pool, "count jobs", sqlq.ScanStateCount, sqlq.JobCounts)
	if err != nil {
		return nil, err
	}
	out := map[store.JobState]int64{}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out, nil
}
