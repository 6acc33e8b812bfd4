-- Schema 4: what explains a cache miss as locally (spec/cache-keys.md: "which input differs
-- from the last entry registered for that step"). An entry records its pipeline, step and the
-- client's cache inputs (JSON of cachekey.Inputs); a job records the miss explanation once, so
-- that a driver replaying the build logs the same line.
ALTER TABLE cache_entries ADD COLUMN pipeline_id TEXT NOT NULL DEFAULT '';
ALTER TABLE cache_entries ADD COLUMN step_key TEXT NOT NULL DEFAULT '';
ALTER TABLE cache_entries ADD COLUMN inputs TEXT NOT NULL DEFAULT '';
CREATE INDEX cache_entries_step ON cache_entries (org_id, pipeline_id, step_key, created_at);
ALTER TABLE jobs ADD COLUMN cache_note TEXT NOT NULL DEFAULT '';
