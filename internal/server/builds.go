package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
	"github.com/hmci/hm/internal/vm/host"
)

const irMaxBytes = ir.MaxBytes

// createBuildRequest is CreateBuildRequest and CreateRepoBuildRequest in one, plus hm's
// hm_options. branch and commit are required by the schema but not by hm: a build of a
// directory that is no checkout has neither.
type createBuildRequest struct {
	Branch       string            `json:"branch"`
	Commit       string            `json:"commit"`
	Message      *string           `json:"message"`
	Source       *string           `json:"source"`
	PipelineIR   *string           `json:"pipeline_ir"`
	SourceB64    *string           `json:"source_b64"`
	SourceSHA256 *string           `json:"source_sha256"`
	Env          map[string]string `json:"env"`
	HMOptions    json.RawMessage   `json:"hm_options"`
	// HMSecrets are hm's extension: the build's secret values by name (secrets.go), kept
	// out of env, hm_options and the IR, never stored in clear.
	HMSecrets map[string]string `json:"hm_secrets"`
	// createBuildBySource only.
	RepoName   string `json:"repo_name"`
	SourceSlug string `json:"source_slug"`
}

// hmOptions is hm's extension, checked here and stored verbatim.
type hmOptions struct {
	Parallelism    int               `json:"parallelism"`
	KeepGoing      bool              `json:"keep_going"`
	NoCache        bool              `json:"no_cache"`
	TimeoutSeconds int               `json:"timeout_seconds"`
	MapImage       map[string]string `json:"map_image"`
	// CacheKeys maps a step key to the cache key the client computed (driver.Options), and
	// CacheInputs and Warnings what went into it.
	CacheKeys   map[string]string          `json:"cache_keys"`
	CacheInputs map[string]cachekey.Inputs `json:"cache_inputs"`
	Warnings    map[string][]string        `json:"warnings"`
}

