package server

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/store"
)

// Secrets through the remote backend. The client sends a build's secret values in
// createBuild's hm_secrets, beside env and never in it or in pipeline_ir: the build's row
// holds neither. They are sealed (secret.Sealer, the build id bound in) into their own row,
// which the build's driver deletes when the build ends (the reaper too, for any ended build).
// A claim carries the values of the names its step lists and no other; every log chunk an
// agent uploads and every error it reports is masked here too, before it is stored, in case
// an agent did not (the agent masks first; the driver's scheduler masks the events a third
// time, across lines).

// Bounds of hm_secrets: the body cap bounds the bytes; these bound the work per build.
const (
	maxBuildSecrets  = 1000
	maxSecretValue   = 64 << 10
	secretsNotServed = "this server keeps no secrets (it was started without a secrets key)"
)

// sealSecrets checks hm_secrets against the pipeline and seals the values its steps name
// (any other is dropped: no step could see it) under a new build id. nil, "" for none.
func (s *Server) sealSecrets(pipe *ir.Pipeline, values map[string]string) ([]byte, string, error) {
	if len(values) > maxBuildSecrets {
		return nil, "", unprocessable("validation_failed", "hm_secrets: at most "+strconv.Itoa(maxBuildSecrets)+" secrets per build")
	}
	for name, v := range values {
		if !ir.ValidSecretName(name) {
			return nil, "", unprocessable("validation_failed", "hm_secrets: "+quote(name)+" is not a secret name ([A-Za-z_][A-Za-z0-9_]*)")
		}
		if len(v) > maxSecretValue {
			return nil, "", unprocessable("validation_failed", "hm_secrets: the value of "+name+" is longer than "+strconv.Itoa(maxSecretValue)+" bytes")
		}
	}
	if err := secret.Check(pipe, values); err != nil {
		return nil, "", unprocessable("secret_missing", err.Error())
	}
	named := map[string]string{}
	for _, n := range pipe.Nodes {
		for _, name := range n.Step.Secrets {
			named[name] = values[name]
		}
	}
	if len(named) == 0 {
		return nil, "", nil
	}
	if s.cfg.Secrets == nil {
		return nil, "", unprocessable("secrets_unsupported", secretsNotServed)
	}
	id := uuid.NewString()
	sealed, err := s.cfg.Secrets.Seal(id, named)
	return sealed, id, err
}

// buildSecrets opens the build's secrets; nil when it has none.
func (s *Server) buildSecrets(ctx context.Context, buildID string) (map[string]string, error) {
	sealed, err := s.cfg.Store.GetBuildSecrets(ctx, buildID)
	if store.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if s.cfg.Secrets == nil {
		return nil, unprocessable("secrets_unsupported", secretsNotServed)
	}
	return s.cfg.Secrets.Open(buildID, sealed)
}

// masker masks the build's secrets; nil when it has none. Every log call asks, so the answer
// is kept per build (a build's secrets are written with it and never change; a masker kept
// after they were deleted still masks what a late call sends), at most maskerCacheSize builds.
func (s *Server) masker(ctx context.Context, buildID string) (*secret.Masker, error) {
	s.maskers.mu.Lock()
	m, ok := s.maskers.m[buildID]
	s.maskers.mu.Unlock()
	if ok {
		return m, nil
	}
	vs, err := s.buildSecrets(ctx, buildID)
	if err != nil {
		return nil, err
	}
	m = secret.NewMasker(slices.Collect(maps.Values(vs))...)
	s.maskers.mu.Lock()
	defer s.maskers.mu.Unlock()
	if s.maskers.m == nil || len(s.maskers.m) >= maskerCacheSize {
		s.maskers.m = map[string]*secret.Masker{}
	}
	s.maskers.m[buildID] = m
	return m, nil
}

const maskerCacheSize = 1024

// maskers is Server.masker's cache.
type maskers struct {
	mu sync.Mutex
	m  map[string]*secret.Masker
}

// stepSecrets are the values of the secrets step ps names, and no other.
func (s *Server) stepSecrets(ctx context.Context, buildID string, ps *plan.Step) (map[string]string, error) {
	if len(ps.Secrets) == 0 {
		return nil, nil
	}
	vs, err := s.buildSecrets(ctx, buildID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ps.Secrets))
	for _, name := range ps.Secrets {
		v, ok := vs[name]
		if !ok {
			return nil, errNoSecret(name)
		}
		out[name] = v
	}
	return out, nil
}

type errNoSecret string

func (e errNoSecret) Error() string {
	return "the build's secret " + string(e) + " is not stored (the build ended, or was submitted without it)"
}
