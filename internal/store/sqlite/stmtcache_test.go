package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestStmtCache: a connection's cached statements answer what fresh ones would, also when
// the same query runs again while its rows are open (nested, on one transaction's
// connection), and past the cache's bound.
func TestStmtCache(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // hang guard
	defer cancel()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE t (n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO t (n) VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
	}
	const q = `SELECT n FROM t WHERE n >= ? ORDER BY n`
	outer, err := tx.QueryContext(ctx, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for outer.Next() {
		var n int
		if err := outer.Scan(&n); err != nil {
			t.Fatal(err)
		}
		// The same query, its statement busy with the outer rows.
		inner, err := tx.QueryContext(ctx, q, n)
		if err != nil {
			t.Fatal(err)
		}
		var ns []int
		for inner.Next() {
			var m int
			inner.Scan(&m)
			ns = append(ns, m)
		}
		inner.Close()
		got = append(got, fmt.Sprint(n, ns))
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	if want := "[0 [0 1 2] 1 [1 2] 2 [2]]"; fmt.Sprint(got) != want {
		t.Errorf("nested = %v, want %v", got, want)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Past the bound: every query still answers, and the connection's cache stays bounded.
	c, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for round := range 2 {
		for i := range stmtsPerConn + 10 {
			var n int
			if err := c.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d + count(*) FROM t WHERE n >= ?`, i), 1).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != i+2 {
				t.Fatalf("round %d query %d = %d, want %d", round, i, n, i+2)
			}
		}
	}
	c.Raw(func(dc any) error {
		if n := len(dc.(*stmtConn).stmts); n == 0 || n > stmtsPerConn {
			t.Errorf("the connection caches %d statements, bound %d", n, stmtsPerConn)
		}
		return nil
	})
}
