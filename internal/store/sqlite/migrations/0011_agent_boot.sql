-- Schema 11: an agent's boot id, a fresh one per agent process. An agent reconciles its VM
-- backend when it starts, which removes the ephemeral snapshots of its previous process: a
-- registration with another boot id tells the store that those are gone (UpsertAgent), so
-- no builds_in child is placed on that agent for them. The index finds an agent's snapshots.
ALTER TABLE agents ADD COLUMN boot_id TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_snapshot_agent ON jobs (snapshot_agent) WHERE snapshot_agent <> '';
CREATE INDEX jobs_parent ON jobs (parent_id);
-- A parent run again keeps the claim and snapshot of its first pass, the one the build's
-- scheduler saw: a driver replaying the build ends the step as it ended then.
ALTER TABLE jobs ADD COLUMN rerun_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN rerun_snapshot TEXT NOT NULL DEFAULT '';
