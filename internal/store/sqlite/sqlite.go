// Package sqlite is the SQLite driver of the server's store (internal/store), on the pure-Go
// modernc.org/sqlite: one file, DATA/store.db, in WAL mode, shared safely by the connections of
// one server and by several processes. It is the one-command default; PostgreSQL is the
// driver for several replicas. The statements are shared with the PostgreSQL driver and
// written once, in internal/store/sqlq (placeholders aside): ON CONFLICT, RETURNING, counters
// on parent rows, no JSON functions. What stays here is SQLite's own: the multi-row VALUES
// batch inserts, the snapshot removal ack (a DELETE per snapshot), and LastCacheEntry's rowid
// tie-break.
//
// After each committed change the driver notifies its wake.Hub (store.Watcher), so the
// server's waiters (the scheduler's driver, a claim's long poll, event and log streams) of the
// same process wake at once instead of at their next poll.
//
// Every write runs in one BEGIN IMMEDIATE transaction (_txlock=immediate): SQLite has one
// writer at a time, and taking the lock up front means a transaction never fails half-way with
// SQLITE_BUSY because another connection wrote after it read; busy_timeout makes the others
// wait instead. Schema: numbered migrations embedded from migrations/, applied in order on
// Open under PRAGMA user_version.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/sqlitemigrate"
	"github.com/hmci/hm/internal/statedir"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
	"github.com/hmci/hm/internal/store/wake"
)

// maxIdleConns is how many connections the pool keeps open between calls.
const maxIdleConns = 8

// FileName is the database file under the data dir.
const FileName = "store.db"

// busyTimeout is how long a write waits for another holding the lock. Writes are single short
// transactions, so this is reached only when something is badly stuck.
const busyTimeout = 30 * time.Second

//go:embed migrations/*.sql
var migrationFS embed.FS

// DB is an open store.
type DB struct {
	db   *sql.DB
	path string
	// hub wakes this process's waiters after each commit (store.Watcher). Another process
	// sharing the file is not woken: its waiters' fallback poll sees the change.
	hub wake.Hub

	// wmu serializes this process's write transactions. SQLite has one writer anyway, and a
	// connection that finds the lock taken waits in the busy handler, which sleeps in steps
	// of up to 100 ms: the log path's two writers (agents' chunks, the driver's events)
	// lost most of their time there. Waiting on a mutex hands the lock over at once; other
	// processes on the same file still meet busy_timeout.
	wmu sync.Mutex

	// recent holds the events this process appended last, for its readers (store.RecentEvents).
	recent store.RecentEvents

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // see prepared
}

var (
	_ store.Store   = (*DB)(nil)
	_ store.Watcher = (*DB)(nil)
)

// Watch implements store.Watcher for the waiters of this process.
func (s *DB) Watch(topics ...store.Topic) (<-chan struct{}, func()) { return s.hub.Watch(topics...) }

// Open opens (creating and migrating) the store in dataDir.
func Open(ctx context.Context, dataDir string) (*DB, error) {
	return OpenFile(ctx, filepath.Join(dataDir, FileName))
}

// OpenFile opens (creating and migrating) the store file at path.
func OpenFile(ctx context.Context, path string) (*DB, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("store: path %q contains '?': %w", path, errs.ErrUsage)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w: %w", errs.ErrInfra, err)
	}
	// As in internal/registry: converting a fresh file to WAL can answer SQLITE_BUSY to a
	// second process without calling the busy handler, so creating and migrating happen
	// under a lock file beside the database.
	unlock, err := statedir.Lock(path + ".lock")
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer unlock()
	dsn := path + fmt.Sprintf("?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate",
		busyTimeout.Milliseconds())
	// modernc.org/sqlite's connections, keeping their statements prepared (stmtcache.go).
	db := sql.OpenDB(stmtConnector{dsn: dsn, drv: sqliteDriver})
	// database/sql keeps 2 idle connections by default: the server's concurrent readers
	// (streams, the driver, agents' calls) then opened and closed a connection (a file
	// open, its statements prepared again) on most calls past the second.
	db.SetMaxIdleConns(maxIdleConns)
	s := &DB{db: db, path: path}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	// The file holds token hashes and build sources' metadata: not for other users.
	os.Chmod(path, 0o600)
	return s, nil
}

// Close closes the database.
func (s *DB) Close() error {
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	s.stmtMu.Unlock()
	return s.db.Close()
}

// Path is the database file.
func (s *DB) Path() string { return s.path }

func migrations() ([]string, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	// Numbered 0001_…: lexical order is application order.
	sort.Strings(names)
	var out []string
	for _, n := range names {
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	return out, nil
}

func (s *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	return s.write(ctx, "migrate", func(tx *sql.Tx) error {
		return sqlitemigrate.Apply(ctx, tx, ms, func(v int) error {
			return errs.New(errs.ErrInfra, "store_too_new", "upgrade hm, or point the server at another data dir",
				"store %s has schema version %d; this hm knows up to %d", s.path, v, len(ms))
		})
	})
}

// write runs fn in one BEGIN IMMEDIATE transaction, one at a time in this process (wmu).
func (s *DB) write(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return wrap(op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return wrap(op, err)
	}
	return wrap(op, tx.Commit())
}

// wrap classes a driver error; store and hm errors pass through.
func wrap(op string, err error) error {
	var e *errs.Error
	if err == nil || errors.As(err, &e) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("store: %s: %w: %w", op, errs.ErrCanceled, err)
	}
	return fmt.Errorf("store: %s: %w: %w", op, errs.ErrInfra, err)
}

// isUnique says err is a unique or primary key violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// ns is a time as stored: unix nanoseconds, 0 for the zero time.
// The time helpers and the row interface are the shared ones (sqlq), under short names.
var (
	ns    = sqlq.NS
	tm    = sqlq.Tm
	nowOr = sqlq.NowOr
)

type scanner = sqlq.Scanner

type querier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// list runs a query and scans each row with scan.
func list[T any](ctx context.Context, q querier, op string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	out, err := sqlq.Collect(rows, scan)
	return out, wrap(op, err)
}

// one scans a single row, turning no row into a NotFoundError of kind/key.
func one[T any](row scanner, scan func(scanner) (T, error), kind, key string) (T, error) {
	return sqlq.One(row, scan, sql.ErrNoRows, kind, key)
}
