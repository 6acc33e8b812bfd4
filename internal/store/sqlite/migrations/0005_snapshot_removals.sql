-- Schema 5: ephemeral snapshots an agent must remove (a build that needed them ended). A row
-- stays until the agent acknowledges the removal, so neither a server restart nor an agent
-- restart loses one.
CREATE TABLE snapshot_removals (
	agent_id   TEXT    NOT NULL,
	snapshot   TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (agent_id, snapshot)
);
