-- Schema 13: what replicas must share beyond the rows. server_keys holds a deployment's
-- shared values (the log-token signing key; a check of the secrets key, never the key) on
-- every driver. blob_files and blob_chunks hold blob bytes where the store holds them
-- (PostgreSQL: replicas need no shared disk); SQLite keeps its blobs in DATA/blobs and
-- leaves these two empty. A blob is written in one transaction: whole or absent.
CREATE TABLE server_keys (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
CREATE TABLE blob_files (
	digest     TEXT PRIMARY KEY,
	size       INTEGER NOT NULL,
	written_at INTEGER NOT NULL
);
CREATE TABLE blob_chunks (
	digest TEXT    NOT NULL,
	idx    INTEGER NOT NULL,
	data   BLOB    NOT NULL,
	PRIMARY KEY (digest, idx)
);
