package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/scheduler"
)

// Artifacts: once the build ended, the handle reads the build's manifest from the server
// (getBuildArtifacts, hm's extension) and downloads every file (getBuildArtifact, by
// digest) into the layout of a local build: ArtifactsDir/BUILD/STEP/PATH and
// ArtifactsDir/BUILD/manifest.json. Every write goes through an os.Root of the build's
// directory, so no name the server sends can leave it; each file's bytes are checked against
// its size and sha256 before the manifest names it. A server without the route (a Harmont
// server) has no artifacts: nothing is written.

// download fetches the build's artifacts into h.artifactsDir/h.runID; on a failure nothing
// of them is left (the build's directory is this build's alone).
func (h *handle) download(ctx context.Context) (err error) {
	if h.artifactsDir == "" || h.runID == "" {
		return nil
	}
	var m scheduler.Manifest
	err = h.c.call(ctx, "getBuildArtifacts", http.MethodGet, h.buildPath+"/artifacts", nil, &m)
	var re *errs.RemoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	if len(m.Steps) == 0 {
		return nil
	}
	if filepath.Base(h.runID) != h.runID || !filepath.IsLocal(h.runID) {
		return fmt.Errorf("%w: the build id %q is not a directory name", errs.ErrInfra, h.runID)
	}
	buildDir := filepath.Join(h.artifactsDir, h.runID)
	if err := os.MkdirAll(buildDir, 0o755); err != nil {
		return fmt.Errorf("%w: artifacts: %w", errs.ErrUnavailable, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(buildDir)
			_ = os.Remove(h.artifactsDir) // only when no other build's are there: empty
		}
	}()
	root, err := os.OpenRoot(buildDir)
	if err != nil {
		return fmt.Errorf("%w: artifacts: %w", errs.ErrUnavailable, err)
	}
	defer root.Close()
	m.Build = h.runID
	for i := range m.Steps {
		st := &m.Steps[i]
		st.Dir = scheduler.StepDir(st.Key) // ours, not the server's word
		for _, f := range st.Files {
			if !filepath.IsLocal(filepath.FromSlash(f.Path)) || path.Clean(f.Path) != f.Path {
				return fmt.Errorf("%w: artifact path %q of step %s is not under its directory", errs.ErrInfra, f.Path, st.Key)
			}
			if err := h.fetchArtifact(ctx, root, path.Join(st.Dir, f.Path), f.SHA256, f.Size); err != nil {
				return fmt.Errorf("artifact %s of step %s: %w", f.Path, st.Key, err)
			}
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := "." + scheduler.ManifestName + ".tmp"
	if err := root.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("%w: write the manifest: %w", errs.ErrUnavailable, err)
	}
	if err := root.Rename(tmp, scheduler.ManifestName); err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("%w: write the manifest: %w", errs.ErrUnavailable, err)
	}
	return nil
}

// fetchArtifact downloads one file to rel (slash-separated, under root), checking it; a file
// that does not match is removed.
func (h *handle) fetchArtifact(ctx context.Context, root *os.Root, rel, sum string, size int64) (err error) {
	req, err := h.c.request(ctx, http.MethodGet, h.buildPath+"/artifacts/sha256:"+sum, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := h.c.hc.Do(req)
	if err != nil {
		return h.c.classify(ctx, "getBuildArtifact", nil, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return h.c.classify(ctx, "getBuildArtifact", resp, nil)
	}
	name := filepath.FromSlash(rel)
	if err := root.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return fmt.Errorf("%w: %w", errs.ErrUnavailable, err)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", errs.ErrUnavailable, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%w: %w", errs.ErrUnavailable, cerr)
		}
		if err != nil {
			_ = root.Remove(name)
		}
	}()
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hs), io.LimitReader(resp.Body, size+1))
	if err != nil {
		return fmt.Errorf("%w: download: %w", errs.ErrUnavailable, err)
	}
	if got := hex.EncodeToString(hs.Sum(nil)); n != size || got != sum {
		return fmt.Errorf("%w: the server sent %d bytes hashing to %s, want %d bytes hashing to %s", errs.ErrInfra, n, got, size, sum)
	}
	return nil
}

// artifacts downloads the ended build's artifacts before Wait returns; a failure is the
// outcome's error (the build's exit code stays unless it passed: then the artifacts it
// promised are missing, which fails the run).
func (h *handle) artifacts(ctx context.Context) {
	err := h.download(ctx)
	if err == nil {
		return
	}
	if h.out.Err == nil {
		h.out.Err = err
	}
	if h.out.ExitCode == errs.ExitPassed {
		h.out.ExitCode = errs.ExitCode(err)
	}
}
