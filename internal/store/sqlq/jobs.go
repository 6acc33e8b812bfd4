package sqlq

import (
	"encoding/json"
	"fmt"

	"github.com/hmci/hm/internal/store"
)

// JobCols are the columns ScanJob reads, in its order.
const JobCols = `id, build_id, ordinal, step_key, name, command, depends_on, parent_id, backend, state, attempt,
	agent_id, lease_expires, exit_code, snapshot, snapshot_agent, error_code, error_message, infra_retries,
	created_at, ready_at, started_at, finished_at, cache_note, policy_attempt, artifacts, rerun_attempt, rerun_snapshot`

// Leased are the states in which an agent holds the job, as SQL.
const Leased = `('assigned', 'running', 'canceling', 'timing_out')`

// ParentFailed are the end states of a parent run again that did not pass, as SQL (a
// released child's parent had passed).
const ParentFailed = `('failed', 'canceled', 'timed_out', 'skipped')`

// ScanJob reads a row of JobCols. Labels are read apart (JobLabels).
func ScanJob(r Scanner) (store.Job, error) {
	var j store.Job
	var deps, artifacts string
	var exit *int64 // NULL: no exit code (database/sql and pgx both scan NULL into a nil pointer)
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
	j.LeaseExpires, j.CreatedAt, j.ReadyAt, j.StartedAt, j.FinishedAt = Tm(lease), Tm(c), Tm(ready), Tm(st), Tm(fin)
	return j, nil
}

// ScanJobTry reads a row of ListJobTries.
func ScanJobTry(r Scanner) (store.JobTry, error) {
	var t store.JobTry
	var exit *int64
	var fin int64
	err := r.Scan(&t.PolicyAttempt, &t.Attempt, &exit, &t.ErrorCode, &t.ErrorMessage, &fin)
	if exit != nil {
		e := int(*exit)
		t.ExitCode = &e
	}
	t.FinishedAt = Tm(fin)
	return t, err
}

// Job reads: by id; a build's in plan order.
const (
	GetJob   = `SELECT ` + JobCols + ` FROM jobs WHERE id = ?`
	ListJobs = `SELECT ` + JobCols + ` FROM jobs WHERE build_id = ? ORDER BY ordinal`
)

// JobLabels and BuildJobLabels end in their ORDER BY so that the PostgreSQL driver can add
// COLLATE "C" (SQLite's byte order). BuildJobLabels yields (job id, label).
const (
	JobLabels      = `SELECT label FROM job_labels WHERE job_id = ? ORDER BY label`
	BuildJobLabels = `SELECT l.job_id, l.label FROM job_labels l JOIN jobs j ON j.id = l.job_id WHERE j.build_id = ? ORDER BY l.label`
	BuildOrg       = `SELECT org_id FROM builds WHERE id = ?`
	ListJobTries   = `SELECT policy_attempt, attempt, exit_code, error_code, error_message, finished_at FROM job_tries
		WHERE job_id = ? ORDER BY policy_attempt`
)

