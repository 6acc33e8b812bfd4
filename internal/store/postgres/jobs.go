package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
)

const jobCols = `id, build_id, ordinal, step_key, name, command, depends_on, parent_id, backend, state, attempt,
	agent_id, lease_expires, exit_code, snapshot, snapshot_agent, error_code, error_message, infra_retries,
	created_at, ready_at, started_at, finished_at, cache_note, policy_attempt, artifacts, rerun_attempt, rerun_snapshot`

// leased are the states in which an agent holds the job, as SQL.
const leased = `('assigned', 'running', 'canceling', 'timing_out')`

// parentFailed are the end states of a parent run again that did not pass, as SQL (a
// released child's parent had passed).
const parentFailed = `('failed', 'canceled', 'timed_out', 'skipped')`

func scanJob(r scanner) (store.Job, error) {
	var j store.Job
	var deps, artifacts string
	var exit *int64
	var lease, c, ready, st, fin int64
	err := r.Scan(&j.ID, &j.BuildID, &j.Ordinal, &j.StepKey, &j.Name, &j.Command, &deps, &j.ParentID, &j.Backend,
		&j.State, &j.Attempt, &j.AgentID, &lease, &exit, &j.Snapshot, &j.SnapshotAgent, &j.ErrorCode, &j.ErrorMessage,
		&j.InfraRetries, &c, &ready, &st, &fin, &j.CacheNote, &j.PolicyAttempt, &artifacts, &j.RerunAttempt, &j.RerunSnapshot)
	if err != nil {
		return j, err
	}
	if err := json.Unmarshal([]byte(deps), &j.DependsOn); err != nil {
		return j, fmt.Errorf("job %s: depends_on: %w", j.ID, err)
	}
	if exit != nil {
		e := int(*exit)
		j.ExitCode = &e
	}
	if artifacts != "" {
		j.Artifacts = json.RawMessage(artifacts)
	}
	j.LeaseExpires, j.CreatedAt, j.ReadyAt, j.StartedAt, j.FinishedAt = tm(lease), tm(c), tm(ready), tm(st), tm(fin)
	return j, nil
}

func (s *DB) labels(ctx context.Context, q querier, j *store.Job) error {
	ls, err := list(ctx, q, "job labels", func(r scanner) (string, error) {
		var l string
		return l, r.Scan(&l)
	}, `SELECT label FROM job_labels WHERE job_id = ? ORDER BY label COLLATE "C"`, j.ID)
	j.Labels = ls
	return err
}

func (s *DB) GetJob(ctx context.Context, id string) (store.Job, error) {
	j, err := one(row(ctx, s.pool, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id), scanJob, "job", id)
	if err == nil {
		err = s.labels(ctx, s.pool, &j)
	}
	return j, wrap("get job", err)
}

func (s *DB) ListJobs(ctx context.Context, buildID string) ([]store.Job, error) {
	jobs, err := list(ctx, s.pool, "list jobs", scanJob, `SELECT `+jobCols+` FROM jobs WHERE build_id = ? ORDER BY ordinal`, buildID)
	if err != nil {
		return nil, err
	}
	type label struct{ job, label string }
	ls, err := list(ctx, s.pool, "list jobs", func(r scanner) (label, error) {
		var l label
		return l, r.Scan(&l.job, &l.label)
	}, `SELECT l.job_id, l.label FROM job_labels l JOIN jobs j ON j.id = l.job_id WHERE j.build_id = ? ORDER BY l.label COLLATE "C"`, buildID)
	if err != nil {
		return nil, err
	}
	byJob := map[string][]string{}
	for _, l := range ls {
		byJob[l.job] = append(byJob[l.job], l.label)
	}
	for i := range jobs {
		jobs[i].Labels = byJob[jobs[i].ID]
	}
	return jobs, nil
}

