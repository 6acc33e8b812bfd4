-- Schema 10: secrets and artifacts through the remote backend. A build's secret values are
-- sealed by the server (AES-GCM under a key of its data dir) into one row, deleted when the
-- build ends; a job's artifacts (and a cache entry's, republished on a hit) are a JSON object
-- {"files": [{path, size, sha256}], "warnings": [...]} (driver.Artifacts), the bytes in the
-- server's blob dir.
ALTER TABLE jobs ADD COLUMN artifacts TEXT NOT NULL DEFAULT '';
ALTER TABLE cache_entries ADD COLUMN artifacts TEXT NOT NULL DEFAULT '';
CREATE TABLE build_secrets (
	build_id TEXT NOT NULL PRIMARY KEY REFERENCES builds (id),
	sealed   BLOB NOT NULL
);