// Job transitions, each one UPDATE … WHERE <expected state> RETURNING JobCols. Parameters
// are listed after each.
const (
	// ready_at, id
	ReleaseJob = `UPDATE jobs SET state = 'scheduled', ready_at = ? WHERE id = ? AND state = 'pending' RETURNING ` + JobCols
	// snapshot, snapshot agent, artifacts, finished_at, id
	PassCached = `UPDATE jobs SET state = 'passed', exit_code = 0, snapshot = ?, snapshot_agent = ?, artifacts = ?, finished_at = ?
		WHERE id = ? AND state IN ('pending', 'scheduled') RETURNING ` + JobCols
	// note, id
	NoteCacheMiss = `UPDATE jobs SET cache_note = ? WHERE id = ? AND state = 'pending' AND cache_note = '' RETURNING ` + JobCols
	// id, previous policy attempt
	RetryJobTry = `INSERT INTO job_tries (job_id, policy_attempt, attempt, exit_code, error_code, error_message, finished_at)
			SELECT id, policy_attempt, attempt, exit_code, error_code, error_message, finished_at FROM jobs
			WHERE id = ? AND state = 'failed' AND policy_attempt = ?`
	// policy attempt, ready_at, id, previous policy attempt
	RetryJob = `UPDATE jobs SET state = 'scheduled', policy_attempt = ?, ready_at = ?,
				agent_id = '', lease_expires = 0, exit_code = NULL, snapshot = '', snapshot_agent = '', error_code = '',
				error_message = '', infra_retries = 0, started_at = 0, finished_at = 0
			WHERE id = ? AND state = 'failed' AND policy_attempt = ? RETURNING ` + JobCols
	// reason, finished_at, id
	SkipJob = `UPDATE jobs SET state = 'skipped', error_code = ?, finished_at = ?
		WHERE id = ? AND state IN ('pending', 'scheduled') RETURNING ` + JobCols
	// id
	CancelJob = `UPDATE jobs SET state = 'canceling' WHERE id = ? AND state IN ('assigned', 'running') RETURNING ` + JobCols
	// id
	TimeOutJob = `UPDATE jobs SET state = 'timing_out', error_code = 'step_timeout' WHERE id = ? AND state IN ('assigned', 'running')
		RETURNING ` + JobCols
	// last_seen, agent id
	TouchAgent = `UPDATE agents SET last_seen = ? WHERE id = ?`
	// started_at, id, attempt
	StartJob = `UPDATE jobs SET state = CASE WHEN state = 'assigned' THEN 'running' ELSE state END,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END
		WHERE id = ? AND attempt = ? AND state IN ` + Leased + ` RETURNING ` + JobCols
	// lease expiry, id, attempt
	Heartbeat = `UPDATE jobs SET lease_expires = ? WHERE id = ? AND attempt = ? AND state IN ` + Leased + ` RETURNING ` + JobCols
	// ok, ok, snapshot, ok, snapshot, exit code, error code, error code, error message, ok,
	// artifacts, finished_at, id, attempt (ok is 1 for a passing step, else 0)
	FinishJob = `UPDATE jobs SET
			state = CASE state WHEN 'canceling' THEN 'canceled' WHEN 'timing_out' THEN 'timed_out'
				ELSE CASE WHEN ? = 1 THEN 'passed' ELSE 'failed' END END,
			snapshot = CASE WHEN ? = 1 AND state IN ('assigned', 'running') THEN ? ELSE '' END,
			snapshot_agent = CASE WHEN ? = 1 AND state IN ('assigned', 'running') AND ? <> '' THEN agent_id ELSE '' END,
			exit_code = ?, error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END, error_message = ?,
			artifacts = CASE WHEN ? = 1 AND state IN ('assigned', 'running') THEN ? ELSE '' END,
			finished_at = ?, lease_expires = 0
		WHERE id = ? AND attempt = ? AND state IN ` + Leased + ` RETURNING ` + JobCols
)

// Claim is the statement that hands out the oldest ready job this agent may run, with lock
// after the subquery's LIMIT 1 ("" where the writes are serialized, as on SQLite). The
// subquery picks, the outer UPDATE takes it, and state = 'scheduled' is checked again outside
// so that the statement stays correct where the pick and the take are not serialized: on
// PostgreSQL the lock is FOR UPDATE SKIP LOCKED and concurrent claimers skip each other's
// rows. The claim records whom it was made for, a Finish and a worker (FinishRef and Worker of
// store.Claim, "" for none), for the hand-backs below, and claims nothing while one of them
// has a claim to hand back: a Finish that has a job claimed for it, a worker that holds an
// unacknowledged one (so the hand-back and the claim may run in one batch: the claim sees
// what the hand-back found). Where two repeats of a Finish race (PostgreSQL replicas), the
// unique index on claim_finish refuses the second. Parameters: ClaimArgs.
func Claim(lock string) string { return claimPick + lock + claimTake }

const claimPick = `UPDATE jobs SET state = 'assigned', attempt = attempt + 1, agent_id = ?, lease_expires = ?,
		started_at = 0, error_code = '', error_message = '', claim_finish = ?, claim_worker = ?
	WHERE id = (
		SELECT j.id FROM jobs j JOIN builds b ON b.id = j.build_id
		WHERE j.state = 'scheduled'
		  -- a Finish claims at most one job; its repeats get that one back (HandBackFinish)
		  AND (CAST(? AS TEXT) = '' OR NOT EXISTS (SELECT 1 FROM jobs f WHERE f.claim_finish = ? AND f.claim_finish <> ''))
		  -- a worker holding an unacknowledged claim gets that one back (HandBackWorker)
		  AND (CAST(? AS TEXT) = '' OR NOT EXISTS (SELECT 1 FROM jobs w WHERE w.agent_id = ? AND w.claim_worker = ?
		        AND w.claim_worker <> '' AND w.started_at = 0 AND w.state IN ` + Leased + `))
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
		LIMIT 1`