// transition runs one UPDATE … RETURNING on a job. When it matches no row, the job is read
// back only to say why (never to decide anything): absent, a stale attempt (attempt > 0 given),
// or already in one of the states done, which makes the write an idempotent repeat.
func (s *DB) transition(ctx context.Context, op, id string, attempt int, done func(store.Job) bool, query string, args ...any) (store.Job, error) {
	var j store.Job
	err := s.write(ctx, op, func(tx pgx.Tx) error {
		var err error
		j, err = scanJob(row(ctx, tx, query, args...))
		if errors.Is(err, pgx.ErrNoRows) {
			cur, gerr := one(row(ctx, tx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id), scanJob, "job", id)
			if gerr != nil {
				return gerr
			}
			c := &store.ConflictError{Kind: "job", Key: id, State: string(cur.State), Attempt: cur.Attempt}
			switch {
			case attempt > 0 && cur.Attempt != attempt:
				c.Reason = fmt.Sprintf("attempt %d is not the current one", attempt)
				return c
			case done != nil && done(cur):
				j = cur
				return nil
			}
			c.Reason = op + " refused in this state"
			return c
		}
		if err != nil {
			return err
		}
		return s.labels(ctx, tx, &j)
	})
	// A heartbeat only extends a lease: no waiter cares.
	if err == nil && op != "heartbeat" {
		s.notify(store.JobChanged(id))
	}
	return j, err
}

func in(states ...store.JobState) func(store.Job) bool {
	return func(j store.Job) bool { return slices.Contains(states, j.State) }
}

func (s *DB) ReleaseJob(ctx context.Context, id string, now time.Time) (store.Job, error) {
	j, err := s.transition(ctx, "release job", id, 0, in(store.JobScheduled),
		`UPDATE jobs SET state = 'scheduled', ready_at = ? WHERE id = ? AND state = 'pending' RETURNING `+jobCols, ns(now), id)
	if err == nil {
		s.notifyReleased(ctx, j)
	}
	return j, err
}

func (s *DB) NoteCacheMiss(ctx context.Context, id, note string) (store.Job, error) {
	// The first note stays: a replay must log the line the first run logged.
	return s.transition(ctx, "note cache miss", id, 0, func(store.Job) bool { return true },
		`UPDATE jobs SET cache_note = ? WHERE id = ? AND state = 'pending' AND cache_note = '' RETURNING `+jobCols, note, id)
}

func (s *DB) RetryJob(ctx context.Context, id string, policyAttempt int, now time.Time) (store.Job, error) {
	var j store.Job
	err := s.write(ctx, "retry job", func(tx pgx.Tx) error {
		// Both statements are conditioned on the failed previous attempt: when it is not,
		// neither changes anything and the job is read back to say why.
		if _, err := exec(ctx, tx, `INSERT INTO job_tries (job_id, policy_attempt, attempt, exit_code, error_code, error_message, finished_at)
			SELECT id, policy_attempt, attempt, exit_code, error_code, error_message, finished_at FROM jobs
			WHERE id = ? AND state = 'failed' AND policy_attempt = ?`, id, policyAttempt-1); err != nil {
			return err
		}
		var err error
		j, err = scanJob(row(ctx, tx, `UPDATE jobs SET state = 'scheduled', policy_attempt = ?, ready_at = ?,
				agent_id = '', lease_expires = 0, exit_code = NULL, snapshot = '', snapshot_agent = '', error_code = '',
				error_message = '', infra_retries = 0, started_at = 0, finished_at = 0
			WHERE id = ? AND state = 'failed' AND policy_attempt = ? RETURNING `+jobCols, policyAttempt, ns(now), id, policyAttempt-1))
		if errors.Is(err, pgx.ErrNoRows) {
			cur, gerr := one(row(ctx, tx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id), scanJob, "job", id)
			if gerr != nil {
				return gerr
			}
			if cur.PolicyAttempt >= policyAttempt {
				j = cur // retried already: a repeat
				return s.labels(ctx, tx, &j)
			}
			return &store.ConflictError{Kind: "job", Key: id, State: string(cur.State), Attempt: cur.Attempt,
				Reason: fmt.Sprintf("retry as policy attempt %d refused: the job is at policy attempt %d", policyAttempt, cur.PolicyAttempt)}
		}
		if err != nil {
			return err
		}
		return s.labels(ctx, tx, &j)
	})
	if err == nil && j.State == store.JobScheduled {
		s.notify(store.JobChanged(id))
		s.notifyReleased(ctx, j)
	}
	return j, err
}

