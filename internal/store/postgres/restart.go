package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

// agentRestarted forgets what the restart of agent a removed, before the registration
// records its boot id, and returns the jobs it runs again.
func agentRestarted(ctx context.Context, tx pgx.Tx, a store.Agent, now time.Time) ([]string, error) {
	if a.BootID == "" {
		return nil, nil
	}
	var rerun []string
	for range sqlq.MaxRerunDepth {
		ids, err := list(ctx, tx, "upsert agent", sqlq.ScanString, sqlq.RerunParents, ns(now), a.ID, a.ID, a.ID, a.BootID, a.OrgID)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			break
		}
		rerun = append(rerun, ids...)
	}
	if _, err := exec(ctx, tx, sqlq.ForgetSnapshots, a.ID, a.ID, a.ID, a.BootID, a.OrgID); err != nil {
		return nil, err
	}
	return rerun, nil
}

func (s *DB) DropStaleSnapshotRemovals(ctx context.Context, now time.Time, retention time.Duration) (int64, error) {
	var n int64
	err := s.write(ctx, "drop stale snapshot removals", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, sqlq.DropStaleRemovals, ns(now.Add(-retention)))
		n = res.RowsAffected()
		return err
	})
	return n, err
}

func (s *DB) RerunLostParents(ctx context.Context, now time.Time, agentTTL time.Duration) ([]store.Job, error) {
	var jobs []store.Job
	err := s.write(ctx, "rerun lost parents", func(tx pgx.Tx) error {
		var err error
		jobs, err = s.labeledJobs(ctx, tx, "rerun lost parents", sqlq.RerunGoneParents, ns(now), ns(now.Add(-agentTTL)))
		return err
	})
	if err == nil {
		s.notifyJobs(jobs)
		s.notifyReleased(ctx, jobs...)
	}
	return jobs, err
}
