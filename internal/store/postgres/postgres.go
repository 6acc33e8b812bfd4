// Package postgres is the PostgreSQL driver of the server's store (internal/store), on pgx v5
// and its pool: the driver for several `hm server` replicas on one database. Its schema and
// queries are the SQLite driver's: the same migration files (internal/store/sqlite/migrations),
// applied with INTEGER widened to BIGINT (times are unix nanoseconds on both), and the same
// statement text, written once in internal/store/sqlq with ? placeholders that rebind turns
// into $n. This package holds only where the dialects must differ, and says so: the claim's
// subquery takes FOR UPDATE OF j SKIP LOCKED (concurrent claimers skip each other's rows
// instead of queueing on them; sqlq.Claim takes the clause), parameters whose type PostgreSQL
// cannot infer carry a cast (the bigint argument of sqlq's statements), text orders use
// COLLATE "C" (SQLite's byte order, whatever the database's collation; appended to sqlq's
// statements, which end in their ORDER BY), batch inserts are one statement over arrays
// (unnest, BYTEA for log content), and the log head row is locked before the chunks are
// inserted, because under READ COMMITTED a statement does not see rows another transaction
// committed after the statement began.
//
// Every write is one transaction at READ COMMITTED; each transition is still a single
// UPDATE … WHERE <expected state> RETURNING, so two replicas racing on one row cannot both
// win (the loser's WHERE is re-checked against the winner's row). A transaction aborted by a
// deadlock or a serialization failure is retried a few times. Schema: the migrations run in
// one transaction under a transaction-scoped advisory lock, so replicas starting at once
// migrate once and the others wait for it; the version is the highest row of hm_schema.
// Wake-ups: an in-process hub, bridged across replicas with LISTEN/NOTIFY for the low-rate
// topics only (notify.go).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
	"github.com/hmci/hm/internal/store/sqlq"
)

// IsURL says dsn names a PostgreSQL database (what --db takes for this driver).
func IsURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Options tune Open.
type Options struct {
	// NoMigrate opens without migrating: a database behind this hm's schema is refused
	// (*SchemaError) instead of upgraded.
	NoMigrate bool
}

// DB is an open store.
type DB struct {
	pool  *pgxpool.Pool
	where string // host:port/database, for messages: never the password
	br    bridge // wake-ups, here and across replicas (notify.go)
	// recent holds the events this replica appended last, for its readers (store.RecentEvents).
	recent store.RecentEvents
}

var _ store.Store = (*DB)(nil)

// SchemaError is a database whose schema version is not this hm's: newer (another hm
// migrated it) or, opened without migrating, older.
type SchemaError struct {
	Database string
	Have     int // the database's version
	Known    int // the newest this hm knows
}

func (e *SchemaError) Error() string {
	if e.Have > e.Known {
		return fmt.Sprintf("store %s has schema version %d; this hm knows up to %d", e.Database, e.Have, e.Known)
	}
	return fmt.Sprintf("store %s has schema version %d; this hm needs %d and was told not to migrate", e.Database, e.Have, e.Known)
}
func (e *SchemaError) Unwrap() error { return errs.ErrInfra }

// Code is the error line's code: store_too_new or store_not_migrated.
func (e *SchemaError) Code() string {
	if e.Have > e.Known {
		return "store_too_new"
	}
	return "store_not_migrated"
}

// defaultMaxConns is the pool's size unless the URL sets pool_max_conns.
const defaultMaxConns = 16

