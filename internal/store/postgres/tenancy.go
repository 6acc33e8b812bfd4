package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

// Organizations, tokens and pipelines: plain rows, unique names answered as conflicts.

func (s *DB) CreateOrg(ctx context.Context, slug, name string) (store.Org, error) {
	var o store.Org
	err := s.write(ctx, "create org", func(tx pgx.Tx) error {
		var err error
		o, err = sqlq.ScanOrg(row(ctx, tx, sqlq.CreateOrg, uuid.NewString(), slug, name, ns(time.Now())))
		if isUnique(err) {
			return &store.ConflictError{Kind: "org", Key: slug, Reason: "slug taken"}
		}
		return err
	})
	return o, err
}

func (s *DB) GetOrg(ctx context.Context, id string) (store.Org, error) {
	o, err := one(row(ctx, s.pool, sqlq.GetOrg, id), sqlq.ScanOrg, "org", id)
	return o, wrap("get org", err)
}

func (s *DB) GetOrgBySlug(ctx context.Context, slug string) (store.Org, error) {
	o, err := one(row(ctx, s.pool, sqlq.GetOrgBySlug, slug), sqlq.ScanOrg, "org", slug)
	return o, wrap("get org", err)
}

func (s *DB) CreateToken(ctx context.Context, t store.Token) (store.Token, error) {
	var out store.Token
	err := s.write(ctx, "create token", func(tx pgx.Tx) error {
		var err error
		out, err = sqlq.ScanToken(row(ctx, tx, sqlq.CreateToken,
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
		out, err = one(row(ctx, tx, sqlq.LookupToken,
			ns(now), h), sqlq.ScanToken, "token", "(presented)")
		return err
	})
	return out, err
}

func (s *DB) ListTokens(ctx context.Context, orgID string) ([]store.Token, error) {
	return list(ctx, s.pool, "list tokens", sqlq.ScanToken, sqlq.ListTokens+` COLLATE "C"`, orgID)
}

func (s *DB) DeleteToken(ctx context.Context, id string) error {
	return s.write(ctx, "delete token", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, sqlq.DeleteToken, id)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "token", Key: id}
		}
		return nil
	})
}

func (s *DB) CreatePipeline(ctx context.Context, p store.Pipeline) (store.Pipeline, error) {
	var out store.Pipeline
	err := s.write(ctx, "create pipeline", func(tx pgx.Tx) error {
		var err error
		out, err = sqlq.ScanPipeline(row(ctx, tx, sqlq.CreatePipeline,
			uuid.NewString(), p.OrgID, p.Slug, p.Name, p.Repository, p.DefaultBranch, p.Description, ns(nowOr(p.CreatedAt))))
		if isUnique(err) {
			return &store.ConflictError{Kind: "pipeline", Key: p.Slug, Reason: "slug taken in the organization"}
		}
		return err
	})
	return out, err
}

func (s *DB) GetPipeline(ctx context.Context, orgID, slug string) (store.Pipeline, error) {
	p, err := one(row(ctx, s.pool, sqlq.GetPipeline, orgID, slug),
		sqlq.ScanPipeline, "pipeline", slug)
	return p, wrap("get pipeline", err)
}

func (s *DB) ListPipelines(ctx context.Context, orgID string) ([]store.Pipeline, error) {
	return list(ctx, s.pool, "list pipelines", sqlq.ScanPipeline, sqlq.ListPipelines+` COLLATE "C"`, orgID)
}

// Blobs, agents and the cache registry.

func (s *DB) PutBlob(ctx context.Context, b store.Blob) (store.Blob, error) {
	var out store.Blob
	err := s.write(ctx, "put blob", func(tx pgx.Tx) error {
		var err error
		out, err = sqlq.ScanBlob(row(ctx, tx, sqlq.PutBlob,
			b.Digest, b.Size, ns(nowOr(b.CreatedAt))))
		return err
	})
	return out, err
}

func (s *DB) GetBlob(ctx context.Context, digest string) (store.Blob, error) {
	b, err := one(row(ctx, s.pool, sqlq.GetBlob, digest),
		sqlq.ScanBlob, "blob", digest)
	return b, wrap("get blob", err)
}