func (s *Server) createBuild(w http.ResponseWriter, r *http.Request, req createBuildRequest) {
	slug := r.PathValue("pipeline")
	p, err := s.pipeline(r)
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == "pipeline_not_found" {
		// remote.md: a pipeline unknown to the server is created on first submit.
		p, err = s.firstSubmit(r, slug, "", req.Branch)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.submit(w, r, p, req)
}

// createBuildBySource addresses the pipeline by repo_name and source_slug. hm's pipelines are
// named per org, so source_slug is the pipeline's slug; one that does not exist yet is
// created for repo_name.
func (s *Server) createBuildBySource(w http.ResponseWriter, r *http.Request, req createBuildRequest) {
	if req.RepoName == "" || req.SourceSlug == "" {
		s.writeError(w, r, unprocessable("validation_failed", "repo_name and source_slug are required"))
		return
	}
	p, err := s.cfg.Store.GetPipeline(r.Context(), authOf(r).Org.ID, req.SourceSlug)
	if store.IsNotFound(err) {
		p, err = s.firstSubmit(r, req.SourceSlug, req.RepoName, req.Branch)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.submit(w, r, p, req)
}

// firstSubmit creates the pipeline a build names; a concurrent first submit of the same one
// wins the create and this one reads it.
func (s *Server) firstSubmit(r *http.Request, slug, repo, branch string) (store.Pipeline, error) {
	if !validSlug(slug) {
		return store.Pipeline{}, unprocessable("validation_failed", "pipeline slug "+quote(slug)+" is not valid: lowercase letters, digits, '-', '_', '.'")
	}
	if branch == "" {
		branch = "main"
	}
	orgID := authOf(r).Org.ID
	p, err := s.cfg.Store.CreatePipeline(r.Context(), store.Pipeline{OrgID: orgID, Slug: slug, Name: slug,
		Repository: repo, DefaultBranch: branch, CreatedAt: s.now()})
	if store.IsConflict(err) {
		return s.cfg.Store.GetPipeline(r.Context(), orgID, slug)
	}
	return p, err
}

// submit validates the IR, stores the source once and creates the build with its jobs.
func (s *Server) submit(w http.ResponseWriter, r *http.Request, p store.Pipeline, req createBuildRequest) {
	nb, err := s.newBuild(r, p, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b, _, err := s.cfg.Store.CreateBuild(r.Context(), nb)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.cfg.OnBuild != nil {
		s.cfg.OnBuild(b.ID)
	}
	w.Header().Set("Location", r.URL.Path+"/"+strconv.FormatInt(b.Number, 10))
	writeJSON(w, http.StatusCreated, newBuildView(b, p.Slug))
}

func (s *Server) newBuild(r *http.Request, p store.Pipeline, req createBuildRequest) (store.NewBuild, error) {
	if req.PipelineIR == nil || strings.TrimSpace(*req.PipelineIR) == "" {
		return store.NewBuild{}, unprocessable("build_plan_rejected", "pipeline_ir is required: hm server does not render pipelines, submit the rendered IR")
	}
	pipe, err := ir.Parse([]byte(*req.PipelineIR))
	if err != nil {
		return store.NewBuild{}, unprocessable("build_plan_rejected", irMessage(err))
	}
	var o hmOptions
	if len(req.HMOptions) > 0 && !bytes.Equal(bytes.TrimSpace(req.HMOptions), []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(req.HMOptions))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return store.NewBuild{}, unprocessable("validation_failed", "hm_options: "+err.Error())
		}
		if o.Parallelism < 0 || o.TimeoutSeconds < 0 {
			return store.NewBuild{}, unprocessable("validation_failed", "hm_options: parallelism and timeout_seconds must not be negative")
		}
	} else {
		req.HMOptions = nil
	}
	sealed, id, err := s.sealSecrets(pipe, req.HMSecrets)
	if err != nil {
		return store.NewBuild{}, err
	}
	digest, err := s.storeSource(r, req)
	if err != nil {
		return store.NewBuild{}, err
	}
	nb := store.NewBuild{ID: id, Secrets: sealed, OrgID: p.OrgID, PipelineID: p.ID, Branch: req.Branch, Commit: req.Commit,
		IR: *req.PipelineIR, Env: req.Env, Options: req.HMOptions, SourceDigest: digest, Jobs: jobsOf(plan.New(pipe), o.MapImage), Now: s.now()}
	if req.Message != nil {
		nb.Message = *req.Message
	}
	if req.Source != nil {
		nb.Source = *req.Source
	}
	return nb, nil
}

// irMessage is the validation message of ir-v0.md, with its fix when it has one.
func irMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) && e.Fix != "" {
		return e.Msg + " (fix: " + e.Fix + ")"
	}
	return err.Error()
}

// storeSource decodes source_b64 and stores it content-addressed (once: the same archive is
// the same blob), checked against source_sha256 when the client sent it. "" for no source.
func (s *Server) storeSource(r *http.Request, req createBuildRequest) (string, error) {
	if req.SourceB64 == nil || *req.SourceB64 == "" {
		return "", nil
	}
	raw, err := base64.StdEncoding.DecodeString(*req.SourceB64)
	if err != nil {
		return "", unprocessable("validation_failed", "source_b64 is not valid base64: "+err.Error())
	}
	if int64(len(raw)) > s.cfg.MaxSourceBytes {
		return "", &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request", Code: "source_too_large",
			Message: "the source archive is larger than the server's max source size (" + strconv.FormatInt(s.cfg.MaxSourceBytes, 10) + " bytes)"}
	}
	want := ""
	if req.SourceSHA256 != nil && *req.SourceSHA256 != "" {
		want = "sha256:" + strings.TrimPrefix(strings.ToLower(*req.SourceSHA256), "sha256:")
		if _, err := blobdir.ParseDigest(want); err != nil {
			return "", unprocessable("validation_failed", "source_sha256 is not a sha256 hex digest")
		}
	}
	digest, size, err := s.cfg.Blobs.WriteBlob(r.Context(), bytes.NewReader(raw), want)
	if errors.Is(err, store.ErrDigestMismatch) {
		return "", unprocessable("source_digest_mismatch", "source_b64 does not hash to source_sha256")
	}
	if err != nil {
		return "", err
	}
	if _, err := s.cfg.Store.PutBlob(r.Context(), store.Blob{Digest: digest, Size: size, CreatedAt: s.now()}); err != nil {
		return "", err
	}
	return digest, nil
}