// Open connects to the database at dsn (a postgres:// URL, or pgx's key=value form) and
// migrates it unless o.NoMigrate. A database that cannot be reached is an
// *errs.UnavailableError (backend "postgres"); a dsn that does not parse, errs.ErrUsage.
func Open(ctx context.Context, dsn string, o Options) (*DB, error) {
	s, err := Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if o.NoMigrate {
		err = s.CheckSchema(ctx)
	} else {
		_, _, err = s.Migrate(ctx)
	}
	if err == nil {
		err = s.startBridge(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Connect is Open without a look at the schema: for Migrate and Version.
func Connect(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the dsn, password included: keep only its class.
		return nil, fmt.Errorf("store: the PostgreSQL URL does not parse: %w", errs.ErrUsage)
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgxpool's default is max(4, CPUs): on a small machine a replica's drivers, event
		// streams and agents' calls queue for 4 connections (bench/replicas: submit → first
		// step 4× SQLite's). A replica rarely holds more than this at once, and three of
		// them stay well under PostgreSQL's default max_connections (100).
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, unavailable(where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if ctx.Err() != nil {
			return nil, wrap("connect", err)
		}
		return nil, unavailable(where, err)
	}
	return &DB{pool: pool, where: where}, nil
}

func unavailable(where string, err error) error {
	return &errs.UnavailableError{Backend: "postgres", Address: where,
		Msg: fmt.Sprintf("cannot connect to the PostgreSQL database %s: %v", where, err), Err: err}
}

// Close closes the pool; the data stays.
func (s *DB) Close() error { s.closeBridge(); s.pool.Close(); return nil }

// Where is host:port/database.
func (s *DB) Where() string { return s.where }

// Ping checks that the database answers.
func (s *DB) Ping(ctx context.Context) error { return wrap("ping", s.pool.Ping(ctx)) }

var integer = regexp.MustCompile(`\bINTEGER\b`)

// dialect lists the other changes to SQLite's migration text, by schema version; each must
// match exactly once, so that an edit of the SQLite file cannot silently drop one.
var dialect = []struct {
	version  int
	old, new string
}{
	// Log chunks are a step's bytes: PostgreSQL's TEXT refuses NUL (SQLite's keeps it).
	{1, "content TEXT NOT NULL", "content BYTEA NOT NULL"},
	{9, "content TEXT NOT NULL", "content BYTEA NOT NULL"},
	// A PostgreSQL table is a heap beside its indexes whatever the clause; it has no such one.
	{9, ") WITHOUT ROWID;", ");"},
	// Sealed secrets are bytes: SQLite's BLOB is PostgreSQL's BYTEA.
	{10, "sealed   BLOB NOT NULL", "sealed   BYTEA NOT NULL"},
	{13, "value BLOB NOT NULL", "value BYTEA NOT NULL"},
	{13, "data   BLOB    NOT NULL", "data   BYTEA   NOT NULL"},
}

// migrations are the SQLite driver's, with INTEGER (SQLite's 64-bit integer) as BIGINT
// (PostgreSQL's INTEGER is 32 bits; times in nanoseconds need 64), and the dialect changes.
func migrations() ([]string, error) {
	ms, err := sqlite.Migrations()
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	for _, d := range dialect {
		if n := strings.Count(ms[d.version-1], d.old); n != 1 {
			return nil, fmt.Errorf("store: migration %d: %q found %d times, want once", d.version, d.old, n)
		}
		ms[d.version-1] = strings.Replace(ms[d.version-1], d.old, d.new, 1)
	}
	for i := range ms {
		ms[i] = integer.ReplaceAllString(ms[i], "BIGINT")
	}
	return ms, nil
}

// lockSchema takes the migration lock of the current schema until the transaction ends: one
// lock per schema, so that databases and schemas of other deployments (or tests) do not wait.
const lockSchema = `SELECT pg_advisory_xact_lock(hashtext('hm store migrate ' || current_schema()))`

const createVersions = `CREATE TABLE IF NOT EXISTS hm_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`

// Migrate brings the schema up to this hm's version and returns the versions before and
// after. A database newer than this hm is refused with a *SchemaError, before any change.
func (s *DB) Migrate(ctx context.Context) (from, to int, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, 0, err
	}
	err = s.write(ctx, "migrate", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSchema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, createVersions); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM hm_schema`).Scan(&from); err != nil {
			return err
		}
		if from > len(ms) {
			return &SchemaError{Database: s.where, Have: from, Known: len(ms)}
		}
		now := time.Now().UnixNano()
		for v := from; v < len(ms); v++ {
			if _, err := tx.Exec(ctx, ms[v]); err != nil {
				return fmt.Errorf("schema %d→%d: %w", v, v+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO hm_schema (version, applied_at) VALUES ($1, $2)`, v+1, now); err != nil {
				return err
			}
		}
		return nil
	})
	return from, len(ms), err
}