func (s *DB) ListJobTries(ctx context.Context, id string) ([]store.JobTry, error) {
	return list(ctx, s.pool, "list job tries", func(r scanner) (store.JobTry, error) {
		var t store.JobTry
		var exit *int64
		var fin int64
		err := r.Scan(&t.PolicyAttempt, &t.Attempt, &exit, &t.ErrorCode, &t.ErrorMessage, &fin)
		if exit != nil {
			e := int(*exit)
			t.ExitCode = &e
		}
		t.FinishedAt = tm(fin)
		return t, err
	}, `SELECT policy_attempt, attempt, exit_code, error_code, error_message, finished_at FROM job_tries
		WHERE job_id = ? ORDER BY policy_attempt`, id)
}

func (s *DB) PassCached(ctx context.Context, id, snapshot, agentID string, artifacts []byte, now time.Time) (store.Job, error) {
	return s.transition(ctx, "pass cached job", id, 0, func(j store.Job) bool {
		return j.State == store.JobPassed && j.Snapshot == snapshot && j.Attempt == 0
	}, `UPDATE jobs SET state = 'passed', exit_code = 0, snapshot = ?, snapshot_agent = ?, artifacts = ?, finished_at = ?
		WHERE id = ? AND state IN ('pending', 'scheduled') RETURNING `+jobCols, snapshot, agentID, string(artifacts), ns(now), id)
}

func (s *DB) SkipJob(ctx context.Context, id, reason string, now time.Time) (store.Job, error) {
	return s.transition(ctx, "skip job", id, 0, in(store.JobSkipped),
		`UPDATE jobs SET state = 'skipped', error_code = ?, finished_at = ?
		WHERE id = ? AND state IN ('pending', 'scheduled') RETURNING `+jobCols, reason, ns(now), id)
}

func (s *DB) CancelJob(ctx context.Context, id string, now time.Time) (store.Job, error) {
	// A job already stopping, or finished, needs nothing more: cancel is idempotent.
	return s.transition(ctx, "cancel job", id, 0, func(j store.Job) bool { return j.State.Stopping() || j.State.Terminal() },
		`UPDATE jobs SET state = 'canceling' WHERE id = ? AND state IN ('assigned', 'running') RETURNING `+jobCols, id)
}

func (s *DB) TimeOutJob(ctx context.Context, id string, now time.Time) (store.Job, error) {
	return s.transition(ctx, "time out job", id, 0, func(j store.Job) bool { return j.State.Stopping() || j.State.Terminal() },
		`UPDATE jobs SET state = 'timing_out', error_code = 'step_timeout' WHERE id = ? AND state IN ('assigned', 'running')
		RETURNING `+jobCols, id)
}

// claimQuery hands out the oldest ready job this agent may run. The subquery picks, the outer
// UPDATE takes it, and state = 'scheduled' is checked again outside so that the statement
// stays correct where the pick and the take are not serialized: on PostgreSQL the subquery
// gets FOR UPDATE SKIP LOCKED and concurrent claimers skip each other's rows. Parameters:
// agent, lease expiry, org, then agent three times.
const claimQuery = `UPDATE jobs SET state = 'assigned', attempt = attempt + 1, agent_id = ?, lease_expires = ?,
		started_at = 0, error_code = '', error_message = ''
	WHERE id = (
		SELECT j.id FROM jobs j JOIN builds b ON b.id = j.build_id
		WHERE j.state = 'scheduled'
		  -- tenancy: only the agent token's org's jobs
		  AND b.org_id = ?
		  AND EXISTS (SELECT 1 FROM agents a WHERE a.id = ?
		        AND (j.backend = '' OR j.backend = a.backend OR (j.backend = 'image' AND a.backend <> 'host')))
		  -- every label the job needs is one of the agent's
		  AND NOT EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = j.id
		        AND NOT EXISTS (SELECT 1 FROM agent_labels al WHERE al.agent_id = ? AND al.label = l.label))
		  -- a builds_in child runs where its parent's snapshot is
		  AND (j.parent_id = '' OR EXISTS (SELECT 1 FROM jobs p WHERE p.id = j.parent_id AND p.snapshot_agent = ?))
		-- oldest ready first; within a build, in plan order
		ORDER BY j.ready_at, j.created_at, j.build_id, j.ordinal
		LIMIT 1
		-- PostgreSQL only: lock the picked row, skipping rows other claimers hold (OF j: not
		-- the build's row, which event appends and transitions take).
		FOR UPDATE OF j SKIP LOCKED
	) AND state = 'scheduled'
	RETURNING ` + jobCols