// jobsOf makes one job per step, in topological order, with every in-edge (builds_in
// included) as depends_on, and the backend an agent needs to claim it: the step's runner when
// it names one, else for a root step whose image (after mapImage) is a real image one that
// runs images (store.BackendImage: a host agent would ignore it and run on its own machine).
// A builds_in child runs where its parent's snapshot is, so placement decides for it. The IR
// has no agent labels, so jobs need none. A job no live agent can claim waits scheduled.
func jobsOf(pl *plan.Plan, mapImage map[string]string) []store.NewJob {
	ids := make([]string, len(pl.Steps))
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	jobs := make([]store.NewJob, 0, len(pl.Order))
	for _, i := range pl.Order {
		st := pl.Steps[i]
		j := store.NewJob{ID: ids[i], StepKey: st.Key, Name: st.DisplayName, Command: st.Cmd, DependsOn: []string{}}
		for _, pr := range st.Preds {
			j.DependsOn = append(j.DependsOn, ids[pr.Step])
		}
		if st.Parent >= 0 {
			j.ParentID = ids[st.Parent]
		}
		switch img := st.Image; {
		case st.Runner != "" && st.Runner != "default":
			j.Backend = st.Runner
		case st.Parent < 0:
			if to, ok := mapImage[img]; ok {
				img = to
			}
			if img != host.ImageID {
				j.Backend = store.BackendImage
			}
		}
		jobs = append(jobs, j)
	}
	return jobs
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	p, b, err := s.build(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newBuildView(b, p.Slug))
}

// Page sizes of listBuilds.
const (
	defaultPage = 25
	maxPage     = 100
)

// listBuilds pages newest first; the cursor is the number below which the next page starts,
// opaque to clients.
func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request) {
	p, err := s.pipeline(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	limit := defaultPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.writeError(w, r, badRequest("invalid_limit", "limit must be a positive integer"))
			return
		}
		limit = min(n, maxPage)
	}
	var before int64
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.ParseInt(strings.TrimPrefix(string(raw), "b:"), 10, 64)
		if err != nil || err2 != nil || !strings.HasPrefix(string(raw), "b:") || n < 1 {
			s.writeError(w, r, badRequest("invalid_cursor", "cursor is not one this server gave out"))
			return
		}
		before = n
	}
	bs, err := s.cfg.Store.ListBuilds(r.Context(), p.ID, before, limit+1)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := buildList{Data: []buildView{}}
	if len(bs) > limit {
		bs = bs[:limit]
		c := base64.RawURLEncoding.EncodeToString([]byte("b:" + strconv.FormatInt(bs[limit-1].Number, 10)))
		out.NextCursor = &c
	}
	for _, b := range bs {
		out.Data = append(out.Data, newBuildView(b, p.Slug))
	}
	writeJSON(w, http.StatusOK, out)
}

// cancelBuild asks the build to stop; a terminal build is answered as it is. Stopping its
// jobs is the scheduler's, which sees the build canceling.
func (s *Server) cancelBuild(w http.ResponseWriter, r *http.Request) {
	p, b, err := s.build(r)
	if err == nil {
		b, err = s.cfg.Store.CancelBuild(r.Context(), b.ID, s.now())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newBuildView(b, p.Slug))
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	_, js, err := s.buildJobs(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := jobList{Data: make([]jobView, 0, len(js))}
	for _, j := range js {
		out.Data = append(out.Data, newJobView(j))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	_, b, err := s.build(r)
	var j store.Job
	if err == nil {
		id := r.PathValue("job_id")
		j, err = s.cfg.Store.GetJob(r.Context(), id)
		if store.IsNotFound(err) || err == nil && j.BuildID != b.ID {
			err = notFound("job_not_found", "no job "+quote(id)+" in build "+strconv.FormatInt(b.Number, 10))
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newJobView(j))
}

func (s *Server) getBuildLogToken(w http.ResponseWriter, r *http.Request) {
	_, b, err := s.build(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	exp := s.now().Add(s.cfg.LogTokenTTL)
	writeJSON(w, http.StatusOK, logTokenView{Token: s.signLogToken(b.ID, exp), ExpiresAt: stamp(exp)})
}
