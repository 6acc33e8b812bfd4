-- Schema 9: log_chunks clustered on its key (SQLite's WITHOUT ROWID; PostgreSQL drops the
-- clause, see its dialect list). A rowid table kept every chunk twice, in the table and in
-- the primary key's index: each insert wrote two B-trees and each read looked rows up through
-- the index. The chunks are copied over in one statement.
CREATE TABLE log_chunks_v8 (
	job_id  TEXT NOT NULL REFERENCES jobs (id),
	attempt INTEGER NOT NULL,
	seq     INTEGER NOT NULL,
	stream  INTEGER NOT NULL,
	content TEXT NOT NULL,
	ts      INTEGER NOT NULL,
	PRIMARY KEY (job_id, attempt, seq)
) WITHOUT ROWID;
INSERT INTO log_chunks_v8 (job_id, attempt, seq, stream, content, ts)
	SELECT job_id, attempt, seq, stream, content, ts FROM log_chunks;
DROP TABLE log_chunks;
ALTER TABLE log_chunks_v8 RENAME TO log_chunks;
