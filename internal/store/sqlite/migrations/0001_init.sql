-- Schema 1 of the server's store. Times are unix nanoseconds (INTEGER, BIGINT on PostgreSQL)
-- so that both drivers compare them the same way; 0 means unset. Ids are UUID strings.

CREATE TABLE organizations (
	id         TEXT PRIMARY KEY,
	slug       TEXT NOT NULL UNIQUE,
	name       TEXT NOT NULL,
	created_at INTEGER NOT NULL
);

CREATE TABLE api_tokens (
	id         TEXT PRIMARY KEY,
	org_id     TEXT NOT NULL REFERENCES organizations (id),
	kind       TEXT NOT NULL CHECK (kind IN ('user', 'agent')),
	name       TEXT NOT NULL,
	hash       TEXT NOT NULL UNIQUE, -- sha256 hex of the secret; the secret is never stored
	created_at INTEGER NOT NULL,
	last_used  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_tokens_org ON api_tokens (org_id);

CREATE TABLE pipelines (
	id             TEXT PRIMARY KEY,
	org_id         TEXT NOT NULL REFERENCES organizations (id),
	slug           TEXT NOT NULL,
	name           TEXT NOT NULL,
	repository     TEXT NOT NULL DEFAULT '',
	default_branch TEXT NOT NULL DEFAULT '',
	description    TEXT NOT NULL DEFAULT '',
	build_seq      INTEGER NOT NULL DEFAULT 0, -- the last build number handed out
	created_at     INTEGER NOT NULL,
	UNIQUE (org_id, slug)
);

CREATE TABLE source_blobs (
	digest     TEXT PRIMARY KEY,
	size       INTEGER NOT NULL,
	created_at INTEGER NOT NULL
);

CREATE TABLE builds (
	id            TEXT PRIMARY KEY,
	org_id        TEXT NOT NULL REFERENCES organizations (id),
	pipeline_id   TEXT NOT NULL REFERENCES pipelines (id),
	number        INTEGER NOT NULL,
	branch        TEXT NOT NULL DEFAULT '',
	commit_sha    TEXT NOT NULL DEFAULT '',
	message       TEXT NOT NULL DEFAULT '',
	source        TEXT NOT NULL DEFAULT 'api',
	ir            TEXT NOT NULL,
	env           TEXT NOT NULL DEFAULT '{}',
	hm_options    TEXT NOT NULL DEFAULT 'null',
	source_digest TEXT NOT NULL DEFAULT '',
	state         TEXT NOT NULL CHECK (state IN ('scheduled', 'running', 'failing', 'passed', 'failed', 'canceling', 'canceled')),
	error_code    TEXT NOT NULL DEFAULT '',
	error_message TEXT NOT NULL DEFAULT '',
	canceled      INTEGER NOT NULL DEFAULT 0,
	event_seq     INTEGER NOT NULL DEFAULT 0, -- the last event seq handed out
	created_at    INTEGER NOT NULL,
	started_at    INTEGER NOT NULL DEFAULT 0,
	finished_at   INTEGER NOT NULL DEFAULT 0,
	UNIQUE (pipeline_id, number)
);
-- Only unfinished builds are looked up by state (a server taking over).
CREATE INDEX builds_unfinished ON builds (created_at) WHERE state NOT IN ('passed', 'failed', 'canceled');

CREATE TABLE jobs (
	id             TEXT PRIMARY KEY,
	build_id       TEXT NOT NULL REFERENCES builds (id),
	ordinal        INTEGER NOT NULL,
	step_key       TEXT NOT NULL,
	name           TEXT NOT NULL DEFAULT '',
	command        TEXT NOT NULL DEFAULT '',
	depends_on     TEXT NOT NULL DEFAULT '[]', -- JSON array of job ids, for display only
	parent_id      TEXT NOT NULL DEFAULT '',   -- builds_in parent
	backend        TEXT NOT NULL DEFAULT '',
	state          TEXT NOT NULL CHECK (state IN ('pending', 'scheduled', 'assigned', 'running', 'passed', 'failed', 'skipped', 'canceling', 'canceled', 'timing_out', 'timed_out')),
	attempt        INTEGER NOT NULL DEFAULT 0,
	agent_id       TEXT NOT NULL DEFAULT '',
	lease_expires  INTEGER NOT NULL DEFAULT 0,
	exit_code      INTEGER,
	snapshot       TEXT NOT NULL DEFAULT '',
	snapshot_agent TEXT NOT NULL DEFAULT '',
	error_code     TEXT NOT NULL DEFAULT '',
	error_message  TEXT NOT NULL DEFAULT '',
	infra_retries  INTEGER NOT NULL DEFAULT 0,
	created_at     INTEGER NOT NULL,
	ready_at       INTEGER NOT NULL DEFAULT 0,
	started_at     INTEGER NOT NULL DEFAULT 0,
	finished_at    INTEGER NOT NULL DEFAULT 0,
	UNIQUE (build_id, ordinal)
);
-- The claim scans the queue in order; the reaper scans leases. Partial indexes keep both
-- small however many finished jobs there are.
CREATE INDEX jobs_queue ON jobs (ready_at, created_at, build_id, ordinal) WHERE state = 'scheduled';
CREATE INDEX jobs_leases ON jobs (lease_expires) WHERE state IN ('assigned', 'running', 'canceling', 'timing_out');

-- Labels a job needs, one row each, so that the claim's subset test is plain SQL on both
-- drivers (no JSON functions, which differ).
CREATE TABLE job_labels (
	job_id TEXT NOT NULL REFERENCES jobs (id),
	label  TEXT NOT NULL,
	PRIMARY KEY (job_id, label)
);

CREATE TABLE build_events (
	build_id   TEXT NOT NULL REFERENCES builds (id),
	seq        INTEGER NOT NULL,
	payload    TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (build_id, seq)
);

CREATE TABLE log_chunks (
	job_id  TEXT NOT NULL REFERENCES jobs (id),
	attempt INTEGER NOT NULL,
	seq     INTEGER NOT NULL,
	stream  INTEGER NOT NULL,
	content TEXT NOT NULL,
	ts      INTEGER NOT NULL,
	PRIMARY KEY (job_id, attempt, seq)
);

-- The highest contiguous seq of each (job, attempt), advanced after each insert so that the
-- answer costs the chunks above it, not the whole log.
CREATE TABLE log_heads (
	job_id     TEXT NOT NULL REFERENCES jobs (id),
	attempt    INTEGER NOT NULL,
	contiguous INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (job_id, attempt)
);

CREATE TABLE agents (
	id        TEXT PRIMARY KEY,
	name      TEXT NOT NULL DEFAULT '',
	backend   TEXT NOT NULL DEFAULT '',
	last_seen INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE agent_labels (
	agent_id TEXT NOT NULL REFERENCES agents (id),
	label    TEXT NOT NULL,
	PRIMARY KEY (agent_id, label)
);

CREATE TABLE cache_entries (
	org_id     TEXT NOT NULL REFERENCES organizations (id),
	cache_key  TEXT NOT NULL,
	scope      TEXT NOT NULL,
	snapshot   TEXT NOT NULL,
	agent_id   TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	last_used  INTEGER NOT NULL,
	PRIMARY KEY (org_id, cache_key, scope)
);
CREATE INDEX cache_entries_agent ON cache_entries (agent_id);
