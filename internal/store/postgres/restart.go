package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

// Queries of an agent's restart (store.Agents.UpsertAgent): the SQLite driver's text, see
// internal/store/sqlite/restart.go.
const (
	restartCond  = `EXISTS (SELECT 1 FROM agents WHERE id = ? AND boot_id <> ? AND (org_id = '' OR org_id = ?))`
	lostSnapshot = `snapshot_agent = ? AND snapshot NOT IN (SELECT snapshot FROM cache_entries WHERE agent_id = ?)`
	rerunParents = `UPDATE jobs SET state = 'scheduled', ready_at = ?, agent_id = '', lease_expires = 0, ` + keepFirstPass + `,
			exit_code = NULL, snapshot = '', snapshot_agent = '', error_code = '', error_message = '',
			started_at = 0, finished_at = 0
		WHERE state = 'passed' AND attempt > 0 AND ` + lostSnapshot + `
		  AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id
			AND c.state IN ('pending', 'scheduled', 'assigned', 'running'))
		  AND build_id IN (SELECT id FROM builds WHERE state NOT IN ('passed', 'failed', 'canceled'))
		  AND ` + restartCond + `
		RETURNING id`
	forgetSnapshots = `UPDATE jobs SET snapshot_agent = '' WHERE ` + lostSnapshot + ` AND ` + restartCond
)

const keepFirstPass = `rerun_attempt = CASE WHEN rerun_attempt = 0 THEN attempt ELSE rerun_attempt END,
	rerun_snapshot = CASE WHEN rerun_attempt = 0 THEN snapshot ELSE rerun_snapshot END`

const maxRerunDepth = 64

// agentRestarted forgets what the restart of agent a removed, before the registration
// records its boot id, and returns the jobs it runs again.
func agentRestarted(ctx context.Context, tx pgx.Tx, a store.Agent, now time.Time) ([]string, error) {
	if a.BootID == "" {
		return nil, nil
	}
	var rerun []string
	for range maxRerunDepth {
		ids, err := list(ctx, tx, "upsert agent", func(r scanner) (string, error) {
			var id string
			return id, r.Scan(&id)
		}, rerunParents, ns(now), a.ID, a.ID, a.ID, a.BootID, a.OrgID)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			break
		}
		rerun = append(rerun, ids...)
	}
	if _, err := exec(ctx, tx, forgetSnapshots, a.ID, a.ID, a.ID, a.BootID, a.OrgID); err != nil {
		return nil, err
	}
	return rerun, nil
}

const dropStaleRemovals = `DELETE FROM snapshot_removals WHERE NOT EXISTS
	(SELECT 1 FROM agents a WHERE a.id = snapshot_removals.agent_id AND a.last_seen >= ?)`

func (s *DB) DropStaleSnapshotRemovals(ctx context.Context, now time.Time, retention time.Duration) (int64, error) {
	var n int64
	err := s.write(ctx, "drop stale snapshot removals", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, dropStaleRemovals, ns(now.Add(-retention)))
		n = res.RowsAffected()
		return err
	})
	return n, err
}

// rerunGoneParents is rerunParents for the parents whose snapshot's agent was not seen since
// a cutoff. Parameters: ready_at, the cutoff.
const rerunGoneParents = `UPDATE jobs SET state = 'scheduled', ready_at = ?, agent_id = '', lease_expires = 0, ` + keepFirstPass + `,
		exit_code = NULL, snapshot = '', snapshot_agent = '', error_code = '', error_message = '',
		started_at = 0, finished_at = 0
	WHERE state = 'passed' AND attempt > 0 AND snapshot_agent <> ''
	  AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = jobs.snapshot_agent AND a.last_seen >= ?)
	  AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id
		AND c.state IN ('pending', 'scheduled', 'assigned', 'running'))
		  AND build_id IN (SELECT id FROM builds WHERE state NOT IN ('passed', 'failed', 'canceled'))
	RETURNING ` + sqlq.JobCols

func (s *DB) RerunLostParents(ctx context.Context, now time.Time, agentTTL time.Duration) ([]store.Job, error) {
	var jobs []store.Job
	err := s.write(ctx, "rerun lost parents", func(tx pgx.Tx) error {
		var err error
		if jobs, err = list(ctx, tx, "rerun lost parents", sqlq.ScanJob, rerunGoneParents, ns(now), ns(now.Add(-agentTTL))); err != nil {
			return err
		}
		for i := range jobs {
			if err := s.labels(ctx, tx, &jobs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.notifyJobs(jobs)
		s.notifyReleased(ctx, jobs...)
	}
	return jobs, err
}
