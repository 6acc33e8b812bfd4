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

// sweepFixture is a store, a blob dir beside it and an org's pipeline, for the sweep.
type sweepFixture struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	st    *sqlite.DB
	blobs *blobdir.Dir
	org   store.Org
	pipe  store.Pipeline
}

func newSweepFixture(t *testing.T) *sweepFixture {
	f := &sweepFixture{t: t, ctx: hang(t), dir: t.TempDir()}
	var err error
	if f.st, err = sqlite.Open(f.ctx, f.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.st.Close() })
	if f.blobs, err = blobdir.Open(filepath.Join(f.dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	if f.org, err = f.st.CreateOrg(f.ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	if f.pipe, err = f.st.CreatePipeline(f.ctx, store.Pipeline{OrgID: f.org.ID, Slug: "ci", Name: "CI"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// blob writes bytes and back-dates the file by age (a young one: 0).
func (f *sweepFixture) blob(s string, age time.Duration) string {
	d, _, err := f.blobs.WriteBlob(f.ctx, strings.NewReader(s), "")
	if err != nil {
		f.t.Fatal(err)
	}
	h, _ := blobdir.ParseDigest(d)
	at := time.Now().Add(-age)
	if err := os.Chtimes(filepath.Join(f.dir, "blobs", "sha256", h), at, at); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// ended makes a build of source that ended (failed) at end.
func (f *sweepFixture) ended(source string, end time.Time) store.Build {
	b, _, err := f.st.CreateBuild(f.ctx, store.NewBuild{OrgID: f.org.ID, PipelineID: f.pipe.ID, IR: "{}", SourceDigest: source,
		Jobs: []store.NewJob{{StepKey: "a", Command: "true"}}, Now: end})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.st.TransitionBuild(f.ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildFailed, store.BuildUpdate{Now: end}); err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *sweepFixture) present(d string) bool {
	rc, _, err := f.blobs.OpenBlob(f.ctx, d)
	if err == nil {
		rc.Close()
		return true
	}
	if !errors.Is(err, fs.ErrNotExist) {
		f.t.Fatal(err)
	}
	return false
}

// run runs m as the only replica (its leader) until the test ends.
func (f *sweepFixture) run(m *Manager) {
	m.Driver = Config{Store: f.st, Owner: "r1"}
	m.Reap, m.Scan, m.SweepEvery, m.Blobs = 10*time.Millisecond, time.Hour, 10*time.Millisecond, f.blobs
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

// TestSweepPrunesBuildsAndBlobs: the leader deletes the builds that ended longer ago than the
// retention, then the blobs no row names that were not written within the grace: an old
// build's source goes with it, a kept build's source and a young upload stay.
func TestSweepPrunesBuildsAndBlobs(t *testing.T) {
	f := newSweepFixture(t)
	now := time.Now()
	oldSrc, keptSrc := f.blob("old source", 3*time.Hour), f.blob("kept source", 3*time.Hour)
	orphan, young := f.blob("an artifact of a fenced-out attempt", 3*time.Hour), f.blob("just uploaded", 0)
	old := f.ended(oldSrc, now.Add(-2*time.Hour))
	kept := f.ended(keptSrc, now.Add(-10*time.Minute))

	logs := &logBuf{}
	f.run(&Manager{Retention: time.Hour, BlobGrace: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	until(t, "the old build pruned", func() bool {
		_, err := f.st.GetBuild(f.ctx, old.ID)
		return store.IsNotFound(err)
	})
	until(t, "the old source and the orphan removed", func() bool { return !f.present(oldSrc) && !f.present(orphan) })
	if _, err := f.st.GetBuild(f.ctx, kept.ID); err != nil {
		t.Errorf("the build within the retention: %v", err)
	}
	for what, d := range map[string]string{"the kept build's source": keptSrc, "a young blob": young} {
		if !f.present(d) {
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
	f := newSweepFixture(t)
	orphan := f.blob("orphan", 2*time.Hour)
	b := f.ended("", time.Now().Add(-100*24*time.Hour))
	f.run(&Manager{})
	until(t, "a sweep removed the orphan", func() bool { return !f.present(orphan) })
	if _, err := f.st.GetBuild(f.ctx, b.ID); err != nil {
		t.Errorf("a build was pruned without a retention: %v", err)
	}
}
