package e2e

import (
	"context"
	"testing"

	"github.com/hmci/hm/internal/execution/remote/remotetest"
	"github.com/hmci/hm/internal/store/postgres"
	"github.com/hmci/hm/internal/store/postgres/pgtest"
)

// remoteStore is the store an e2e `hm server` runs on: the remote suite runs once on each.
type remoteStore string

const (
	storeSQLite   remoteStore = "sqlite"   // the default: DATA/store.db
	storePostgres remoteStore = "postgres" // --db, a fresh schema of HM_TEST_POSTGRES_URL
)

// remoteStores runs fn as a subtest per store. The PostgreSQL one skips without
// HM_TEST_POSTGRES_URL, and fails instead under HM_TEST_REQUIRE_POSTGRES=1 (CI).
func remoteStores(t *testing.T, fn func(t *testing.T, st remoteStore)) {
	for _, st := range []remoteStore{storeSQLite, storePostgres} {
		t.Run(string(st), func(t *testing.T) { fn(t, st) })
	}
}

// dbArgs are the server's store flags beside --data, for one cluster: every process of it
// (token create, the server and its restarts) gets the same. A PostgreSQL schema is dropped
// when t ends, after the cluster's processes, whose cleanups were registered later.
func (st remoteStore) dbArgs(t *testing.T) []string {
	t.Helper()
	if st == storePostgres {
		return []string{"--db", pgtest.URL(t)}
	}
	return nil
}

// testServer is an in-process hm server (remotetest) on the store: the default SQLite one,
// or a fresh PostgreSQL schema, closed before the schema is dropped (its cleanup runs first).
func (st remoteStore) testServer(t *testing.T) *remotetest.Env {
	t.Helper()
	if st != storePostgres {
		return remotetest.New(t)
	}
	db, err := postgres.Open(context.Background(), pgtest.URL(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return remotetest.NewOn(t, db)
}
