package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/store"
)

// hm server --retention: a server restarted with a retention shorter than a build's age
// deletes the build with its jobs and logs, and then its artifact's blob (back-dated past the
// sweep's grace), while a build within the retention stays whole, and so does the source
// blob both builds share. (A source no build names any more goes too: the driver's tests.)
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
	blobs := func() []string {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(c.data, "blobs", "sha256"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, filepath.Join(c.data, "blobs", "sha256", e.Name()))
		}
		return out
	}
	old := build("mkdir out && echo old > out/f && echo old")
	oldBlobs := blobs()
	if len(oldBlobs) != 2 {
		t.Fatalf("blobs after the first build: %v, want its source and its artifact", oldBlobs)
	}
	// Older than the sweep's grace (1 h): what decides is whether a row names them.
	aged := time.Now().Add(-2 * time.Hour)
	for _, b := range oldBlobs {
		if err := os.Chtimes(b, aged, aged); err != nil {
			t.Fatal(err)
		}
	}
	c.server.kill9(t)
	time.Sleep(2 * time.Second) // the build is now older than the retention below
	c.serverArgs = []string{"--retention", "2s"}
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
	// Both builds have the same (empty) source: its blob stays, named by the kept build;
	// the old build's artifact goes.
	src, err := s.GetBuild(ctx, kept.RunID)
	if err != nil {
		t.Fatal(err)
	}
	srcFile := filepath.Join(c.data, "blobs", "sha256", strings.TrimPrefix(src.SourceDigest, "sha256:"))
	for _, b := range oldBlobs {
		if b == srcFile {
			continue
		}
		for time.Now().Before(deadline) {
			if _, err := os.Stat(b); os.IsNotExist(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := os.Stat(b); !os.IsNotExist(err) {
			t.Errorf("the pruned build's artifact blob %s is still there (%v)", b, err)
		}
	}
	if !slices.Contains(oldBlobs, srcFile) {
		t.Errorf("the kept build's source %s is not the old one's (%v): the case needs a shared source", srcFile, oldBlobs)
	}
	if _, err := os.Stat(srcFile); err != nil {
		t.Errorf("the source blob the kept build names: %v", err)
	}
	kb, err := s.GetBuild(ctx, kept.RunID)
	if err != nil {
		t.Fatalf("the build within the retention: %v", err)
	}
	if kb.State != store.BuildPassed {
		t.Errorf("the kept build is %s", kb.State)
	}
	if got := blobs(); len(got) != 2 {
		t.Errorf("blobs after the sweep: %v, want the kept build's source and artifact", got)
	}
	// The kept build still reads: its log through hm logs is another test's; here its jobs.
	if js, err := s.ListJobs(ctx, kept.RunID); err != nil || len(js) != 1 {
		t.Errorf("the kept build's jobs: %v (%v)", js, err)
	}
}
