package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/hmci/hm/internal/store"
)

type createPipelineRequest struct {
	Name          string  `json:"name"`
	Repository    string  `json:"repository"`
	DefaultBranch string  `json:"default_branch"`
	Description   *string `json:"description"`
	RepoName      *string `json:"repo_name"`
}

func (s *Server) createPipeline(w http.ResponseWriter, r *http.Request, req createPipelineRequest) {
	if req.Name == "" || req.Repository == "" || req.DefaultBranch == "" {
		s.writeError(w, r, unprocessable("validation_failed", "name, repository and default_branch are required"))
		return
	}
	slug := slugify(req.Name)
	if slug == "" {
		s.writeError(w, r, unprocessable("validation_failed", "the name "+quote(req.Name)+" has no letter or digit to make a slug of"))
		return
	}
	p := store.Pipeline{OrgID: authOf(r).Org.ID, Slug: slug, Name: req.Name, Repository: req.Repository,
		DefaultBranch: req.DefaultBranch, CreatedAt: s.now()}
	if req.Description != nil {
		p.Description = *req.Description
	}
	p, err := s.cfg.Store.CreatePipeline(r.Context(), p)
	if store.IsConflict(err) {
		s.writeError(w, r, unprocessable("pipeline_slug_taken", "the organization already has a pipeline "+quote(slug)))
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, newPipelineView(p))
}

func (s *Server) getPipeline(w http.ResponseWriter, r *http.Request) {
	p, err := s.pipeline(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newPipelineView(p))
}

// pipeline is the route's {pipeline} of the caller's org.
func (s *Server) pipeline(r *http.Request) (store.Pipeline, error) {
	slug := r.PathValue("pipeline")
	p, err := s.cfg.Store.GetPipeline(r.Context(), authOf(r).Org.ID, slug)
	if store.IsNotFound(err) {
		return p, notFound("pipeline_not_found", "no pipeline "+quote(slug)+" in the organization")
	}
	return p, err
}

// build is the route's {number} of its pipeline.
func (s *Server) build(r *http.Request) (store.Pipeline, store.Build, error) {
	p, err := s.pipeline(r)
	if err != nil {
		return p, store.Build{}, err
	}
	num := r.PathValue("number")
	missing := notFound("build_not_found", "no build "+quote(num)+" of pipeline "+quote(p.Slug))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 {
		return p, store.Build{}, missing
	}
	b, err := s.cfg.Store.GetBuildByNumber(r.Context(), p.ID, n)
	if store.IsNotFound(err) || err == nil && b.OrgID != authOf(r).Org.ID {
		return p, store.Build{}, missing
	}
	return p, b, err
}

// buildJobs answers the build the request names and its jobs.
func (s *Server) buildJobs(r *http.Request) (store.Build, []store.Job, error) {
	_, b, err := s.build(r)
	if err != nil {
		return b, nil, err
	}
	js, err := s.cfg.Store.ListJobs(r.Context(), b.ID)
	return b, js, err
}

// slugify derives a pipeline slug from a name: lowercase letters and digits, runs of anything
// else one '-', none at the ends.
func slugify(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(name) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
			continue
		}
		dash = true
	}
	return b.String()
}

// validSlug says s can name a pipeline created on first submit: what slugify makes, plus '_'
// and '.' which in-repo pipeline names use.
func validSlug(s string) bool {
	if s == "" || len(s) > 100 || s[0] == '-' || s[0] == '.' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
