package sqlq

import (
	"encoding/json"

	"github.com/hmci/hm/internal/store"
)

// Organizations, tokens and pipelines. Statements that end in ORDER BY end there so that the
// PostgreSQL driver can add COLLATE "C" (SQLite's byte order).

// OrgCols are the columns ScanOrg reads.
const OrgCols = `id, slug, name, created_at`

// ScanOrg reads a row of OrgCols.
func ScanOrg(r Scanner) (store.Org, error) {
	var o store.Org
	var c int64
	err := r.Scan(&o.ID, &o.Slug, &o.Name, &c)
	o.CreatedAt = Tm(c)
	return o, err
}

const (
	// id, slug, name, created_at
	CreateOrg = `INSERT INTO organizations (id, slug, name, created_at)
			VALUES (?, ?, ?, ?) RETURNING ` + OrgCols
	GetOrg       = `SELECT ` + OrgCols + ` FROM organizations WHERE id = ?`
	GetOrgBySlug = `SELECT ` + OrgCols + ` FROM organizations WHERE slug = ?`
)

// TokenCols are the columns ScanToken reads.
const TokenCols = `id, org_id, kind, name, hash, created_at, last_used`

// ScanToken reads a row of TokenCols.
func ScanToken(r Scanner) (store.Token, error) {
	var t store.Token
	var c, u int64
	err := r.Scan(&t.ID, &t.OrgID, &t.Kind, &t.Name, &t.Hash, &c, &u)
	t.CreatedAt, t.LastUsed = Tm(c), Tm(u)
	return t, err
}

const (
	// id, org, kind, name, hash, created_at
	CreateToken = `INSERT INTO api_tokens (id, org_id, kind, name, hash, created_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING ` + TokenCols
	// last_used, hash
	LookupToken = `UPDATE api_tokens SET last_used = ? WHERE hash = ? RETURNING ` + TokenCols
	ListTokens  = `SELECT ` + TokenCols + ` FROM api_tokens WHERE org_id = ? ORDER BY created_at, id`
	DeleteToken = `DELETE FROM api_tokens WHERE id = ?`
)

// PipelineCols are the columns ScanPipeline reads.
const PipelineCols = `id, org_id, slug, name, repository, default_branch, description, created_at`

// ScanPipeline reads a row of PipelineCols.
func ScanPipeline(r Scanner) (store.Pipeline, error) {
	var p store.Pipeline
	var c int64
	err := r.Scan(&p.ID, &p.OrgID, &p.Slug, &p.Name, &p.Repository, &p.DefaultBranch, &p.Description, &c)
	p.CreatedAt = Tm(c)
	return p, err
}

const (
	// id, org, slug, name, repository, default branch, description, created_at
	CreatePipeline = `INSERT INTO pipelines
			(id, org_id, slug, name, repository, default_branch, description, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING ` + PipelineCols
	GetPipeline   = `SELECT ` + PipelineCols + ` FROM pipelines WHERE org_id = ? AND slug = ?`
	ListPipelines = `SELECT ` + PipelineCols + ` FROM pipelines WHERE org_id = ? ORDER BY slug`
)

// Blobs, agents and the cache registry.

// ScanBlob reads a row of digest, size, created_at.
func ScanBlob(r Scanner) (store.Blob, error) {
	var b store.Blob
	var c int64
	err := r.Scan(&b.Digest, &b.Size, &c)
	b.CreatedAt = Tm(c)
	return b, err
}

const (
	// DO UPDATE with no change rather than DO NOTHING, so RETURNING yields the stored row.
	// digest, size, created_at
	PutBlob = `INSERT INTO source_blobs (digest, size, created_at) VALUES (?, ?, ?)
			ON CONFLICT (digest) DO UPDATE SET digest = excluded.digest RETURNING digest, size, created_at`
	GetBlob = `SELECT digest, size, created_at FROM source_blobs WHERE digest = ?`
	// digest, org
	GetOrgBlob = `SELECT digest, size, created_at FROM source_blobs sb WHERE digest = ?
		AND EXISTS (SELECT 1 FROM builds b WHERE b.org_id = ? AND b.source_digest = sb.digest)`
)

