package postgres

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
)

// Organizations, tokens and pipelines: plain rows, unique names answered as conflicts.

const orgCols = `id, slug, name, created_at`

func scanOrg(r scanner) (store.Org, error) {
	var o store.Org
	var c int64
	err := r.Scan(&o.ID, &o.Slug, &o.Name, &c)
	o.CreatedAt = tm(c)
	return o, err
}

func (s *DB) CreateOrg(ctx context.Context, slug, name string) (store.Org, error) {
	var o store.Org
	err := s.write(ctx, "create org", func(tx pgx.Tx) error {
		var err error
		o, err = scanOrg(row(ctx, tx, `INSERT INTO organizations (id, slug, name, created_at)
			VALUES (?, ?, ?, ?) RETURNING `+orgCols, uuid.NewString(), slug, name, ns(time.Now())))
		if isUnique(err) {
			return &store.ConflictError{Kind: "org", Key: slug, Reason: "slug taken"}
		}
		return err
	})
	return o, err
}

func (s *DB) GetOrg(ctx context.Context, id string) (store.Org, error) {
	o, err := one(row(ctx, s.pool, `SELECT `+orgCols+` FROM organizations WHERE id = ?`, id), scanOrg, "org", id)
	return o, wrap("get org", err)
}

func (s *DB) GetOrgBySlug(ctx context.Context, slug string) (store.Org, error) {
	o, err := one(row(ctx, s.pool, `SELECT `+orgCols+` FROM organizations WHERE slug = ?`, slug), scanOrg, "org", slug)
	return o, wrap("get org", err)
}

const tokenCols = `id, org_id, kind, name, hash, created_at, last_used`

func scanToken(r scanner) (store.Token, error) {
	var t store.Token
	var c, u int64
	err := r.Scan(&t.ID, &t.OrgID, &t.Kind, &t.Name, &t.Hash, &c, &u)
	t.CreatedAt, t.LastUsed = tm(c), tm(u)
	return t, err
}

func (s *DB) CreateToken(ctx context.Context, t store.Token) (store.Token, error) {
	var out store.Token
	err := s.write(ctx, "create token", func(tx pgx.Tx) error {
		var err error
		out, err = scanToken(row(ctx, tx, `INSERT INTO api_tokens (id, org_id, kind, name, hash, created_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING `+tokenCols,
			uuid.NewString(), t.OrgID, t.Kind, t.Name, t.Hash, ns(nowOr(t.CreatedAt))))
		if isUnique(err) {
			// Never the hash in the message: it is as good as the token to a lookup.
			return &store.ConflictError{Kind: "token", Key: t.Name, Reason: "hash already stored"}
		}
		return err
	})
	return out, err
}

func (s *DB) LookupToken(ctx context.Context, h store.TokenHash, now time.Time) (store.Token, error) {
	var out store.Token
	err := s.write(ctx, "lookup token", func(tx pgx.Tx) error {
		var err error
		out, err = one(row(ctx, tx, `UPDATE api_tokens SET last_used = ? WHERE hash = ? RETURNING `+tokenCols,
			ns(now), h), scanToken, "token", "(presented)")
		return err
	})
	return out, err
}

func (s *DB) ListTokens(ctx context.Context, orgID string) ([]store.Token, error) {
	return list(ctx, s.pool, "list tokens", scanToken, `SELECT `+tokenCols+` FROM api_tokens WHERE org_id = ? ORDER BY created_at, id COLLATE "C"`, orgID)
}

