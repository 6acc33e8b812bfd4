-- Schema 3: the org of an agent (its token's), so that the reaper can tell whether any live
-- agent could run a requeued job. '' for an agent registered before: it counts for any org.
ALTER TABLE agents ADD COLUMN org_id TEXT NOT NULL DEFAULT '';
