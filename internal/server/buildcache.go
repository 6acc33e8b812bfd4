package server

import (
	"context"
	"net/http"
	"sync"

	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/store"
)

// staticBuild is what never changes about a build once created (its org, pipeline, IR,
// options, env and source), with its loaded plan. Every agent call about a job reads its
// build for the org, and every claim loads the plan to describe the step: parsing the IR per
// claim was a tenth of the server's CPU per step of a chain. Only fields written at
// creation are read from it; state, cancel and times are always read from the store.
type staticBuild struct {
	b       store.Build
	plan    *plan.Plan
	opts    scheduler.Options
	loadErr error // why the plan does not load (the same each time: what it loads from is fixed)
}

// staticBuild returns the build's static part, read once per build and kept, at most
// buildCacheSize builds (a full cache is dropped whole: a build is read again at its next
// call). The error is the store's; a plan that does not load is the entry's loadErr.
func (s *Server) staticBuild(ctx context.Context, id string) (*staticBuild, error) {
	s.builds.mu.Lock()
	sb, ok := s.builds.m[id]
	s.builds.mu.Unlock()
	if ok {
		return sb, nil
	}
	b, err := s.cfg.Store.GetBuild(ctx, id)
	if err != nil {
		return nil, err
	}
	sb = &staticBuild{b: b}
	sb.plan, sb.opts, sb.loadErr = driver.DefaultLoad(b)
	s.builds.mu.Lock()
	defer s.builds.mu.Unlock()
	if s.builds.m == nil || len(s.builds.m) >= buildCacheSize {
		s.builds.m = map[string]*staticBuild{}
	}
	s.builds.m[id] = sb
	return sb, nil
}

const buildCacheSize = 1024

// staticBuilds is Server.staticBuild's cache, and jobBuild's.
type staticBuilds struct {
	mu   sync.Mutex
	m    map[string]*staticBuild
	jobs map[string]string // job id → its build's id
}

// jobBuild is the id of the build of the job the path names, refused (404) when that build
// is another org's. A job's build never changes, so it is read once per job and kept (at
// most jobCacheSize jobs): start, heartbeat and finish then check the tenancy without a
// statement, and their write, fenced by the attempt, is the only one. A job that is gone
// since fails that write (not found).
func (s *Server) jobBuild(r *http.Request) (jobID, buildID string, err error) {
	id := r.PathValue("job_id")
	s.builds.mu.Lock()
	buildID, ok := s.builds.jobs[id]
	s.builds.mu.Unlock()
	if !ok {
		j, err := s.agentJob(r)
		if err != nil {
			return "", "", err
		}
		s.keepJobBuild(j)
		return id, j.BuildID, nil
	}
	sb, err := s.staticBuild(r.Context(), buildID)
	if err != nil {
		return "", "", err
	}
	if sb.b.OrgID != authOf(r).Org.ID {
		return "", "", notFound("job_not_found", "no job "+quote(id))
	}
	return id, buildID, nil
}

// keepJobBuild notes the build of a job read for another reason (a claim hands it out: its
// start and finish follow).
func (s *Server) keepJobBuild(j store.Job) {
	s.builds.mu.Lock()
	defer s.builds.mu.Unlock()
	if s.builds.jobs == nil || len(s.builds.jobs) >= jobCacheSize {
		s.builds.jobs = map[string]string{}
	}
	s.builds.jobs[j.ID] = j.BuildID
}

const jobCacheSize = 8192
