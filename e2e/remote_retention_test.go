package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// hm server --retention: a server restarted with a retention shorter than a build's age (its
// end back-dated in the store) deletes the build with its jobs and logs, and then its
// artifact's blob (back-dated past the sweep's grace), while a build within the retention
// stays whole, and so does the source blob both builds share. (A source no build names any
// more goes too: the driver's tests.) The blobs are DATA/blobs on SQLite, rows of the
// database on PostgreSQL.
func TestRemoteRetention(t *testing.T) { remoteStores(t, testRemoteRetention) }

func testRemoteRetention(t *testing.T, st remoteStore) {
	c := faultNewCluster(t, st)
	c.agent("agent", c.url())
	build := func(cmd string) events.AcceptedBuild {
		t.Helper()
		step, _ := json.Marshal(map[string]any{"type": "command", "key": "a", "cmd": cmd, "artifacts": []string{"out"}})
		r := c.run(`{"version":"0","default_image":"host","steps":[` + string(step) + `]}`)
		var acc *events.BuildAccepted
		r.until(t, func(ev events.Event) bool { acc = ev.BuildAccepted; return acc != nil })
		if code := r.wait(t); code != 0 {
			t.Fatalf("exit %d\n%s", code, r.dump())
		}
		return acc.Build
	}
	blobs := c.blobView(t)
	old := build("mkdir out && echo old > out/f && echo old")
	oldBlobs := blobs.list()
	if len(oldBlobs) != 2 {
		t.Fatalf("blobs after the first build: %v, want its source and its artifact", oldBlobs)
	}
	// Older than the sweep's grace (1 h): what decides is whether a row names them.
	blobs.age(2 * time.Hour)
	c.server.kill9(t)
	// The first build ended two hours ago, as far as the store knows.
	c.exec(t, `UPDATE builds SET finished_at = finished_at - 7200000000000 WHERE id = ?`, old.RunID)
	c.serverArgs = []string{"--retention", "1h"}
	c.startServer()
	kept := build("mkdir out && echo kept > out/f && echo kept")

	ctx := context.Background()
	s := c.openStore(ctx)
	defer s.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.GetBuild(ctx, old.RunID)
		if store.IsNotFound(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the build that ended before the retention is still there after 30 s\n%s", c.server.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if js, err := s.ListJobs(ctx, old.RunID); err != nil || len(js) != 0 {
		t.Errorf("the pruned build's jobs: %v (%v), want none", js, err)
	}
	kb, err := s.GetBuild(ctx, kept.RunID)
	if err != nil {
		t.Fatalf("the build within the retention: %v", err)
	}
	if kb.State != store.BuildPassed {
		t.Errorf("the kept build is %s", kb.State)
	}
	// Both builds have the same (empty) source: its blob stays, named by the kept build;
	// the old build's artifact goes.
	if !slices.Contains(oldBlobs, kb.SourceDigest) {
		t.Fatalf("the kept build's source %s is not the old one's (%v): the case needs a shared source", kb.SourceDigest, oldBlobs)
	}
	for time.Now().Before(deadline) && slices.Contains(blobs.list(), otherThan(oldBlobs, kb.SourceDigest)) {
		time.Sleep(100 * time.Millisecond)
	}
	now := blobs.list()
	if slices.Contains(now, otherThan(oldBlobs, kb.SourceDigest)) {
		t.Errorf("the pruned build's artifact blob is still there: %v", now)
	}
	if !slices.Contains(now, kb.SourceDigest) || len(now) != 2 {
		t.Errorf("blobs after the sweep: %v, want the shared source and the kept build's artifact", now)
	}
	if js, err := s.ListJobs(ctx, kept.RunID); err != nil || len(js) != 1 {
		t.Errorf("the kept build's jobs: %v (%v)", js, err)
	}
}

func otherThan(ds []string, d string) string {
	for _, x := range ds {
		if x != d {
			return x
		}
	}
	return ""
}

// exec runs one statement on the cluster's store, as its server opened it (a ? placeholder
// each argument): test surgery only.
func (c *faultCluster) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	ctx := context.Background()
	if len(c.db) == 2 && c.db[0] == "--db" {
		conn, err := pgx.Connect(ctx, c.db[1])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for i := 1; strings.Contains(query, "?"); i++ {
			query = strings.Replace(query, "?", "$"+strconv.Itoa(i), 1)
		}
		if _, err := conn.Exec(ctx, query, args...); err != nil {
			t.Fatal(err)
		}
		return
	}
	db, err := sql.Open("sqlite", filepath.Join(c.data, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, query, args...); err != nil {
		t.Fatal(err)
	}
}

// blobView lists and back-dates a cluster's blobs where its server keeps them: DATA/blobs,
// or the PostgreSQL store's blob_files.
type blobView struct {
	t    *testing.T
	c    *faultCluster
	list func() []string
	age  func(by time.Duration)
}

func (c *faultCluster) blobView(t *testing.T) blobView {
	v := blobView{t: t, c: c}
	if len(c.db) == 2 && c.db[0] == "--db" {
		query := func(fn func(conn *pgx.Conn) error) {
			t.Helper()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, c.db[1])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if err := fn(conn); err != nil {
				t.Fatal(err)
			}
		}
		v.list = func() (out []string) {
			query(func(conn *pgx.Conn) error {
				rows, _ := conn.Query(context.Background(), `SELECT digest FROM blob_files ORDER BY digest`)
				var err error
				out, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			})
			return out
		}
		v.age = func(by time.Duration) {
			query(func(conn *pgx.Conn) error {
				_, err := conn.Exec(context.Background(), `UPDATE blob_files SET written_at = $1`, time.Now().Add(-by).UnixNano())
				return err
			})
		}
		return v
	}
	dir := filepath.Join(c.data, "blobs", "sha256")
	v.list = func() (out []string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			out = append(out, "sha256:"+e.Name())
		}
		return out
	}
	v.age = func(by time.Duration) {
		aged := time.Now().Add(-by)
		for _, d := range v.list() {
			if err := os.Chtimes(filepath.Join(dir, strings.TrimPrefix(d, "sha256:")), aged, aged); err != nil {
				t.Fatal(err)
			}
		}
	}
	return v
}
