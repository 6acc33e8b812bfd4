package registry

import (
	"context"
	"database/sql"
	"encoding/json"
)

// batchSize bounds the scopes one statement asks for (one JSON parameter, see inScopes).
const batchSize = 200

// PeekMany returns the entries of scopes that exist, as Peek does for one, in one query per
// batchSize scopes: a build asks for all of its steps' entries at once rather than in one
// round trip per step. Scopes with an empty fingerprint find nothing.
func (r *Registry) PeekMany(ctx context.Context, scopes []Scope) (map[Scope]Entry, error) {
	out := map[Scope]Entry{}
	err := forBatches(scopes, func(batch []Scope, where string, args []any) error {
		es, err := queryEntries(ctx, r.db, `SELECT `+columns+` FROM entries WHERE `+where, args...)
		for _, e := range es {
			out[e.Scope()] = e
		}
		return err
	})
	if err != nil {
		return nil, wrap("peek", err)
	}
	return out, nil
}

// Touch marks the entries of scopes used now, in one transaction, as Lookup does for one: a
// build whose steps hit writes the registry once instead of once per hit. Scopes without an
// entry are ignored. A read-only registry is left as it is, as its lookups leave it.
func (r *Registry) Touch(ctx context.Context, scopes []Scope) error {
	if r.readOnly || len(scopes) == 0 {
		return nil
	}
	now := r.now().UnixNano()
	return r.write(ctx, "touch", func(tx *sql.Tx) error {
		return forBatches(scopes, func(_ []Scope, where string, args []any) error {
			_, err := tx.ExecContext(ctx, `UPDATE entries SET last_used = ? WHERE `+where,
				append([]any{now}, args...)...)
			return err
		})
	})
}

// inScopes selects the entries whose scope is one of a JSON array of [backend, base, key,
// fingerprint] arrays, the statement's one parameter. One short statement whatever the
// number of scopes: SQLite parsed a WHERE of one OR'd condition per scope anew each time, more
// than half of a 30-scope PeekMany's time (BenchmarkPeekManyTouch).
const inScopes = `(backend, base, key, fingerprint) IN
	(SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?))`

// forBatches calls fn with each batch of scopes (skipping empty fingerprints, which match
// nothing) and the WHERE clause that selects exactly their entries.
func forBatches(scopes []Scope, fn func(batch []Scope, where string, args []any) error) error {
	var keep []Scope
	for _, s := range scopes {
		if s.Fingerprint != "" {
			keep = append(keep, s)
		}
	}
	for len(keep) > 0 {
		n := min(len(keep), batchSize)
		batch := keep[:n]
		keep = keep[n:]
		vals := make([][4]string, len(batch))
		for i, s := range batch {
			vals[i] = [4]string{s.Backend, s.Base, s.Key, s.Fingerprint}
		}
		list, err := json.Marshal(vals)
		if err != nil {
			return err
		}
		if err := fn(batch, inScopes, []any{string(list)}); err != nil {
			return err
		}
	}
	return nil
}

// Checkpoint copies the transactions the WAL holds into the database file now (a passive
// checkpoint: it waits for no reader or writer, and copies what no reader still needs). The
// last connection's Close checkpoints anyway, syncing the WAL and the file; after a
// checkpoint here it finds nothing left to copy and only removes the WAL, so a build that
// checkpoints in the background right after its one write (Touch) takes those syncs off the
// end of the build. Durability only grows: the copy is synced as Close's would be.
func (r *Registry) Checkpoint(ctx context.Context) error {
	if r.readOnly {
		return nil
	}
	if _, err := r.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		return wrap("checkpoint", err)
	}
	return nil
}