// Version is the database's schema version (0 before the first migration) and the newest
// this hm knows.
func (s *DB) Version(ctx context.Context) (have, known int, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, 0, err
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('hm_schema') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, 0, wrap("schema version", err)
	}
	if exists {
		if err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM hm_schema`).Scan(&have); err != nil {
			return 0, 0, wrap("schema version", err)
		}
	}
	return have, len(ms), nil
}

// CheckSchema answers a *SchemaError unless the database is at this hm's version.
func (s *DB) CheckSchema(ctx context.Context) error {
	have, known, err := s.Version(ctx)
	if err != nil {
		return err
	}
	if have != known {
		return &SchemaError{Database: s.where, Have: have, Known: known}
	}
	return nil
}

// maxTries bounds the retries of a transaction aborted by a deadlock or a serialization
// failure: either is another writer's timing, not this one's fault.
const maxTries = 5

// write runs fn in one transaction, committed when fn returns nil.
func (s *DB) write(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	for try := 1; ; try++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if try < maxTries && retryable(err) {
			continue
		}
		return wrap(op, err)
	}
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// wrap classes a driver error; store and hm errors pass through.
func wrap(op string, err error) error {
	var e *errs.Error
	var se *SchemaError
	if err == nil || errors.As(err, &e) || errors.As(err, &se) || errors.Is(err, store.ErrNotFound) ||
		errors.Is(err, store.ErrConflict) || errors.Is(err, errs.ErrUsage) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store: %s: %w: %w", op, errs.ErrCanceled, err)
	}
	return fmt.Errorf("store: %s: %w: %w", op, errs.ErrInfra, err)
}

// isUnique says err is a unique or primary key violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// rebind turns the shared statements' ? placeholders (internal/store/sqlq) into PostgreSQL's
// $1, $2, … in order. The ? inside a string literal or a -- comment is left alone.
func rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '-' && !quoted && strings.HasPrefix(q[i:], "--"):
			// A comment (an apostrophe in it is not a quote): copied to the end of its line.
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				end = len(q) - i
			}
			b.WriteString(q[i : i+end])
			i += end - 1
			continue
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ns is a time as stored: unix nanoseconds, 0 for the zero time.
// The time helpers and the row interface are the shared ones (sqlq), under short names.
var (
	ns    = sqlq.NS
	tm    = sqlq.Tm
	nowOr = sqlq.NowOr
)

type scanner = sqlq.Scanner

// querier is the pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// row runs a one-row query written with ? placeholders.
func row(ctx context.Context, q querier, query string, args ...any) pgx.Row {
	return q.QueryRow(ctx, rebind(query), args...)
}

// exec runs a statement written with ? placeholders.
func exec(ctx context.Context, q querier, query string, args ...any) (pgconn.CommandTag, error) {
	return q.Exec(ctx, rebind(query), args...)
}

// list runs a query and scans each row with scan.
func list[T any](ctx context.Context, q querier, op string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, rebind(query), args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out, err := sqlq.Collect(rows, scan)
	return out, wrap(op, err)
}

// one scans a single row, turning no row into a NotFoundError of kind/key.
func one[T any](r scanner, scan func(scanner) (T, error), kind, key string) (T, error) {
	return sqlq.One(r, scan, pgx.ErrNoRows, kind, key)
}
