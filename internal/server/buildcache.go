package server

import (
	"context"
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

// staticBuilds is Server.staticBuild's cache.
type staticBuilds struct {
	mu sync.Mutex
	m  map[string]*staticBuild
}