func (s *DB) GetOrgBlob(ctx context.Context, orgID, digest string) (store.Blob, error) {
	b, err := one(row(ctx, s.pool, sqlq.GetOrgBlob, digest, orgID),
		sqlq.ScanBlob, "blob", digest)
	return b, wrap("get org blob", err)
}

func (s *DB) UpsertAgent(ctx context.Context, a store.Agent, now time.Time) (store.Agent, error) {
	var rerun []string
	err := s.write(ctx, "upsert agent", func(tx pgx.Tx) error {
		var err error
		if rerun, err = agentRestarted(ctx, tx, a, now); err != nil {
			return err
		}
		// An agent id belongs to the org that registered it first (sqlq.UpsertAgent).
		res, err := exec(ctx, tx, sqlq.UpsertAgent,
			a.ID, a.Name, a.Backend, a.OrgID, a.BootID, ns(now))
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "agent", Key: a.ID}
		}
		if _, err := exec(ctx, tx, sqlq.DeleteAgentLabels, a.ID); err != nil {
			return err
		}
		for _, l := range a.Labels {
			if _, err := exec(ctx, tx, sqlq.InsertAgentLabel, a.ID, l); err != nil {
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
	agents, err := list(ctx, s.pool, "get agent", sqlq.ScanAgent, sqlq.Agents(where)+` COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	for i := range agents {
		labels, err := list(ctx, s.pool, "get agent", sqlq.ScanString, sqlq.AgentLabels+` COLLATE "C"`, agents[i].ID)
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
		res, err := exec(ctx, tx, sqlq.TouchAgent, ns(now), id)
		if err != nil {
			return err
		}
		if res.RowsAffected() == 0 {
			return &store.NotFoundError{Kind: "agent", Key: id}
		}
		return nil
	})
}

func (s *DB) PutCacheEntry(ctx context.Context, e store.CacheEntry) (store.CacheEntry, error) {
	var out store.CacheEntry
	err := s.write(ctx, "put cache entry", func(tx pgx.Tx) error {
		c := ns(nowOr(e.CreatedAt))
		var err error
		out, err = sqlq.ScanCache(row(ctx, tx, sqlq.PutCacheEntry, e.OrgID, e.Key, e.Scope, e.Snapshot, e.AgentID, c, c, e.PipelineID, e.StepKey, string(e.Inputs), string(e.Artifacts)))
		return err
	})
	return out, err
}

func (s *DB) LookupCache(ctx context.Context, orgID, key, scope string, now time.Time) (store.CacheEntry, error) {
	var out store.CacheEntry
	err := s.write(ctx, "lookup cache", func(tx pgx.Tx) error {
		var err error
		out, err = one(row(ctx, tx, sqlq.LookupCache, ns(now), orgID, key, scope),
			sqlq.ScanCache, "cache_entry", key)
		return err
	})
	return out, err
}

func (s *DB) DeleteCacheEntry(ctx context.Context, orgID, key, scope string) error {
	return s.write(ctx, "delete cache entry", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, sqlq.DeleteCacheEntry, orgID, key, scope)
		return err
	})
}

func (s *DB) DeleteAgentCache(ctx context.Context, agentID string) (int, error) {
	var n int64
	err := s.write(ctx, "delete agent cache", func(tx pgx.Tx) error {
		res, err := exec(ctx, tx, sqlq.DeleteAgentCache, agentID)
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
	e, err := one(row(ctx, s.pool, sqlq.LastCacheEntry+`cache_key COLLATE "C" DESC, scope COLLATE "C" DESC LIMIT 1`,
		orgID, pipelineID, stepKey), sqlq.ScanCache, "cache_entry", stepKey)
	return e, wrap("last cache entry", err)
}

func (s *DB) QueueSnapshotRemoval(ctx context.Context, agentID, snapshot string, now time.Time) error {
	return s.write(ctx, "queue snapshot removal", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, sqlq.QueueSnapshotRemoval("::text", bigint), agentID, snapshot, ns(now), agentID, snapshot)
		return err
	})
}

func (s *DB) ListSnapshotRemovals(ctx context.Context, agentID string, limit int) ([]string, error) {
	return list(ctx, s.pool, "list snapshot removals", sqlq.ScanString, sqlq.ListSnapshotRemovals(` COLLATE "C"`), agentID, limit)
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
