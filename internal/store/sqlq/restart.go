package sqlq

// Queries of an agent's restart (store.Agents.UpsertAgent). Each is conditioned, in the
// statement, on the stored boot id differing from the registering one. Parameters of restartCond: agent, boot id, org.
const (
	restartCond = `EXISTS (SELECT 1 FROM agents WHERE id = ? AND boot_id <> ? AND (org_id = '' OR org_id = ?))`
	// lostSnapshot: the job's snapshot is on the agent and no cache entry of it names it
	// (a cached snapshot is a kept one, which the reconcile leaves). Parameters: agent twice.
	lostSnapshot = `snapshot_agent = ? AND snapshot NOT IN (SELECT snapshot FROM cache_entries WHERE agent_id = ?)`
	// RerunParents runs again the passed, non-cached parents (attempt > 0: a cache hit has
	// none) that lost their snapshot while a child still needs it. ready_at, then
	// lostSnapshot's and restartCond's parameters.
	RerunParents = `UPDATE jobs SET state = 'scheduled', ready_at = ?, agent_id = '', lease_expires = 0, ` + keepFirstPass + `,
			exit_code = NULL, snapshot = '', snapshot_agent = '', error_code = '', error_message = '',
			started_at = 0, finished_at = 0
		WHERE state = 'passed' AND attempt > 0 AND ` + lostSnapshot + `
		  AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id
			AND c.state IN ('pending', 'scheduled', 'assigned', 'running'))
		  AND build_id IN (SELECT id FROM builds WHERE state NOT IN ('passed', 'failed', 'canceled'))
		  AND ` + restartCond + `
		RETURNING id`
	ForgetSnapshots = `UPDATE jobs SET snapshot_agent = '' WHERE ` + lostSnapshot + ` AND ` + restartCond
)

// keepFirstPass records, at a job's first rerun, the claim and snapshot of the pass the
// build's scheduler saw (store.Job.RerunAttempt): a driver replaying the build ends the step
// as it ended then.
const keepFirstPass = `rerun_attempt = CASE WHEN rerun_attempt = 0 THEN attempt ELSE rerun_attempt END,
	rerun_snapshot = CASE WHEN rerun_attempt = 0 THEN snapshot ELSE rerun_snapshot END`

// MaxRerunDepth bounds the rounds of RerunParents: a round finds the parents of the jobs the
// previous one ran again (a chain's depth).
const MaxRerunDepth = 64

// DropStaleRemovals: parameter the cutoff (agents seen before it are gone).
const DropStaleRemovals = `DELETE FROM snapshot_removals WHERE NOT EXISTS
	(SELECT 1 FROM agents a WHERE a.id = snapshot_removals.agent_id AND a.last_seen >= ?)`

// RerunGoneParents is RerunParents for the parents whose snapshot's agent was not seen since
// a cutoff. Parameters: ready_at, the cutoff.
const RerunGoneParents = `UPDATE jobs SET state = 'scheduled', ready_at = ?, agent_id = '', lease_expires = 0, ` + keepFirstPass + `,
		exit_code = NULL, snapshot = '', snapshot_agent = '', error_code = '', error_message = '',
		started_at = 0, finished_at = 0
	WHERE state = 'passed' AND attempt > 0 AND snapshot_agent <> ''
	  AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = jobs.snapshot_agent AND a.last_seen >= ?)
	  AND EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = jobs.id
		AND c.state IN ('pending', 'scheduled', 'assigned', 'running'))
		  AND build_id IN (SELECT id FROM builds WHERE state NOT IN ('passed', 'failed', 'canceled'))
	RETURNING ` + JobCols
