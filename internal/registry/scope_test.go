package registry

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

// An entry is found only under its whole scope: the same key built by another command (another
// fingerprint) is a miss, as is an empty fingerprint.
func TestScopeByFingerprint(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, "")
	mustRegister(t, r, Entry{Backend: "docker", Base: "img", Key: "k", Fingerprint: "fp-echo-x", Snapshot: "s1"})
	tests := []struct {
		name  string
		scope Scope
		want  string // snapshot; "" = miss
	}{
		{"same scope", Scope{"docker", "img", "k", "fp-echo-x"}, "s1"},
		{"other command", Scope{"docker", "img", "k", "fp-echo-y"}, ""},
		{"no fingerprint", Scope{"docker", "img", "k", ""}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, ok, err := r.Lookup(ctx, tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			if got := map[bool]string{true: e.Snapshot}[ok]; got != tc.want {
				t.Errorf("Lookup = %q, want %q", got, tc.want)
			}
		})
	}
	// Both commands' snapshots live side by side.
	mustRegister(t, r, Entry{Backend: "docker", Base: "img", Key: "k", Fingerprint: "fp-echo-y", Snapshot: "s2"})
	if e, ok, _ := r.Lookup(ctx, Scope{"docker", "img", "k", "fp-echo-y"}); !ok || e.Snapshot != "s2" {
		t.Errorf("second fingerprint: %v %q", ok, e.Snapshot)
	}
	if _, err := r.Register(ctx, Entry{Backend: "docker", Base: "img", Key: "k", Snapshot: "s3"}); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("register without a fingerprint: %v, want a usage error", err)
	}
}

// The id format is part of the interface (users paste it into hm cache rm): pin it.
func TestEntryID(t *testing.T) {
	s := Scope{"docker", "sha256:base", "k", "fp"}
	// printf 'docker\0sha256:base\0k\0fp' | sha256sum
	if got, want := s.ID(), "e3e692531f1b"; got != want {
		t.Errorf("ID = %s, want %s", got, want)
	}
	if (Entry{Backend: "docker", Base: "sha256:base", Key: "k", Fingerprint: "fp2"}).ID() == s.ID() {
		t.Error("the fingerprint does not change the id")
	}
}

// A schema 1 registry is migrated: its entries are kept (listed, evictable) with no
// fingerprint, so they never hit, and a new entry for the same key registers beside them.
func TestMigrateFromSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{migrations[0],
		`INSERT INTO entries (backend, base, key, snapshot, pipeline, step_key, created, last_used, size, inputs)
			VALUES ('host', 'host', 'k', 'k-old', 'pipeline', 'deps', 1, 1, 10, '{"policy":"on_change"}')`,
		`PRAGMA user_version = 1`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	r := openTest(t, path)
	es, err := r.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Snapshot != "k-old" || es[0].Fingerprint != "" || es[0].Inputs.Policy != "on_change" {
		t.Fatalf("migrated entries: %+v", es)
	}
	if _, ok, _ := r.Lookup(ctx, Scope{"host", "host", "k", "fp"}); ok {
		t.Error("a migrated entry hit")
	}
	mustRegister(t, r, Entry{Backend: "host", Base: "host", Key: "k", Fingerprint: "fp", Snapshot: "k-new", Pipeline: "pipeline", StepKey: "deps"})
	if e, ok, _ := r.Lookup(ctx, Scope{"host", "host", "k", "fp"}); !ok || e.Snapshot != "k-new" {
		t.Errorf("after registering: %v %q", ok, e.Snapshot)
	}
	ref, err := r.Referenced(ctx, "host")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]bool{"k-old": true, "k-new": true}, ref); d != "" {
		t.Errorf("referenced (-want +got):\n%s", d)
	}
}

// LastFor prefers the entries of the same source directory: two repositories that share a
// slug must not explain each other's misses.
func TestLastForPrefersSourceDir(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, "")
	mustRegister(t, r, Entry{Backend: "host", Base: "host", Key: "k1", Fingerprint: "a", Snapshot: "s1", Pipeline: "p", StepKey: "s", SourceDir: "/x"})
	mustRegister(t, r, Entry{Backend: "host", Base: "host", Key: "k2", Fingerprint: "b", Snapshot: "s2", Pipeline: "p", StepKey: "s", SourceDir: "/y"})
	for _, tc := range []struct{ dir, want string }{{"/x", "s1"}, {"/y", "s2"}, {"/z", "s2"}} {
		e, ok, err := r.LastFor(ctx, "host", tc.dir, "p", "s")
		if err != nil || !ok || e.Snapshot != tc.want {
			t.Errorf("LastFor from %s = %q (%v, %v), want %s", tc.dir, e.Snapshot, ok, err, tc.want)
		}
	}
}

// Delete removes the chosen entries, unless they were re-registered with another snapshot.
func TestDelete(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, "")
	a := mustRegister(t, r, entry("a", 1))
	b := mustRegister(t, r, entry("b", 1))
	stale := b
	stale.Snapshot = "other"
	got, err := r.Delete(ctx, []Entry{a, stale})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a"}, keys(got)); d != "" {
		t.Errorf("deleted (-want +got):\n%s", d)
	}
	left, _ := r.List(ctx, "")
	if d := cmp.Diff([]string{"b"}, keys(left)); d != "" {
		t.Errorf("left (-want +got):\n%s", d)
	}
}
