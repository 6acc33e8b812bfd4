// Package registry is the snapshot registry shared by all backends: which committed snapshot
// holds the result of a cache key, on which backend, on which root image and for which step
// fingerprint (command, env, image as written: spec/cache-keys.md § FIX). It lives in one
// SQLite file under the state dir and is safe to share between concurrent hm processes.
package registry

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // pure-Go driver, registers "sqlite"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/sqlitemigrate"
	"github.com/hmci/hm/internal/statedir"
)

// Entry maps its Scope (Backend, Base, Key, Fingerprint) to the snapshot that holds the
// step's result.
type Entry struct {
	Backend string // "docker", "sandbox", ...
	Base    string // resolved image id or digest of the chain's root
	Key     string // cache key
	// Fingerprint is the step's cachekey.Fingerprint: the command, env and image the key may
	// leave out (spec/cache-keys.md § FIX). "" for entries migrated from schema 1, which
	// therefore never hit.
	Fingerprint string
	Snapshot    string // backend snapshot id (e.g. an image id)
	Pipeline    string // pipeline slug
	StepKey     string
	SourceDir   string // absolute source directory of the build that registered it; "" when unknown
	Image       string // the chain root's image as written; "" when unknown
	Created     time.Time
	LastUsed    time.Time
	Size        int64 // bytes, 0 when unknown
	Inputs      cachekey.Inputs
}

// Scope is what an entry is found by: a key never resolves to a snapshot built on another
// backend or base image, or by another command (spec/cache-keys.md § Beyond the key).
type Scope struct {
	Backend, Base, Key, Fingerprint string
}

// Scope returns e's scope.
func (e Entry) Scope() Scope { return Scope{e.Backend, e.Base, e.Key, e.Fingerprint} }

// ID is the entry's identifier everywhere hm shows one (the miss and hit lines, step_cache_hit,
// hm cache ls, rm and prune): the first 12 hex of sha256(backend \0 base \0 key \0
// fingerprint). A cache key alone would name several entries; a snapshot id differs per
// backend and does not exist before the step ran, when the miss line is written.
func (s Scope) ID() string {
	h := sha256.Sum256([]byte(s.Backend + "\x00" + s.Base + "\x00" + s.Key + "\x00" + s.Fingerprint))
	return hex.EncodeToString(h[:])[:IDLen]
}

// ID is e.Scope().ID().
func (e Entry) ID() string { return e.Scope().ID() }

// IDLen is the length of an entry id.
const IDLen = 12

// Registry is an open registry file. Its methods are safe for concurrent use, and several
// processes may open the same file.
type Registry struct {
	db       *sql.DB
	path     string
	now      func() time.Time // tests pin the clock to order entries deterministically
	readOnly bool             // opened by OpenReadOnly: lookups do not mark entries used
}

// busyTimeout is how long a statement waits for another hm holding the write lock. Writes are
// single short transactions, so this is only reached when something is badly stuck.
const busyTimeout = 30 * time.Second

// Open opens (creating if needed) the registry file at path and migrates its schema.
func Open(ctx context.Context, path string) (*Registry, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("registry: path %q contains '?': %w", path, errs.ErrUsage)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("registry: %w: %w", errs.ErrInfra, err)
	}
	// Creating the file, switching it to WAL and migrating happen under a lock beside it.
	// busy_timeout (applied before journal_mode by the driver) is not enough on a fresh file:
	// a connection that arrives while another converts the file to WAL can get SQLITE_BUSY
	// without the busy handler being called, so two hm processes starting on a fresh state
	// dir failed with an infrastructure error (TestOpenConcurrentFresh). WAL is persistent,
	// so connections the pool opens later find the file converted and migrated.
	unlock, err := statedir.Lock(path + ".lock")
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	defer unlock()
	// _txlock=immediate makes every BeginTx take the write lock up front: a deferred
	// transaction that reads then writes can fail with SQLITE_BUSY without waiting when
	// another process wrote in between.
	dsn := path + fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate",
		busyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w: %w", path, errs.ErrInfra, err)
	}
	r := &Registry{db: db, path: path, now: time.Now}
	if err := r.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return r, nil
}

// Close closes the registry.
func (r *Registry) Close() error { return r.db.Close() }

