package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/vm"
)

// uploadTimeout bounds one artifact upload (a file of up to MaxArtifactBytes).
const uploadTimeout = 30 * time.Minute

// collectArtifacts copies the job's artifacts out of its committed snapshot with the backend
// (vm.ArtifactCopier: the same bounds and symlink rules as a local build) into a temporary
// directory, uploads each file by digest and returns them for the Finish, with the copy's
// warnings (a pattern matching nothing, a symlink refused) for the step's log. The directory
// is removed whatever happens.
func (a *Agent) collectArtifacts(ctx context.Context, j agentproto.Job, snapshot string) ([]agentproto.Artifact, []string, error) {
	cp, ok := a.cfg.Backend.(vm.ArtifactCopier)
	if !ok {
		return nil, nil, fmt.Errorf("the %s backend cannot copy artifacts", a.cfg.Backend.Name())
	}
	parent := filepath.Join(a.cfg.StateDir, "agent")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(parent, "artifacts-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	owner := vm.Owner{RunID: j.BuildID, StepKey: j.StepKey, PID: os.Getpid()}
	res, err := cp.CopyArtifacts(ctx, snapshot, owner, j.Artifacts, root)
	if err != nil {
		return nil, nil, err
	}
	out := make([]agentproto.Artifact, 0, len(res.Files))
	for _, f := range res.Files {
		if err := a.upload(ctx, j, root, f.Path, f.SHA256, f.Size); err != nil {
			return nil, nil, fmt.Errorf("upload %s: %w", f.Path, err)
		}
		out = append(out, agentproto.Artifact{Path: f.Path, Size: f.Size, SHA256: f.SHA256})
	}
	return out, res.Warnings, nil
}

// upload sends one file (PUT PathArtifact, fenced by the attempt), retried as every call.
func (a *Agent) upload(ctx context.Context, j agentproto.Job, root *os.Root, path, sum string, size int64) error {
	p := strings.NewReplacer("{job_id}", j.JobID, "{digest}", "sha256:"+sum).Replace(agentproto.PathArtifact) +
		"?attempt=" + strconv.Itoa(j.Attempt)
	body := rawBody{size: size, open: func() (io.ReadCloser, error) { return root.Open(filepath.FromSlash(path)) }}
	_, err := a.c.call(ctx, http.MethodPut, p, body, nil, uploadTimeout, nil)
	return err
}

// rawBody is a request body of bytes rather than JSON: opened afresh for each try.
type rawBody struct {
	size int64
	open func() (io.ReadCloser, error)
}