const claimTake = `
	) AND state = 'scheduled'
	RETURNING ` + JobCols

// Hand-backs (store.Claims.ClaimJob): a claim whose answer was lost, answered again with the
// same attempt and the lease renewed, while it is leased to the agent and no Start has
// acknowledged it (started_at: a Start sets it, every claim clears it). The terms of each
// index's WHERE are repeated so that SQLite uses the index; what the pick chose is checked
// again outside, as in Claim.
const (
	// lease expiry, finish, agent. claim_finish is unique: one row at most.
	HandBackFinish = `UPDATE jobs SET lease_expires = ?
		WHERE claim_finish = ? AND claim_finish <> '' AND agent_id = ? AND started_at = 0 AND state IN ` + Leased + `
		RETURNING ` + JobCols
	// lease expiry, agent, worker, agent, worker
	HandBackWorker = `UPDATE jobs SET lease_expires = ?
		WHERE id = (SELECT id FROM jobs WHERE agent_id = ? AND claim_worker = ? AND claim_worker <> '' AND started_at = 0
				AND state IN ` + Leased + ` ORDER BY ready_at, created_at, id LIMIT 1)
		  AND agent_id = ? AND claim_worker = ? AND started_at = 0 AND state IN ` + Leased + `
		RETURNING ` + JobCols
)

// HandBack is the statement and parameters of c's hand-back ("" for a claim naming neither a
// worker nor a Finish): by its worker, which holds at most one unacknowledged claim (Claim's
// guard), the Finish's included; else, for an agent that names no worker, by its Finish.
func HandBack(c store.Claim) (string, []any) {
	leaseExpiry := NS(c.Now.Add(c.LeaseTTL))
	switch {
	case c.Worker != "":
		return HandBackWorker, []any{leaseExpiry, c.AgentID, c.Worker, c.AgentID, c.Worker}
	case c.AfterJob != "":
		return HandBackFinish, []any{leaseExpiry, c.FinishRef(), c.AgentID}
	}
	return "", nil
}

// ClaimArgs are Claim's parameters for c: agent, lease expiry, finish, worker (the SET);
// finish twice, worker, agent, worker (the guards); org, then agent three times.
func ClaimArgs(c store.Claim) []any {
	f, w := c.FinishRef(), c.Worker
	return []any{c.AgentID, NS(c.Now.Add(c.LeaseTTL)), f, w, f, f, w, c.AgentID, w, c.OrgID, c.AgentID, c.AgentID, c.AgentID}
}

// ReapLeases ends every lapsed lease in one statement; each column's CASE reads the row's old
// values, so they all agree on which branch the row takes. A requeued job keeps its ready_at:
// it goes back to the head of the queue, not behind work submitted since. Parameters: max
// retries four times, now, max retries three times, now.
const ReapLeases = `UPDATE jobs SET
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
		WHERE state IN ` + Leased + ` AND lease_expires < ?
		RETURNING ` + JobCols

// FailOrphans fails the scheduled jobs no agent can run. The agent conditions are Claim's,
// over every agent seen since the cutoff instead of one. A child whose parent runs again (an
// agent's restart lost its snapshot: UpsertAgent) waits for it wherever it will pass; once
// that run failed, the child never can run. Parameters: now, agent cutoff.
const FailOrphans = `UPDATE jobs SET state = 'failed', error_code = 'agent_lost',
			error_message = CASE WHEN EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id AND p.state IN ` + ParentFailed + `)
				THEN 'its parent ran again to restore the snapshot its agent lost, and did not pass'
				ELSE 'its agent was lost and no agent that could run it was seen since' END,
			finished_at = ?
		WHERE state = 'scheduled' AND (EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id AND p.state IN ` + ParentFailed + `)
		  OR infra_retries > 0
		  AND NOT EXISTS (SELECT 1 FROM agents a JOIN builds b ON b.id = jobs.build_id
			WHERE a.last_seen >= ? AND (a.org_id = '' OR a.org_id = b.org_id)
			  AND (jobs.backend = '' OR jobs.backend = a.backend OR (jobs.backend = 'image' AND a.backend <> 'host'))
			  AND NOT EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id
				AND NOT EXISTS (SELECT 1 FROM agent_labels al WHERE al.agent_id = a.id AND al.label = l.label))
			  AND (jobs.parent_id = '' OR EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id
				AND (p.snapshot_agent = a.id OR p.state IN ('scheduled', 'assigned', 'running'))))))
		RETURNING ` + JobCols