// migrations[i] brings the schema from user_version i to i+1. Append only; never edit a
// released step.
var migrations = []string{
	`CREATE TABLE entries (
		backend   TEXT    NOT NULL,
		base      TEXT    NOT NULL,
		key       TEXT    NOT NULL,
		snapshot  TEXT    NOT NULL,
		pipeline  TEXT    NOT NULL DEFAULT '',
		step_key  TEXT    NOT NULL DEFAULT '',
		created   INTEGER NOT NULL, -- unix nanoseconds
		last_used INTEGER NOT NULL, -- unix nanoseconds
		size      INTEGER NOT NULL DEFAULT 0,
		inputs    TEXT    NOT NULL DEFAULT '{}',
		PRIMARY KEY (backend, base, key)
	);
	CREATE INDEX entries_lru ON entries (backend, last_used);
	CREATE INDEX entries_step ON entries (backend, pipeline, step_key, created);
	CREATE INDEX entries_snapshot ON entries (backend, snapshot);`,
	// 2: scope entries by the step's fingerprint too, and record where they came from. SQLite
	// cannot change a primary key in place: the table is rebuilt. Existing rows get an empty
	// fingerprint, which no lookup asks for: they stay listed (and evictable) but never hit,
	// as they may have been built by another command.
	`CREATE TABLE entries_v2 (
		backend     TEXT    NOT NULL,
		base        TEXT    NOT NULL,
		key         TEXT    NOT NULL,
		fingerprint TEXT    NOT NULL DEFAULT '',
		snapshot    TEXT    NOT NULL,
		pipeline    TEXT    NOT NULL DEFAULT '',
		step_key    TEXT    NOT NULL DEFAULT '',
		source_dir  TEXT    NOT NULL DEFAULT '',
		image       TEXT    NOT NULL DEFAULT '',
		created     INTEGER NOT NULL, -- unix nanoseconds
		last_used   INTEGER NOT NULL, -- unix nanoseconds
		size        INTEGER NOT NULL DEFAULT 0,
		inputs      TEXT    NOT NULL DEFAULT '{}',
		PRIMARY KEY (backend, base, key, fingerprint)
	);
	INSERT INTO entries_v2 (backend, base, key, snapshot, pipeline, step_key, created, last_used, size, inputs)
		SELECT backend, base, key, snapshot, pipeline, step_key, created, last_used, size, inputs FROM entries;
	DROP TABLE entries;
	ALTER TABLE entries_v2 RENAME TO entries;
	CREATE INDEX entries_lru ON entries (backend, last_used);
	CREATE INDEX entries_step ON entries (backend, pipeline, step_key, created);
	CREATE INDEX entries_snapshot ON entries (backend, snapshot);`,
}

func (r *Registry) migrate(ctx context.Context) error {
	// A registry at this schema (every open but the first after an upgrade) needs no write
	// transaction: Apply sets user_version even when it is unchanged, a write that costs
	// every hm process a WAL frame and its syncs before its first lookup. The file lock
	// held by Open keeps another process from migrating in between.
	var v int
	if err := r.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err == nil && v == len(migrations) {
		return nil
	}
	return r.write(ctx, "migrate", func(tx *sql.Tx) error {
		return sqlitemigrate.Apply(ctx, tx, migrations, func(v int) error {
			return errs.New(errs.ErrInfra, "registry_too_new",
				"upgrade hm, or point it at another state dir",
				"snapshot registry %s has schema version %d; this hm knows up to %d", r.path, v, len(migrations))
		})
	})
}

// write runs fn in one BEGIN IMMEDIATE transaction.
func (r *Registry) write(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return wrap(op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return wrap(op, err)
	}
	return wrap(op, tx.Commit())
}

func wrap(op string, err error) error {
	var e *errs.Error
	if err == nil || errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("registry: %s: %w: %w", op, errs.ErrCanceled, err)
	}
	return fmt.Errorf("registry: %s: %w: %w", op, errs.ErrInfra, err)
}

const columns = `backend, base, key, fingerprint, snapshot, pipeline, step_key, source_dir, image, created, last_used, size, inputs`

const byScope = `backend = ? AND base = ? AND key = ? AND fingerprint = ?`

type scanner interface{ Scan(dest ...any) error }

func scanEntry(s scanner) (Entry, error) {
	var e Entry
	var created, lastUsed int64
	var inputs string
	if err := s.Scan(&e.Backend, &e.Base, &e.Key, &e.Fingerprint, &e.Snapshot, &e.Pipeline, &e.StepKey,
		&e.SourceDir, &e.Image, &created, &lastUsed, &e.Size, &inputs); err != nil {
		return Entry{}, err
	}
	e.Created = time.Unix(0, created)
	e.LastUsed = time.Unix(0, lastUsed)
	// Inputs only explain misses; an unreadable record must not cost a cache hit.
	_ = json.Unmarshal([]byte(inputs), &e.Inputs)
	return e, nil
}