func (s *DB) DeleteToken(ctx context.Context, id string) error {
	return s.write(ctx, "delete token", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, `DELETE FROM api_tokens WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "token", Key: id}
		}
		return nil
	})
}

const pipelineCols = `id, org_id, slug, name, repository, default_branch, description, created_at`

func scanPipeline(r scanner) (store.Pipeline, error) {
	var p store.Pipeline
	var c int64
	err := r.Scan(&p.ID, &p.OrgID, &p.Slug, &p.Name, &p.Repository, &p.DefaultBranch, &p.Description, &c)
	p.CreatedAt = tm(c)
	return p, err
}

func (s *DB) CreatePipeline(ctx context.Context, p store.Pipeline) (store.Pipeline, error) {
	var out store.Pipeline
	err := s.write(ctx, "create pipeline", func(tx pgx.Tx) error {
		var err error
		out, err = scanPipeline(row(ctx, tx, `INSERT INTO pipelines
			(id, org_id, slug, name, repository, default_branch, description, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+pipelineCols,
			uuid.NewString(), p.OrgID, p.Slug, p.Name, p.Repository, p.DefaultBranch, p.Description, ns(nowOr(p.CreatedAt))))
		if isUnique(err) {
			return &store.ConflictError{Kind: "pipeline", Key: p.Slug, Reason: "slug taken in the organization"}
		}
		return err
	})
	return out, err
}

func (s *DB) GetPipeline(ctx context.Context, orgID, slug string) (store.Pipeline, error) {
	p, err := one(row(ctx, s.pool, `SELECT `+pipelineCols+` FROM pipelines WHERE org_id = ? AND slug = ?`, orgID, slug),
		scanPipeline, "pipeline", slug)
	return p, wrap("get pipeline", err)
}

func (s *DB) ListPipelines(ctx context.Context, orgID string) ([]store.Pipeline, error) {
	return list(ctx, s.pool, "list pipelines", scanPipeline, `SELECT `+pipelineCols+` FROM pipelines WHERE org_id = ? ORDER BY slug COLLATE "C"`, orgID)
}

// Blobs, agents and the cache registry.

func scanBlob(r scanner) (store.Blob, error) {
	var b store.Blob
	var c int64
	err := r.Scan(&b.Digest, &b.Size, &c)
	b.CreatedAt = tm(c)
	return b, err
}

func (s *DB) PutBlob(ctx context.Context, b store.Blob) (store.Blob, error) {
	var out store.Blob
	err := s.write(ctx, "put blob", func(tx pgx.Tx) error {
		// DO UPDATE with no change rather than DO NOTHING, so RETURNING yields the stored row.
		var err error
		out, err = scanBlob(row(ctx, tx, `INSERT INTO source_blobs (digest, size, created_at) VALUES (?, ?, ?)
			ON CONFLICT (digest) DO UPDATE SET digest = excluded.digest RETURNING digest, size, created_at`,
			b.Digest, b.Size, ns(nowOr(b.CreatedAt))))
		return err
	})
	return out, err
}

func (s *DB) GetBlob(ctx context.Context, digest string) (store.Blob, error) {
	b, err := one(row(ctx, s.pool, `SELECT digest, size, created_at FROM source_blobs WHERE digest = ?`, digest),
		scanBlob, "blob", digest)
	return b, wrap("get blob", err)
}

func (s *DB) GetOrgBlob(ctx context.Context, orgID, digest string) (store.Blob, error) {
	b, err := one(row(ctx, s.pool, `SELECT digest, size, created_at FROM source_blobs sb WHERE digest = ?
		AND EXISTS (SELECT 1 FROM builds b WHERE b.org_id = ? AND b.source_digest = sb.digest)`, digest, orgID),
		scanBlob, "blob", digest)
	return b, wrap("get org blob", err)
}

