// Package sqlq is the SQL text both drivers of the server's store run (internal/store/sqlite
// and internal/store/postgres): column lists, statements written with ? placeholders, and the
// functions that scan their rows. Issue 12 asked for the same queries wherever the dialects
// agree; keeping the text once makes that true by construction. The PostgreSQL driver rebinds
// ? to $n and adds only what its dialect needs (row locks, casts, COLLATE "C", batch inserts,
// BYTEA, LISTEN/NOTIFY); those differences stay in that driver, next to the code that runs
// them.
//
// Times are unix nanoseconds in INTEGER (SQLite) or BIGINT (PostgreSQL) columns, 0 for none.
package sqlq

import (
	"errors"
	"time"

	"github.com/hmci/hm/internal/store"
)

// Scanner is a row of either driver: *sql.Row and *sql.Rows, pgx.Row and pgx.Rows.
type Scanner interface{ Scan(dest ...any) error }

// NS is t as stored: unix nanoseconds, 0 for the zero time.
func NS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Tm is the time stored as n (NS), in UTC.
func Tm(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// NowOr is t, or the current time when t is zero.
func NowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// Rows is a result of either driver: *sql.Rows, pgx.Rows.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// Collect scans every row of rows with scan; the caller closes rows. On an error it returns
// no rows.
func Collect[T any](rows Rows, scan func(Scanner) (T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// One scans a single row, turning noRows (the driver's sentinel for no row) into a
// NotFoundError of kind/key.
func One[T any](r Scanner, scan func(Scanner) (T, error), noRows error, kind, key string) (T, error) {
	v, err := scan(r)
	if errors.Is(err, noRows) {
		return v, &store.NotFoundError{Kind: kind, Key: key}
	}
	return v, err
}
