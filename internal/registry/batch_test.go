package registry

import (
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPeekManyTouch: PeekMany finds exactly the registered entries of the scopes asked (also
// past one batch), Touch marks exactly those used, and neither finds an empty fingerprint.
func TestPeekManyTouch(t *testing.T) {
	r := openTest(t, "")
	ctx := t.Context()
	var asked []Scope
	want := []string{}
	for i := range batchSize + 5 {
		e := entry(fmt.Sprintf("k%03d", i), 0)
		if i%2 == 0 {
			mustRegister(t, r, e)
			want = append(want, e.Key)
		}
		asked = append(asked, e.Scope())
	}
	other := mustRegister(t, r, entry("other", 0)) // registered, not asked
	asked = append(asked, Scope{"docker", "sha256:base", "other", ""})
	got, err := r.PeekMany(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	gotKeys := []string{}
	for s, e := range got {
		if s != e.Scope() {
			t.Errorf("entry %+v under scope %+v", e, s)
		}
		gotKeys = append(gotKeys, e.Key)
	}
	sort.Strings(gotKeys)
	if diff := cmp.Diff(want, gotKeys); diff != "" {
		t.Fatalf("PeekMany keys (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if !e.LastUsed.Before(other.LastUsed) {
			t.Fatalf("PeekMany or a later Register changed last_used of %s", e.Key)
		}
	}

	if err := r.Touch(ctx, asked); err != nil {
		t.Fatal(err)
	}
	after, err := r.PeekMany(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	for s, e := range after {
		if !e.LastUsed.After(other.LastUsed) {
			t.Errorf("Touch left %s at %v (registered %v)", e.Key, e.LastUsed, got[s].LastUsed)
		}
		if used == 0 {
			used = e.LastUsed.UnixNano()
		} else if e.LastUsed.UnixNano() != used {
			t.Errorf("Touch marked %s at %v, others at %v: one write, one time", e.Key, e.LastUsed, used)
		}
	}
	if o, _, _ := r.Peek(ctx, other.Scope()); !o.LastUsed.Equal(other.LastUsed) {
		t.Errorf("Touch marked %s, which was asked with an empty fingerprint only", o.Key)
	}
	if err := r.Touch(ctx, nil); err != nil {
		t.Errorf("Touch of nothing = %v", err)
	}
}

// TestCheckpoint: after Checkpoint, what was written is in the database file itself, not only
// in the WAL, while the registry is still open: a reader that ignores the WAL (immutable=1,
// OpenReadOnly's fallback) sees it, where it did not before the checkpoint. A read-only
// registry's Checkpoint does nothing and does not fail.
func TestCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := openTest(t, path)
	ctx := t.Context()
	// The first write: the WAL holds it, and the file does not yet (the pool's connection
	// stays open, so nothing checkpoints it on close).
	mustRegister(t, r, entry("a", 0))
	if got := fileKeys(t, path); len(got) != 0 {
		t.Fatalf("the file already holds %v before any checkpoint: the test cannot tell", got)
	}
	if err := r.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a"}, fileKeys(t, path)); diff != "" {
		t.Errorf("entries in the file after Checkpoint (-want +got):\n%s", diff)
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Checkpoint(ctx); err != nil {
		t.Errorf("read-only Checkpoint: %v", err)
	}
}

// fileKeys are the keys the registry file at path holds by itself, its WAL ignored.
func fileKeys(t *testing.T, path string) []string {
	t.Helper()
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&immutable=1"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT key FROM entries ORDER BY key")
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // not even the schema is in the file yet
		}
		t.Fatal(err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}
