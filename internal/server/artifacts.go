package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
	"github.com/hmci/hm/internal/vm/artifact"
)

// Artifacts through the remote backend. The agent copies a passed step's artifacts out of its
// snapshot, uploads each file by digest (agentArtifact: fenced by the attempt, bounded,
// checked against its sha256, stored in the blob dir) and lists them in its Finish, which the
// server checks against the blob dir before it records them on the job (agentFinish). The
// build's driver publishes their step_artifact events, and a cache entry keeps them so that
// a hit publishes them again. A user reads a build's manifest (getBuildArtifacts, the
// manifest.json of a local build) and each file by digest (getBuildArtifact): only files a
// job of that build lists, so a digest of another build or tenant is not found.

// agentArtifact stores one artifact file of the job's current attempt.
func (s *Server) agentArtifact(w http.ResponseWriter, r *http.Request) {
	j, err := s.agentJob(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	attempt, err := strconv.Atoi(r.URL.Query().Get("attempt"))
	if err != nil {
		s.writeError(w, r, badRequest("validation_failed", "the attempt query parameter is required"))
		return
	}
	if attempt != j.Attempt || (j.State != store.JobAssigned && j.State != store.JobRunning) {
		s.writeError(w, r, &store.ConflictError{Kind: "job", Key: j.ID, Reason: "attempt " + strconv.Itoa(attempt) + " does not hold the job",
			State: string(j.State), Attempt: j.Attempt})
		return
	}
	digest := r.PathValue("digest")
	if _, err := blobdir.ParseDigest(digest); err != nil {
		s.writeError(w, r, badRequest("validation_failed", "the digest is not sha256:<64 hex digits>"))
		return
	}
	if r.ContentLength > agentproto.MaxArtifactBytes {
		s.writeError(w, r, tooLarge())
		return
	}
	body := http.MaxBytesReader(w, r.Body, agentproto.MaxArtifactBytes)
	_, size, err := s.cfg.Blobs.WriteBlob(r.Context(), body, digest)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		s.writeError(w, r, tooLarge())
		return
	case errors.Is(err, store.ErrDigestMismatch):
		s.writeError(w, r, unprocessable("artifact_digest_mismatch", "the body does not hash to "+digest))
		return
	case err != nil:
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"digest": digest, "size": size})
}

func tooLarge() *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request", Code: "artifact_too_large",
		Message: "an artifact file is larger than " + strconv.FormatInt(agentproto.MaxArtifactBytes, 10) + " bytes"}
}

// finishArtifacts checks a Finish's artifacts (paths a step's artifacts directory can hold,
// each file uploaded with its size) and returns them as the job stores them; nil for none.
// The error is why the step's artifacts cannot be recorded: the step then fails.
func (s *Server) finishArtifacts(ctx context.Context, files []agentproto.Artifact, warnings []string) (json.RawMessage, error) {
	if len(files) == 0 && len(warnings) == 0 {
		return nil, nil
	}
	if len(files) > agentproto.MaxArtifacts || len(warnings) > agentproto.MaxArtifactWarnings {
		return nil, errors.New("more than " + strconv.Itoa(agentproto.MaxArtifacts) + " artifact files or " +
			strconv.Itoa(agentproto.MaxArtifactWarnings) + " warnings")
	}
	out := make([]artifact.File, 0, len(files))
	seen := map[string]bool{}
	for _, f := range files {
		if !localPath(f.Path) || seen[f.Path] {
			return nil, errors.New("artifact path " + strconv.Quote(f.Path) + " is not a file path under the workspace, or repeated")
		}
		seen[f.Path] = true
		digest := "sha256:" + f.SHA256
		rc, size, err := s.cfg.Blobs.OpenBlob(ctx, digest)
		if err != nil {
			return nil, errors.New("artifact " + strconv.Quote(f.Path) + " (" + digest + ") was not uploaded")
		}
		rc.Close()
		if size != f.Size {
			return nil, errors.New("artifact " + strconv.Quote(f.Path) + " is " + strconv.FormatInt(size, 10) + " bytes, not " + strconv.FormatInt(f.Size, 10))
		}
		out = append(out, artifact.File{Path: f.Path, Size: f.Size, SHA256: f.SHA256})
	}
	return json.Marshal(driver.Artifacts{Files: out, Warnings: warnings})
}

// localPath: a clean, relative, slash-separated path of valid UTF-8 that stays inside its
// directory, as the agent's artifact.Collector makes them.
func localPath(p string) bool {
	return p != "" && utf8.ValidString(p) && !strings.ContainsAny(p, "\x00\\") && path.Clean(p) == p &&
		!path.IsAbs(p) && p != "." && p != ".." && !strings.HasPrefix(p, "../")
}

// jobArtifacts are the files the job stores.
func jobArtifacts(j store.Job) ([]artifact.File, error) {
	a, err := driver.ParseArtifacts(j.Artifacts)
	if err != nil {
		return nil, errors.New("job " + j.ID + ": " + err.Error())
	}
	return a.Files, nil
}

// getBuildArtifacts answers the build's manifest: its passed steps with artifacts, in the
// steps' order, as a local build's manifest.json (scheduler.Manifest).
func (s *Server) getBuildArtifacts(w http.ResponseWriter, r *http.Request) {
	b, js, err := s.buildJobs(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	m := scheduler.Manifest{Build: b.ID, Steps: []scheduler.ManifestEntry{}}
	for _, j := range js {
		files, err := jobArtifacts(j)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if j.State != store.JobPassed || j.Artifacts == nil {
			continue
		}
		if files == nil {
			files = []artifact.File{} // collected, matching nothing: listed, as locally
		}
		m.Steps = append(m.Steps, scheduler.ManifestEntry{Key: j.StepKey, Dir: scheduler.StepDir(j.StepKey), Files: files})
	}
	writeJSON(w, http.StatusOK, m)
}

// getBuildArtifact answers the bytes of one artifact file a job of the build lists.
func (s *Server) getBuildArtifact(w http.ResponseWriter, r *http.Request) {
	b, js, err := s.buildJobs(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	digest := r.PathValue("digest")
	hexd, _ := strings.CutPrefix(digest, "sha256:")
	listed := false
	for _, j := range js {
		files, err := jobArtifacts(j)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if j.State == store.JobPassed && slices.ContainsFunc(files, func(f artifact.File) bool { return f.SHA256 == hexd }) {
			listed = true
			break
		}
	}
	if !listed {
		s.writeError(w, r, notFound("artifact_not_found", "build "+strconv.FormatInt(b.Number, 10)+" has no artifact "+quote(digest)))
		return
	}
	rc, size, err := s.cfg.Blobs.OpenBlob(r.Context(), "sha256:"+hexd)
	if errors.Is(err, fs.ErrNotExist) {
		err = notFound("artifact_not_found", "the server no longer holds artifact "+quote(digest))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	_, _ = io.Copy(w, rc)
}