func (s *DB) UpsertAgent(ctx context.Context, a store.Agent, now time.Time) (store.Agent, error) {
	var rerun []string
	err := s.write(ctx, "upsert agent", func(tx pgx.Tx) error {
		var err error
		if rerun, err = agentRestarted(ctx, tx, a, now); err != nil {
			return err
		}
		// An agent id belongs to the org that registered it first: another org's token cannot
		// take it over (the row is left alone and the caller told it does not exist).
		res, err := exec(ctx, tx, `INSERT INTO agents (id, name, backend, org_id, boot_id, last_seen) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, backend = excluded.backend, org_id = excluded.org_id,
				boot_id = excluded.boot_id, last_seen = excluded.last_seen
			WHERE agents.org_id = '' OR agents.org_id = excluded.org_id`,
			a.ID, a.Name, a.Backend, a.OrgID, a.BootID, ns(now))
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "agent", Key: a.ID}
		}
		if _, err := exec(ctx, tx, `DELETE FROM agent_labels WHERE agent_id = ?`, a.ID); err != nil {
			return err
		}
		for _, l := range a.Labels {
			if _, err := exec(ctx, tx, `INSERT INTO agent_labels (agent_id, label) VALUES (?, ?) ON CONFLICT DO NOTHING`, a.ID, l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return store.Agent{}, err
	}
	for _, id := range rerun {
		s.notify(store.JobChanged(id))
	}
	if len(rerun) > 0 {
		s.notify(store.JobsReleased(a.OrgID))
	}
	return s.GetAgent(ctx, a.ID)
}

func (s *DB) scanAgents(ctx context.Context, where string, args ...any) ([]store.Agent, error) {
	agents, err := list(ctx, s.pool, "get agent", func(r scanner) (store.Agent, error) {
		var a store.Agent
		var seen int64
		err := r.Scan(&a.ID, &a.Name, &a.Backend, &a.OrgID, &a.BootID, &seen)
		a.LastSeen = tm(seen)
		return a, err
	}, `SELECT id, name, backend, org_id, boot_id, last_seen FROM agents `+where+` ORDER BY id COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	for i := range agents {
		labels, err := list(ctx, s.pool, "get agent", func(r scanner) (string, error) {
			var l string
			return l, r.Scan(&l)
		}, `SELECT label FROM agent_labels WHERE agent_id = ? ORDER BY label COLLATE "C"`, agents[i].ID)
		if err != nil {
			return nil, err
		}
		agents[i].Labels = labels
	}
	return agents, nil
}

func (s *DB) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	as, err := s.scanAgents(ctx, `WHERE id = ?`, id)
	if err != nil {
		return store.Agent{}, err
	}
	if len(as) == 0 {
		return store.Agent{}, &store.NotFoundError{Kind: "agent", Key: id}
	}
	return as[0], nil
}

func (s *DB) ListAgents(ctx context.Context) ([]store.Agent, error) { return s.scanAgents(ctx, "") }

func (s *DB) TouchAgent(ctx context.Context, id string, now time.Time) error {
	return s.write(ctx, "touch agent", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, `UPDATE agents SET last_seen = ? WHERE id = ?`, ns(now), id)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "agent", Key: id}
		}
		return nil
	})
}

const cacheCols = `org_id, cache_key, scope, snapshot, agent_id, created_at, last_used, pipeline_id, step_key, inputs, artifacts`

func scanCache(r scanner) (store.CacheEntry, error) {
	var e store.CacheEntry
	var c, u int64
	var inputs, artifacts string
	err := r.Scan(&e.OrgID, &e.Key, &e.Scope, &e.Snapshot, &e.AgentID, &c, &u, &e.PipelineID, &e.StepKey, &inputs, &artifacts)
	if artifacts != "" {
		e.Artifacts = json.RawMessage(artifacts)
	}
	e.CreatedAt, e.LastUsed = tm(c), tm(u)
	if inputs != "" {
		e.Inputs = json.RawMessage(inputs)
	}
	return e, err
}

func (s *DB) PutCacheEntry(ctx context.Context, e store.CacheEntry) (store.CacheEntry, error) {
	var out store.CacheEntry
	err := s.write(ctx, "put cache entry", func(tx pgx.Tx) error {
		c := ns(nowOr(e.CreatedAt))
		var err error
		out, err = scanCache(row(ctx, tx, `INSERT INTO cache_entries (`+cacheCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (org_id, cache_key, scope) DO UPDATE SET snapshot = excluded.snapshot, agent_id = excluded.agent_id,
				created_at = excluded.created_at, last_used = excluded.last_used, pipeline_id = excluded.pipeline_id,
				step_key = excluded.step_key, inputs = excluded.inputs, artifacts = excluded.artifacts
			RETURNING `+cacheCols, e.OrgID, e.Key, e.Scope, e.Snapshot, e.AgentID, c, c, e.PipelineID, e.StepKey, string(e.Inputs), string(e.Artifacts)))
		return err
	})
	return out, err
}

