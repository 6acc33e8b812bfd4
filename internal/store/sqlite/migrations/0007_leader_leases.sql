-- Schema 7: leader leases. A background duty that must run once across the replicas of one
-- deployment (the reaper of job leases) runs on the replica holding its lease: a row taken
-- and renewed by one atomic upsert, its epoch grown whenever it changes hands.
CREATE TABLE leader_leases (
	name    TEXT    PRIMARY KEY,
	owner   TEXT    NOT NULL,
	expires INTEGER NOT NULL,
	epoch   INTEGER NOT NULL
);
