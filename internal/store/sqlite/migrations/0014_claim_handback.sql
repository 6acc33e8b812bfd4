-- Schema 14: whom a job's current claim was made for, so that a claim whose answer was lost
-- is answered again (store.Claims.ClaimJob) instead of made a second time. claim_finish is
-- the Finish (job id/attempt) whose Next made the claim: a repeat of that Finish gets the
-- same job back, and a Finish claims at most one job (the unique index, also across
-- replicas racing on its repeats). claim_worker is the agent's worker it was made for: a
-- worker claims only while it holds no job, so a claim of its that no Start acknowledged is
-- one whose answer it lost. Both are rewritten by every claim.
ALTER TABLE jobs ADD COLUMN claim_finish TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN claim_worker TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX jobs_claim_finish ON jobs (claim_finish) WHERE claim_finish <> '';
CREATE INDEX jobs_claim_worker ON jobs (agent_id, claim_worker) WHERE claim_worker <> '' AND started_at = 0;
