-- Schema 6: retry policies on the server. A job counts the attempts of its step's retry
-- policy (policy_attempt, HM_ATTEMPT, from 1) beside its claims (attempt, the fencing token);
-- each failed policy attempt is kept in job_tries when the job is retried, so that a driver
-- taking the build over replays it as it ended.
ALTER TABLE jobs ADD COLUMN policy_attempt INTEGER NOT NULL DEFAULT 1;
CREATE TABLE job_tries (
	job_id         TEXT    NOT NULL REFERENCES jobs (id),
	policy_attempt INTEGER NOT NULL,
	attempt        INTEGER NOT NULL, -- the claim that ended it: its log chunks
	exit_code      INTEGER,
	error_code     TEXT    NOT NULL DEFAULT '',
	error_message  TEXT    NOT NULL DEFAULT '',
	finished_at    INTEGER NOT NULL,
	PRIMARY KEY (job_id, policy_attempt)
);
