package driver

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
	"github.com/hmci/hm/internal/store/sqlite"
)

// TestSweepPrunesBuildsAndBlobs: the leader deletes the builds that ended longer ago than the
// retention, then the blobs no row names that were not written within the grace: an old
// build's source goes with it, a kept build's source and a young upload stay.
func TestSweepPrunesBuildsAndBlobs(t *testing.T) {
	ctx := hang(t)
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs, err := blobdir.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := st.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// blob writes bytes and back-dates the file by age (a young one: 0).
	blob := func(s string, age time.Duration) string {
		d, _, err := blobs.WriteBlob(ctx, strings.NewReader(s), "")
		if err != nil {
			t.Fatal(err)
		}
		h, _ := blobdir.ParseDigest(d)
		if err := os.Chtimes(filepath.Join(dir, "blobs", "sha256", h), now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// ended makes a build of source that ended at end.
	ended := func(source string, end time.Time) store.Build {
		b, _, err := st.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}", SourceDigest: source,
			Jobs: []store.NewJob{{StepKey: "a", Command: "true"}}, Now: end})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.TransitionBuild(ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildFailed, store.BuildUpdate{Now: end}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	oldSrc, keptSrc := blob("old source", 3*time.Hour), blob("kept source", 3*time.Hour)
	orphan, young := blob("an artifact of a fenced-out attempt", 3*time.Hour), blob("just uploaded", 0)
	old := ended(oldSrc, now.Add(-2*time.Hour))
	kept := ended(keptSrc, now.Add(-10*time.Minute))

	logs := &logBuf{}
	m := &Manager{Driver: Config{Store: st, Owner: "r1"}, Reap: 10 * time.Millisecond, Scan: time.Hour,
		Retention: time.Hour, Blobs: blobs, SweepEvery: 10 * time.Millisecond, BlobGrace: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(mctx) }()
	defer func() { cancel(); <-done }()

	present := func(d string) bool {
		rc, _, err := blobs.OpenBlob(ctx, d)
		if err == nil {
			rc.Close()
			return true
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return false
	}
	until(t, "the old build pruned", func() bool {
		_, err := st.GetBuild(ctx, old.ID)
		return store.IsNotFound(err)
	})
	until(t, "the old source and the orphan removed", func() bool { return !present(oldSrc) && !present(orphan) })
	if _, err := st.GetBuild(ctx, kept.ID); err != nil {
		t.Errorf("the build within the retention: %v", err)
	}
	for what, d := range map[string]string{"the kept build's source": keptSrc, "a young blob": young} {
		if !present(d) {
			t.Errorf("%s was removed", what)
		}
	}
	until(t, "the sweep logged", func() bool {
		return logs.has("ended builds pruned") && logs.has("unreferenced blobs removed")
	})
}

// With no retention no build is pruned, however old; the blob sweep still runs (the build
// is checked after a sweep removed an orphan).
func TestSweepKeepsBuildsWithoutRetention(t *testing.T) {
	ctx := hang(t)
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	blobs, err := blobdir.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	orphan, _, err := blobs.WriteBlob(ctx, strings.NewReader("orphan"), "")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := blobdir.ParseDigest(orphan)
	aged := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "blobs", "sha256", h), aged, aged); err != nil {
		t.Fatal(err)
	}
	o, _ := st.CreateOrg(ctx, "acme", "Acme")
	p, _ := st.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	end := time.Now().Add(-100 * 24 * time.Hour)
	b, _, err := st.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}", Now: end})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.TransitionBuild(ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildFailed, store.BuildUpdate{Now: end}); err != nil {
		t.Fatal(err)
	}
	m := &Manager{Driver: Config{Store: st, Owner: "r1"}, Reap: 10 * time.Millisecond, Scan: time.Hour,
		Blobs: blobs, SweepEvery: 10 * time.Millisecond}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(mctx) }()
	defer func() { cancel(); <-done }()
	until(t, "a sweep removed the orphan", func() bool {
		rc, _, err := blobs.OpenBlob(ctx, orphan)
		if err == nil {
			rc.Close()
		}
		return errors.Is(err, fs.ErrNotExist)
	})
	if _, err := st.GetBuild(ctx, b.ID); err != nil {
		t.Errorf("a build was pruned without a retention: %v", err)
	}
}
