package registry

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// Every method here deletes rows and returns them; deleting the snapshots is the caller's
// job. A crash in between leaves unreferenced snapshots, which reconciliation (Referenced)
// finds, never a row pointing at nothing.

const lruOrder = `ORDER BY last_used DESC, created DESC, rowid DESC`

// Evict keeps the most recently used entries of backend ("" = all backends together) that fit
// in maxEntries entries and maxBytes total size, and deletes the rest: least recently used
// first, so an old entry goes even when it is small. maxEntries <= 0 or maxBytes <= 0 means
// no limit of that kind. It returns the evicted entries, least recently used first.
func (r *Registry) Evict(ctx context.Context, backend string, maxEntries int, maxBytes int64) ([]Entry, error) {
	if fits, err := r.fits(ctx, backend, maxEntries, maxBytes); err == nil && fits {
		return nil, nil
	}
	var evicted []Entry
	err := r.write(ctx, "evict", func(tx *sql.Tx) error {
		es, err := queryEntries(ctx, tx, `SELECT `+columns+` FROM entries WHERE ? = '' OR backend = ? `+lruOrder,
			backend, backend)
		if err != nil {
			return err
		}
		var n int
		var bytes int64
		cut := len(es)
		for i, e := range es {
			if (maxEntries > 0 && n+1 > maxEntries) || (maxBytes > 0 && bytes+e.Size > maxBytes) {
				cut = i
				break
			}
			n++
			bytes += e.Size
		}
		evicted, err = deleteEntries(ctx, tx, reversed(es[cut:]))
		return err
	})
	if err != nil {
		return nil, err
	}
	return evicted, nil
}

// fits reports whether backend's entries ("" = all) are within both of Evict's bounds as they
// stand, so that Evict would delete nothing: one aggregate read, where Evict's transaction
// takes the write lock (waiting for any other hm writing) and reads every entry's row, at the
// end of every build. Sizes count as at least 0, so no prefix of the LRU order Evict walks can
// exceed the total; when the bounds do not hold, Evict decides under the lock, as before.
func (r *Registry) fits(ctx context.Context, backend string, maxEntries int, maxBytes int64) (bool, error) {
	var n, bytes int64
	err := r.db.QueryRowContext(ctx, `SELECT count(*), COALESCE(SUM(MAX(size, 0)), 0) FROM entries WHERE ? = '' OR backend = ?`,
		backend, backend).Scan(&n, &bytes)
	if err != nil {
		return false, wrap("evict", err)
	}
	return (maxEntries <= 0 || n <= int64(maxEntries)) && (maxBytes <= 0 || bytes <= maxBytes), nil
}

// Prune deletes the entries of backend ("" = all) that are not among the keep most recently
// used and, when olderThan > 0, were last used more than olderThan ago. It returns them, least
// recently used first.
func (r *Registry) Prune(ctx context.Context, backend string, keep int, olderThan time.Duration) ([]Entry, error) {
	if keep < 0 || olderThan < 0 {
		return nil, errs.New(errs.ErrUsage, "usage", "give --keep and --older-than values >= 0",
			"cache prune: negative keep (%d) or age (%s)", keep, olderThan)
	}
	cutoff := r.now().Add(-olderThan).UnixNano()
	var pruned []Entry
	err := r.write(ctx, "prune", func(tx *sql.Tx) error {
		es, err := queryEntries(ctx, tx, `SELECT `+columns+` FROM entries WHERE ? = '' OR backend = ? `+lruOrder,
			backend, backend)
		if err != nil {
			return err
		}
		var doomed []Entry
		for i, e := range es {
			if i >= keep && (olderThan == 0 || e.LastUsed.UnixNano() < cutoff) {
				doomed = append(doomed, e)
			}
		}
		pruned, err = deleteEntries(ctx, tx, reversed(doomed))
		return err
	})
	if err != nil {
		return nil, err
	}
	return pruned, nil
}

// Clean deletes every entry of backend ("" = all) and returns them.
func (r *Registry) Clean(ctx context.Context, backend string) ([]Entry, error) {
	return r.Prune(ctx, backend, 0, 0)
}

// DropMissing deletes the entries of backend ("" = all) whose snapshot exists reports gone,
// e.g. an image removed by hand or never committed before a kill -9, and returns them.
// exists is called outside any transaction (it may be slow) at most once per snapshot id; an
// entry re-registered with another snapshot in the meantime is left alone.
func (r *Registry) DropMissing(ctx context.Context, backend string, exists func(snapshotID string) (bool, error)) ([]Entry, error) {
	es, err := r.List(ctx, backend)
	if err != nil {
		return nil, err
	}
	present := map[string]bool{}
	var gone []Entry
	for _, e := range es {
		ok, seen := present[e.Snapshot]
		if !seen {
			if ok, err = exists(e.Snapshot); err != nil {
				return nil, fmt.Errorf("registry: check snapshot %s: %w", e.Snapshot, err)
			}
			present[e.Snapshot] = ok
		}
		if !ok {
			gone = append(gone, e)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	var dropped []Entry
	err = r.write(ctx, "drop missing", func(tx *sql.Tx) error {
		dropped, err = deleteEntries(ctx, tx, gone)
		return err
	})
	if err != nil {
		return nil, err
	}
	return dropped, nil
}

// Delete deletes the entries es (as chosen by the caller, e.g. by id) that still map to the
// same snapshot, and returns those it deleted.
func (r *Registry) Delete(ctx context.Context, es []Entry) ([]Entry, error) {
	var deleted []Entry
	err := r.write(ctx, "delete", func(tx *sql.Tx) error {
		var err error
		deleted, err = deleteEntries(ctx, tx, es)
		return err
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// deleteEntries deletes each entry if it still maps to the same snapshot and returns those it
// deleted.
func deleteEntries(ctx context.Context, tx *sql.Tx, es []Entry) ([]Entry, error) {
	stmt, err := tx.PrepareContext(ctx, `DELETE FROM entries WHERE `+byScope+` AND snapshot = ?`)
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	var out []Entry
	for _, e := range es {
		res, err := stmt.ExecContext(ctx, e.Backend, e.Base, e.Key, e.Fingerprint, e.Snapshot)
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, err
		} else if n > 0 {
			out = append(out, e)
		}
	}
	return out, nil
}

func reversed(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		out[len(es)-1-i] = e
	}
	return out
}
