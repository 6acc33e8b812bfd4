// Package servertest builds the store half of a server test fixture: a real SQLite store and
// blob directory in a temp dir, and orgs with a user and an agent token each. It does not
// import internal/server, so that the server package's own tests use it as well as the
// agent's.
package servertest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
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

// Org creates the org slug with a user and an agent token; it returns their secrets by kind.
func (s *Store) Org(ctx context.Context, t *testing.T, slug string) map[store.TokenKind]string {
	t.Helper()
	o, err := s.DB.CreateOrg(ctx, slug, slug)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[store.TokenKind]string{}
	for _, kind := range []store.TokenKind{store.TokenUser, store.TokenAgent} {
		secret, h := store.NewToken(kind)
		if _, err := s.DB.CreateToken(ctx, store.Token{OrgID: o.ID, Kind: kind, Name: "t", Hash: h}); err != nil {
			t.Fatal(err)
		}
		tokens[kind] = secret
	}
	return tokens
}