const (
	// An agent id belongs to the org that registered it first: another org's token cannot
	// take it over (the row is left alone and the caller told it does not exist).
	// id, name, backend, org, boot id, last_seen
	UpsertAgent = `INSERT INTO agents (id, name, backend, org_id, boot_id, last_seen) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, backend = excluded.backend, org_id = excluded.org_id,
				boot_id = excluded.boot_id, last_seen = excluded.last_seen
			WHERE agents.org_id = '' OR agents.org_id = excluded.org_id`
	DeleteAgentLabels = `DELETE FROM agent_labels WHERE agent_id = ?`
	InsertAgentLabel  = `INSERT INTO agent_labels (agent_id, label) VALUES (?, ?) ON CONFLICT DO NOTHING`
	AgentLabels       = `SELECT label FROM agent_labels WHERE agent_id = ? ORDER BY label`
)

// Agents is the agents that match where ("" or a WHERE clause), ending in its ORDER BY; rows
// for ScanAgent.
func Agents(where string) string {
	return `SELECT id, name, backend, org_id, boot_id, last_seen FROM agents ` + where + ` ORDER BY id`
}

// ScanAgent reads a row of Agents. Labels are read apart (AgentLabels).
func ScanAgent(r Scanner) (store.Agent, error) {
	var a store.Agent
	var seen int64
	err := r.Scan(&a.ID, &a.Name, &a.Backend, &a.OrgID, &a.BootID, &seen)
	a.LastSeen = Tm(seen)
	return a, err
}

// ScanString reads a row of one text column.
func ScanString(r Scanner) (string, error) {
	var s string
	return s, r.Scan(&s)
}

// CacheCols are the columns ScanCache reads.
const CacheCols = `org_id, cache_key, scope, snapshot, agent_id, created_at, last_used, pipeline_id, step_key, inputs, artifacts`

// ScanCache reads a row of CacheCols.
func ScanCache(r Scanner) (store.CacheEntry, error) {
	var e store.CacheEntry
	var c, u int64
	var inputs, artifacts string
	err := r.Scan(&e.OrgID, &e.Key, &e.Scope, &e.Snapshot, &e.AgentID, &c, &u, &e.PipelineID, &e.StepKey, &inputs, &artifacts)
	if artifacts != "" {
		e.Artifacts = json.RawMessage(artifacts)
	}
	e.CreatedAt, e.LastUsed = Tm(c), Tm(u)
	if inputs != "" {
		e.Inputs = json.RawMessage(inputs)
	}
	return e, err
}

const (
	// the CacheCols values
	PutCacheEntry = `INSERT INTO cache_entries (` + CacheCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (org_id, cache_key, scope) DO UPDATE SET snapshot = excluded.snapshot, agent_id = excluded.agent_id,
				created_at = excluded.created_at, last_used = excluded.last_used, pipeline_id = excluded.pipeline_id,
				step_key = excluded.step_key, inputs = excluded.inputs, artifacts = excluded.artifacts
			RETURNING ` + CacheCols
	// last_used, org, key, scope
	LookupCache = `UPDATE cache_entries SET last_used = ?
			WHERE org_id = ? AND cache_key = ? AND scope = ? RETURNING ` + CacheCols
	DeleteCacheEntry = `DELETE FROM cache_entries WHERE org_id = ? AND cache_key = ? AND scope = ?`
	DeleteAgentCache = `DELETE FROM cache_entries WHERE agent_id = ?`
	// LastCacheEntry's WHERE (org, pipeline, step key); the drivers break a tie of created_at
	// each their own way.
	LastCacheEntry = `SELECT ` + CacheCols + ` FROM cache_entries
		WHERE org_id = ? AND pipeline_id = ? AND step_key = ? ORDER BY created_at DESC, `
)

// ListSnapshotRemovals is an agent's queued snapshot removals, oldest first; collate follows
// the snapshot in the order (` COLLATE "C"` on PostgreSQL). Parameters: agent, limit.
func ListSnapshotRemovals(collate string) string {
	return `SELECT snapshot FROM snapshot_removals WHERE agent_id = ? ORDER BY created_at, snapshot` + collate + ` LIMIT ?`
}

// QueueSnapshotRemoval queues a snapshot's removal on its agent unless a cache entry still
// names it; text and bigint follow the parameters PostgreSQL cannot type from a bare SELECT
// list ("::text", "::bigint" there; "" on SQLite). Parameters: agent, snapshot, created_at,
// agent, snapshot.
func QueueSnapshotRemoval(text, bigint string) string {
	return `INSERT INTO snapshot_removals (agent_id, snapshot, created_at)
			SELECT ?` + text + `, ?` + text + `, ?` + bigint + ` WHERE NOT EXISTS (SELECT 1 FROM cache_entries WHERE agent_id = ? AND snapshot = ?)
			ON CONFLICT DO NOTHING`
}
