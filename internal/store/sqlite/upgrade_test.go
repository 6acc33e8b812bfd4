package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/sqlitemigrate"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// A database of schema 6 (one event per row, log_chunks a rowid table) upgrades with its
// events and chunks intact: schema 8 reads old rows as packs of one, schema 9 copies the
// chunks into the clustered table, schema 12 reads them as rows of one chunk.
func TestUpgradeKeepsStreams(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName)+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := sqlite.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlitemigrate.Apply(ctx, tx, ms[:6], nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO organizations (id, slug, name, created_at) VALUES ('o1', 'acme', 'Acme', 1)`,
		`INSERT INTO pipelines (id, org_id, slug, name, created_at) VALUES ('p1', 'o1', 'p', 'p', 1)`,
		`INSERT INTO builds (id, org_id, pipeline_id, number, ir, state, event_seq, created_at) VALUES ('b1', 'o1', 'p1', 1, '{}', 'running', 3, 1)`,
		`INSERT INTO jobs (id, build_id, ordinal, step_key, state, attempt, created_at) VALUES ('j1', 'b1', 0, 's', 'running', 1, 1)`,
		`INSERT INTO build_events (build_id, seq, payload, created_at) VALUES ('b1', 1, '{"n":1}', 1), ('b1', 2, '{"n":2}', 1), ('b1', 3, '{"n":3}', 1)`,
		`INSERT INTO log_chunks (job_id, attempt, seq, stream, content, ts) VALUES ('j1', 1, 1, 0, 'one', 1), ('j1', 1, 2, 1, 'two', 2)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.ListEvents(ctx, "b1", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, string(e.Payload))
	}
	if diff := cmp.Diff([]string{`{"n":2}`, `{"n":3}`}, got); diff != "" || evs[0].Seq != 2 {
		t.Errorf("events after 1 (-want +got):\n%s", diff)
	}
	// A new append continues the sequence, packed.
	seqs, err := s.AppendEvents(ctx, "b1", []byte(`{"n":4}`), []byte(`{"n":5}`))
	if err != nil || !cmp.Equal(seqs, []int64{4, 5}) {
		t.Fatalf("append after upgrade = %v, %v", seqs, err)
	}
	if evs, err := s.ListEvents(ctx, "b1", 3, 10); err != nil || len(evs) != 2 || string(evs[1].Payload) != `{"n":5}` {
		t.Errorf("events after 3 = %+v, %v", evs, err)
	}
	cs, err := s.ListLogs(ctx, "j1", 1, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Content != "one" || cs[1].Content != "two" || cs[1].Stream != 1 || cs[1].Seq != 2 {
		t.Errorf("chunks after upgrade = %+v", cs)
	}
	// Schema 12: new chunks are packed rows after the old single ones, read as one log.
	if head, err := s.AppendLogs(ctx, "j1", 1, []store.LogChunk{{Seq: 2, Content: "resent"}, {Seq: 3, Content: "three"}, {Seq: 4, Content: "four"}}); err != nil || head != 4 {
		t.Fatalf("append after upgrade: head %d, %v", head, err)
	}
	cs, err = s.ListLogs(ctx, "j1", 1, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	var contents []string
	for _, c := range cs {
		contents = append(contents, c.Content)
	}
	if diff := cmp.Diff([]string{"two", "three", "four"}, contents); diff != "" {
		t.Errorf("chunks after 1 (-want +got):\n%s", diff)
	}
}
