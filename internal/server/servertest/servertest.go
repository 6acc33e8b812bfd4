// Package servertest builds the store half of a server test fixture: a real SQLite store and
// blob directory in a temp dir (or a PostgreSQL store holding its blobs: OpenDriver), and orgs
// with a user and an agent token each. It does not import internal/server, so that the server
// package's own tests use it as well as the agent's.
package servertest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
	"github.com/hmci/hm/internal/store/postgres"
	"github.com/hmci/hm/internal/store/postgres/pgtest"
	"github.com/hmci/hm/internal/store/sqlite"
)

// Store is a server's data directory: the SQLite database and the blobs under Dir.
type Store struct {
	DB    *sqlite.DB
	Blobs *blobdir.Dir
	Dir   string
}

// Open opens a Store in a new temp dir; the database closes when the test ends, after the
// cleanups registered later (the server using it) ran.
func Open(ctx context.Context, t *testing.T) *Store {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	blobs, err := blobdir.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return &Store{DB: db, Blobs: blobs, Dir: dir}
}

// Drivers are the store drivers OpenDriver opens.
var Drivers = []string{"sqlite", "postgres"}

// Fixture is a server's store on either driver, with a temp dir beside it.
type Fixture struct {
	Store store.Store
	Blobs store.BlobStore
	Dir   string
}

// OpenDriver opens a fresh store of driver: "sqlite" (Open), or "postgres": a fresh schema of
// HM_TEST_POSTGRES_URL (the test skips without it, unless HM_TEST_REQUIRE_POSTGRES=1), which
// holds the blobs too, as hm server on PostgreSQL does.
func OpenDriver(ctx context.Context, t *testing.T, driver string) *Fixture {
	t.Helper()
	if driver == "sqlite" {
		s := Open(ctx, t)
		return &Fixture{Store: s.DB, Blobs: s.Blobs, Dir: s.Dir}
	}
	db, err := postgres.Open(ctx, pgtest.URL(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &Fixture{Store: db, Blobs: db, Dir: t.TempDir()}
}

// Org is Org of the fixture's store.
func (f *Fixture) Org(ctx context.Context, t *testing.T, slug string) map[store.TokenKind]string {
	t.Helper()
	return org(ctx, t, f.Store, slug)
}

// Org creates the org slug with a user and an agent token; it returns their secrets by kind.
func (s *Store) Org(ctx context.Context, t *testing.T, slug string) map[store.TokenKind]string {
	t.Helper()
	return org(ctx, t, s.DB, slug)
}

func org(ctx context.Context, t *testing.T, db store.Store, slug string) map[store.TokenKind]string {
	t.Helper()
	o, err := db.CreateOrg(ctx, slug, slug)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[store.TokenKind]string{}
	for _, kind := range []store.TokenKind{store.TokenUser, store.TokenAgent} {
		secret, h := store.NewToken(kind)
		if _, err := db.CreateToken(ctx, store.Token{OrgID: o.ID, Kind: kind, Name: "t", Hash: h}); err != nil {
			t.Fatal(err)
		}
		tokens[kind] = secret
	}
	return tokens
}