func queryEntries(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) ([]Entry, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Lookup returns the entry for s and marks it used now. An empty fingerprint finds nothing:
// only migrated entries have one.
func (r *Registry) Lookup(ctx context.Context, s Scope) (Entry, bool, error) {
	if s.Fingerprint == "" {
		return Entry{}, false, nil
	}
	var row *sql.Row
	if r.readOnly {
		row = r.db.QueryRowContext(ctx, `SELECT `+columns+` FROM entries WHERE `+byScope,
			s.Backend, s.Base, s.Key, s.Fingerprint)
	} else {
		row = r.db.QueryRowContext(ctx, `UPDATE entries SET last_used = ?
		WHERE `+byScope+` RETURNING `+columns,
			r.now().UnixNano(), s.Backend, s.Base, s.Key, s.Fingerprint)
	}
	e, err := scanEntry(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, wrap("lookup", err)
	}
	return e, true, nil
}

// Peek returns the entry for s, as Lookup does, without marking it used.
func (r *Registry) Peek(ctx context.Context, s Scope) (Entry, bool, error) {
	if s.Fingerprint == "" {
		return Entry{}, false, nil
	}
	e, err := scanEntry(r.db.QueryRowContext(ctx, `SELECT `+columns+` FROM entries WHERE `+byScope,
		s.Backend, s.Base, s.Key, s.Fingerprint))
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, wrap("peek", err)
	}
	return e, true, nil
}

// Register records e atomically. Created and LastUsed default to now. When an entry for
// e.Scope() already exists — another hm built the same key concurrently — it is
// kept, marked used and returned: the caller must then delete its own snapshot unless
// winner.Snapshot == e.Snapshot. So there is one registered snapshot per key and none dangles.
func (r *Registry) Register(ctx context.Context, e Entry) (winner Entry, err error) {
	for name, v := range map[string]string{"backend": e.Backend, "base": e.Base, "key": e.Key,
		"fingerprint": e.Fingerprint, "snapshot": e.Snapshot} {
		if v == "" {
			return Entry{}, fmt.Errorf("registry: register: empty %s: %w", name, errs.ErrUsage)
		}
	}
	now := r.now()
	if e.Created.IsZero() {
		e.Created = now
	}
	if e.LastUsed.IsZero() {
		e.LastUsed = now
	}
	inputs, err := json.Marshal(e.Inputs)
	if err != nil {
		return Entry{}, wrap("register", err)
	}
	err = r.write(ctx, "register", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO entries (`+columns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			e.Backend, e.Base, e.Key, e.Fingerprint, e.Snapshot, e.Pipeline, e.StepKey, e.SourceDir, e.Image,
			e.Created.UnixNano(), e.LastUsed.UnixNano(), e.Size, string(inputs))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			winner = e
			return err
		}
		winner, err = scanEntry(tx.QueryRowContext(ctx, `UPDATE entries SET last_used = ?
			WHERE `+byScope+` RETURNING `+columns,
			now.UnixNano(), e.Backend, e.Base, e.Key, e.Fingerprint))
		return err
	})
	if err != nil {
		return Entry{}, err
	}
	return winner, nil
}

// Remove deletes the entry for s, if any. The snapshot is the caller's.
func (r *Registry) Remove(ctx context.Context, s Scope) error {
	_, err := r.db.ExecContext(ctx, `DELETE FROM entries WHERE `+byScope,
		s.Backend, s.Base, s.Key, s.Fingerprint)
	return wrap("remove", err)
}

// SetSize records the size of the entry for s once it is known; the snapshot is sized after
// the build, off the step's critical path.
func (r *Registry) SetSize(ctx context.Context, s Scope, size int64) error {
	_, err := r.db.ExecContext(ctx, `UPDATE entries SET size = ? WHERE `+byScope,
		size, s.Backend, s.Base, s.Key, s.Fingerprint)
	return wrap("set size", err)
}

// List returns the entries of backend ("" = all backends), most recently used first.
func (r *Registry) List(ctx context.Context, backend string) ([]Entry, error) {
	es, err := queryEntries(ctx, r.db, `SELECT `+columns+` FROM entries
		WHERE ? = '' OR backend = ? ORDER BY last_used DESC, created DESC, rowid DESC`, backend, backend)
	return es, wrap("list", err)
}

// LastFor returns the most recently registered entry of step stepKey in pipeline on backend,
// whatever its key, preferring entries from sourceDir (two repositories may share a slug):
// the baseline for explaining a miss.
func (r *Registry) LastFor(ctx context.Context, backend, sourceDir, pipeline, stepKey string) (Entry, bool, error) {
	es, err := queryEntries(ctx, r.db, `SELECT `+columns+` FROM entries
		WHERE backend = ? AND pipeline = ? AND step_key = ?
		ORDER BY source_dir = ? DESC, created DESC, rowid DESC LIMIT 1`, backend, pipeline, stepKey, sourceDir)
	if err != nil || len(es) == 0 {
		return Entry{}, false, wrap("last entry", err)
	}
	return es[0], true, nil
}

// Referenced returns the set of snapshot ids that entries of backend ("" = all) reference.
// Reconciliation deletes hm-labelled snapshots outside this set.
func (r *Registry) Referenced(ctx context.Context, backend string) (map[string]bool, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT DISTINCT snapshot FROM entries WHERE ? = '' OR backend = ?`,
		backend, backend)
	if err != nil {
		return nil, wrap("referenced", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, wrap("referenced", err)
		}
		out[s] = true
	}
	return out, wrap("referenced", rows.Err())
}
