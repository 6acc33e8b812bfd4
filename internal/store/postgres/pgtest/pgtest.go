// Package pgtest gives tests a fresh PostgreSQL schema of the database named by
// HM_TEST_POSTGRES_URL. Without it (or when it does not answer) a test skips with the reason,
// unless HM_TEST_REQUIRE_POSTGRES=1 (CI, which starts PostgreSQL on purpose): then it fails,
// as HM_TEST_REQUIRE_DOCKER does for the Docker tests.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env names the variables: the database URL and the switch that turns a skip into a failure.
const (
	Env        = "HM_TEST_POSTGRES_URL"
	RequireEnv = "HM_TEST_REQUIRE_POSTGRES"
)

// Available says whether HM_TEST_POSTGRES_URL is set (it may still not answer).
func Available() bool { return os.Getenv(Env) != "" }

// Skip skips t, or fails it under HM_TEST_REQUIRE_POSTGRES=1.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf(format+" ("+RequireEnv+"=1)", args...)
	}
	t.Skipf(format, args...)
}

// URL returns a postgres:// URL whose connections use a new, empty schema (search_path), and
// drops the schema with everything in it when t ends. Schemas keep tests apart at the cost of
// one CREATE SCHEMA, where a database each would cost a CREATE DATABASE from a template.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		Skip(t, "needs PostgreSQL: set %s to a database URL a test may create schemas in", Env)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s is not a postgres:// URL", Env)
	}
	b := make([]byte, 8)
	rand.Read(b)
	schema := "hm_test_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		Skip(t, "needs PostgreSQL: %s does not answer: %v", Env, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() { drop(t, base, schema) })
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// drop removes the schema. Its connections are closed by then (the cleanups of what used it
// ran first); lock_timeout keeps a leaked one from hanging the test binary.
func drop(t testing.TB, base, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET lock_timeout = '20s'"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
		return
	}
	if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
		t.Errorf("drop schema %s: %v", schema, err)
	}
}

// Dump is every row of every table of url's schema, as text: what a test greps for a value
// that must not be stored.
func Dump(url string) ([]byte, error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT quote_ident(table_name) FROM information_schema.tables WHERE table_schema = current_schema()`)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, tb := range tables {
		rows, err := conn.Query(ctx, `SELECT t::text FROM `+tb+` t`)
		if err != nil {
			return nil, err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		out.WriteString(strings.Join(lines, "\n"))
	}
	return out.Bytes(), nil
}