func (s *DB) ClaimJob(ctx context.Context, c store.Claim) (store.Job, bool, error) {
	var j store.Job
	var ok bool
	if c.OrgID == "" {
		return j, false, errors.New("claim job: no org") // a programming error: never claim across orgs
	}
	err := s.write(ctx, "claim job", func(tx pgx.Tx) error {
		// Touching the agent is also its existence check: an unknown agent has no labels and
		// must register first.
		res, err := exec(ctx, tx, `UPDATE agents SET last_seen = ? WHERE id = ?`, ns(c.Now), c.AgentID)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "agent", Key: c.AgentID}
		}
		j, err = scanJob(row(ctx, tx, claimQuery, c.AgentID, ns(c.Now.Add(c.LeaseTTL)), c.OrgID, c.AgentID, c.AgentID, c.AgentID))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		return s.labels(ctx, tx, &j)
	})
	if err == nil && ok {
		s.notify(store.JobChanged(j.ID))
	}
	return j, ok, err
}

func (s *DB) StartJob(ctx context.Context, id string, attempt int, now time.Time) (store.Job, error) {
	// Stopping states are accepted and kept: a cancel that arrived between claim and start
	// still reaches the agent through the job it gets back.
	return s.transition(ctx, "start job", id, attempt, nil,
		`UPDATE jobs SET state = CASE WHEN state = 'assigned' THEN 'running' ELSE state END,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END
		WHERE id = ? AND attempt = ? AND state IN `+leased+` RETURNING `+jobCols, ns(now), id, attempt)
}

func (s *DB) Heartbeat(ctx context.Context, id string, attempt int, now time.Time, ttl time.Duration) (store.Job, error) {
	return s.transition(ctx, "heartbeat", id, attempt, nil,
		`UPDATE jobs SET lease_expires = ? WHERE id = ? AND attempt = ? AND state IN `+leased+` RETURNING `+jobCols,
		ns(now.Add(ttl)), id, attempt)
}

func (s *DB) FinishJob(ctx context.Context, id string, attempt int, f store.Finish) (store.Job, error) {
	// The end state follows from the job's state and the outcome, in the statement: a cancel
	// or timeout recorded while the step ran wins over its exit code. Only a passing step's
	// snapshot is recorded, with the agent that holds it (placement of builds_in children).
	ok := 0
	if f.ExitCode == 0 && f.ErrorCode == "" {
		ok = 1
	}
	return s.transition(ctx, "finish job", id, attempt, func(j store.Job) bool {
		return j.State.Terminal() && j.ExitCode != nil && *j.ExitCode == f.ExitCode &&
			(f.ErrorCode == "" || j.ErrorCode == f.ErrorCode)
	}, `UPDATE jobs SET
			state = CASE state WHEN 'canceling' THEN 'canceled' WHEN 'timing_out' THEN 'timed_out'
				ELSE CASE WHEN ? = 1 THEN 'passed' ELSE 'failed' END END,
			snapshot = CASE WHEN ? = 1 AND state IN ('assigned', 'running') THEN ? ELSE '' END,
			snapshot_agent = CASE WHEN ? = 1 AND state IN ('assigned', 'running') AND ? <> '' THEN agent_id ELSE '' END,
			exit_code = ?, error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END, error_message = ?,
			artifacts = CASE WHEN ? = 1 AND state IN ('assigned', 'running') THEN ? ELSE '' END,
			finished_at = ?, lease_expires = 0
		WHERE id = ? AND attempt = ? AND state IN `+leased+` RETURNING `+jobCols,
		ok, ok, f.Snapshot, ok, f.Snapshot, f.ExitCode, f.ErrorCode, f.ErrorCode, f.ErrorMessage, ok, string(f.Artifacts),
		ns(nowOr(f.Now)), id, attempt)
}

