package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// Artifacts: a step's `artifacts` patterns are copied out of its snapshot once it has passed
// (from the cached snapshot on a hit), into Options.ArtifactsDir/STEP/, one step_artifact
// event per file, before its step_end. A failed, timed out or canceled step copies nothing.
// A step with artifacts is always committed (an ephemeral snapshot when nothing else needs
// one) so that every backend reads a snapshot, never a running machine. When the copy fails
// (too large, a disk full, the snapshot gone) the step fails, as one that could not run,
// and what it wrote is removed; it is not retried (the same files would fail again).

// ManifestName is the build's manifest in Options.ArtifactsDir: every step's files.
const ManifestName = "manifest.json"

// Manifest is the manifest file's content.
type Manifest struct {
	Build string          `json:"build"`
	Steps []ManifestEntry `json:"steps"`
}

// ManifestEntry is one step's artifacts: Dir is its directory's name in the build's.
type ManifestEntry struct {
	Key   string          `json:"key"`
	Dir   string          `json:"dir"`
	Files []artifact.File `json:"files"`
}

// StepDir names a step's artifacts directory: its key, escaped as a URL path segment so
// that any key is one file name ("a/b" is "a%2Fb"), never "." or "..", nor the manifest's.
func StepDir(key string) string {
	d := url.PathEscape(key)
	if d == "." || d == ".." || d == ManifestName {
		d = strings.ReplaceAll(d, ".", "%2E")
	}
	return d
}

type manifest struct {
	mu    sync.Mutex
	steps map[int]ManifestEntry
}

// wantsArtifacts reports whether step i's artifacts can be collected here, and when it has
// some that cannot, why not (logged as a warning).
func (r *run) wantsArtifacts(i int) (bool, string) {
	if len(r.pl.Steps[i].Artifacts) == 0 {
		return false, ""
	}
	if r.opts.ArtifactsDir == "" {
		return false, "artifacts are not collected by this executor"
	}
	if _, ok := r.backend.(vm.ArtifactCopier); !ok {
		return false, fmt.Sprintf("the %s backend cannot copy artifacts", r.backend.Name())
	}
	return true, ""
}

// collect copies step i's artifacts out of snapshot (attempt n), publishing them.
func (r *run) collect(ctx context.Context, i, n int, snapshot string) error {
	ps := &r.pl.Steps[i]
	id := r.steps[i].id
	dir := filepath.Join(r.opts.ArtifactsDir, StepDir(ps.Key))
	fail := func(err error) error {
		_ = os.RemoveAll(dir)
		_ = os.Remove(r.opts.ArtifactsDir) // only when no other step wrote there: empty
		if errors.Is(err, artifact.ErrTooLarge) {
			return artifact.Exceeded(err)
		}
		return fmt.Errorf("artifacts: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(fmt.Errorf("%w: %w", errs.ErrUnavailable, err))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", errs.ErrUnavailable, err))
	}
	defer root.Close()
	owner := vm.Owner{RunID: r.opts.RunID, StepKey: ps.Key, PID: r.pid}
	res, err := r.backend.(vm.ArtifactCopier).CopyArtifacts(ctx, snapshot, owner, ps.Artifacts, root)
	if err != nil {
		return fail(err)
	}
	for _, w := range res.Warnings {
		r.log(id, n, events.Stderr, "hm: warning: "+w)
	}
	r.manifest.mu.Lock()
	defer r.manifest.mu.Unlock()
	if r.manifest.steps == nil {
		r.manifest.steps = map[int]ManifestEntry{}
	}
	r.manifest.steps[i] = ManifestEntry{Key: ps.Key, Dir: StepDir(ps.Key), Files: slices.Clip(res.Files)}
	if err := r.writeManifest(); err != nil {
		delete(r.manifest.steps, i)
		return fail(fmt.Errorf("%w: write the manifest: %w", errs.ErrUnavailable, err))
	}
	for _, f := range res.Files {
		r.opts.Publish(events.Event{Kind: events.KindStepArtifact, StepArtifact: &events.StepArtifact{
			StepID: id, Path: f.Path, Size: f.Size, SHA256: f.SHA256, TS: time.Now().UTC(),
		}})
	}
	return nil
}

// writeManifest rewrites the build's manifest, atomically, with every step collected so
// far: it is whole at any moment, also when hm dies mid-build. The caller holds the lock.
func (r *run) writeManifest() error {
	m := Manifest{Build: r.opts.RunID}
	for _, i := range slices.Sorted(maps.Keys(r.manifest.steps)) {
		e := r.manifest.steps[i]
		if e.Files == nil {
			e.Files = []artifact.File{}
		}
		m.Steps = append(m.Steps, e)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(r.opts.ArtifactsDir, "."+ManifestName+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(r.opts.ArtifactsDir, ManifestName)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