func (s *DB) LookupCache(ctx context.Context, orgID, key, scope string, now time.Time) (store.CacheEntry, error) {
	var out store.CacheEntry
	err := s.write(ctx, "lookup cache", func(tx pgx.Tx) error {
		var err error
		out, err = one(row(ctx, tx, `UPDATE cache_entries SET last_used = ?
			WHERE org_id = ? AND cache_key = ? AND scope = ? RETURNING `+cacheCols, ns(now), orgID, key, scope),
			scanCache, "cache_entry", key)
		return err
	})
	return out, err
}

func (s *DB) DeleteCacheEntry(ctx context.Context, orgID, key, scope string) error {
	return s.write(ctx, "delete cache entry", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, `DELETE FROM cache_entries WHERE org_id = ? AND cache_key = ? AND scope = ?`, orgID, key, scope)
		return err
	})
}

func (s *DB) DeleteAgentCache(ctx context.Context, agentID string) (int, error) {
	var n int64
	err := s.write(ctx, "delete agent cache", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, `DELETE FROM cache_entries WHERE agent_id = ?`, agentID)
		if err != nil {
			return err
		}
		n = res.RowsAffected()
		return nil
	})
	return int(n), err
}

func (s *DB) LastCacheEntry(ctx context.Context, orgID, pipelineID, stepKey string) (store.CacheEntry, error) {
	// SQLite breaks a tie of created_at by rowid; the key is the stable order here.
	e, err := one(row(ctx, s.pool, `SELECT `+cacheCols+` FROM cache_entries
		WHERE org_id = ? AND pipeline_id = ? AND step_key = ? ORDER BY created_at DESC, cache_key COLLATE "C" DESC, scope COLLATE "C" DESC LIMIT 1`,
		orgID, pipelineID, stepKey), scanCache, "cache_entry", stepKey)
	return e, wrap("last cache entry", err)
}

func (s *DB) QueueSnapshotRemoval(ctx context.Context, agentID, snapshot string, now time.Time) error {
	return s.write(ctx, "queue snapshot removal", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, `INSERT INTO snapshot_removals (agent_id, snapshot, created_at)
			SELECT ?::text, ?::text, ?::bigint WHERE NOT EXISTS (SELECT 1 FROM cache_entries WHERE agent_id = ? AND snapshot = ?)
			ON CONFLICT DO NOTHING`, agentID, snapshot, ns(now), agentID, snapshot)
		return err
	})
}

func (s *DB) ListSnapshotRemovals(ctx context.Context, agentID string, limit int) ([]string, error) {
	return list(ctx, s.pool, "list snapshot removals", func(r scanner) (string, error) {
		var snap string
		return snap, r.Scan(&snap)
	}, `SELECT snapshot FROM snapshot_removals WHERE agent_id = ? ORDER BY created_at, snapshot COLLATE "C" LIMIT ?`, agentID, limit)
}

func (s *DB) AckSnapshotRemovals(ctx context.Context, agentID string, snapshots []string) error {
	if len(snapshots) == 0 {
		return nil
	}
	return s.write(ctx, "ack snapshot removals", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, `DELETE FROM snapshot_removals WHERE agent_id = ? AND snapshot = ANY(?)`, agentID, snapshots)
		return err
	})
}