func (s *DB) ReapExpiredLeases(ctx context.Context, now time.Time, maxRetries int) ([]store.Job, error) {
	// One statement for every lapsed lease; each column's CASE reads the row's old values,
	// so they all agree on which branch the row takes. A requeued job keeps its ready_at:
	// it goes back to the head of the queue, not behind work submitted since.
	const q = `UPDATE jobs SET
			state = CASE WHEN state = 'canceling' THEN 'canceled' WHEN state = 'timing_out' THEN 'timed_out'
				WHEN infra_retries < ? THEN 'scheduled' ELSE 'failed' END,
			error_code = CASE WHEN state IN ('assigned', 'running') AND infra_retries >= ? THEN 'agent_lost' ELSE error_code END,
			error_message = CASE WHEN state IN ('assigned', 'running') AND infra_retries >= ?
				THEN 'agent ' || agent_id || ' lost: its lease lapsed' ELSE error_message END,
			finished_at = CASE WHEN state IN ('assigned', 'running') AND infra_retries < ? THEN finished_at ELSE ? END,
			agent_id = CASE WHEN state IN ('assigned', 'running') AND infra_retries < ? THEN '' ELSE agent_id END,
			infra_retries = CASE WHEN state IN ('assigned', 'running') AND infra_retries < ? THEN infra_retries + 1 ELSE infra_retries END,
			started_at = CASE WHEN state IN ('assigned', 'running') AND infra_retries < ? THEN 0 ELSE started_at END,
			lease_expires = 0
		WHERE state IN ` + leased + ` AND lease_expires < ?
		RETURNING ` + jobCols
	m := maxRetries
	var jobs []store.Job
	err := s.write(ctx, "reap leases", func(tx pgx.Tx) error {
		var err error
		jobs, err = list(ctx, tx, "reap leases", scanJob, q, m, m, m, m, ns(now), m, m, m, ns(now))
		if err != nil {
			return err
		}
		for i := range jobs {
			if err := s.labels(ctx, tx, &jobs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	slices.SortFunc(jobs, func(a, b store.Job) int { return a.ReadyAt.Compare(b.ReadyAt) })
	if err == nil {
		s.notifyJobs(jobs)
		s.notifyReleased(ctx, jobs...)
	}
	return jobs, err
}

func (s *DB) FailOrphans(ctx context.Context, now time.Time, agentTTL time.Duration) ([]store.Job, error) {
	// The agent conditions are the claim's (claimQuery), over every agent seen since the
	// cutoff instead of one.
	// A child whose parent runs again (an agent's restart lost its snapshot: UpsertAgent)
	// waits for it wherever it will pass; once that run failed, the child never can run.
	const q = `UPDATE jobs SET state = 'failed', error_code = 'agent_lost',
			error_message = CASE WHEN EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id AND p.state IN ` + parentFailed + `)
				THEN 'its parent ran again to restore the snapshot its agent lost, and did not pass'
				ELSE 'its agent was lost and no agent that could run it was seen since' END,
			finished_at = ?
		WHERE state = 'scheduled' AND (EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id AND p.state IN ` + parentFailed + `)
		  OR infra_retries > 0
		  AND NOT EXISTS (SELECT 1 FROM agents a JOIN builds b ON b.id = jobs.build_id
			WHERE a.last_seen >= ? AND (a.org_id = '' OR a.org_id = b.org_id)
			  AND (jobs.backend = '' OR jobs.backend = a.backend OR (jobs.backend = 'image' AND a.backend <> 'host'))
			  AND NOT EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id
				AND NOT EXISTS (SELECT 1 FROM agent_labels al WHERE al.agent_id = a.id AND al.label = l.label))
			  AND (jobs.parent_id = '' OR EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id
				AND (p.snapshot_agent = a.id OR p.state IN ('scheduled', 'assigned', 'running'))))))
		RETURNING ` + jobCols
	var jobs []store.Job
	err := s.write(ctx, "fail orphans", func(tx pgx.Tx) error {
		var err error
		jobs, err = list(ctx, tx, "fail orphans", scanJob, q, ns(now), ns(now.Add(-agentTTL)))
		if err != nil {
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
	}
	return jobs, err
}
