// Package server is the HTTP layer of `hm server`: the Harmont API v0 subset of spec/remote.md
// (pipelines, builds, jobs, cancel, log tokens), the Harmont job log stream of
// log-sse.contract.json, hm's own build event stream, and the agent route prefix. Every
// handler is one operation, routed with net/http method patterns; decoding request bodies and
// authenticating bearer tokens happen in middleware, and every error goes through one writer
// of the Harmont envelope {"error":{"type","code","message","doc_url","request_id"}}.
//
// It is not the scheduler: it creates a build and its jobs (state scheduled / pending) from
// the submitted IR, and answers what the store holds; moving jobs and builds on, and
// appending build events, is the scheduling driver's work, which shares only the store with
// this package. It keeps no build state in memory: any replica on the same store answers the
// same. Streams and the claim long poll wake up when the store says what they wait on changed
// (store.Watcher), and poll the store every Config.PollInterval as the fallback for a lost
// wake-up (another replica wrote, a store without the ability).
//
// The client rules of remote.md hold for every route: a path with repeated slashes
// (`//api/v0/…`, a base URL with a trailing slash) is routed as if cleaned, never redirected;
// responses are never compressed; HTTP/1.1 is all that is served; states in responses are
// the closed enums of the store. Tenancy failures answer 404 (organization_not_found,
// pipeline_not_found, build_not_found, job_not_found), never 403; user tokens are refused on
// agent routes (/api/v0/agent/…) and agent tokens on user routes, with 401.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/store"
)

// Defaults of Config.
const (
	DefaultMaxSourceBytes = 256 << 20
	DefaultPollInterval   = 200 * time.Millisecond
	DefaultLogTokenTTL    = time.Hour
	// keepAlive is the idle time after which a stream sends a ":" comment (the contract's 15 s).
	keepAlive = 15 * time.Second
	// maxSmallBody bounds every request body but a build's: pipelines, cancels and agent calls.
	maxSmallBody = 1 << 20
)

// Config is what a Server needs.
type Config struct {
	Store store.Store
	// Blobs holds sources and artifacts: the blob dir, or the store when it holds them.
	Blobs store.BlobStore
	// LogKey signs log tokens (HMAC-SHA256); see LoadLogKey.
	LogKey []byte
	// Secrets seals the secrets a build is submitted with (hm_secrets) for the store and
	// opens them for the claims of the steps that name them and for masking; its key is
	// DATA/secrets.key (LoadKey). Nil: a build with secrets is refused.
	Secrets *secret.Sealer
	// MaxSourceBytes bounds a build's decoded source archive; a createBuild body is bounded
	// by its base64 size plus the largest IR and some room for the other fields.
	MaxSourceBytes int64
	PollInterval   time.Duration
	LogTokenTTL    time.Duration
	// AgentLeaseTTL is the lease of a claimed job (DefaultAgentLeaseTTL when 0); agents
	// heartbeat at a third of it.
	AgentLeaseTTL time.Duration
	// FinishNextWait is how long a Finish with Next waits for the agent's next step
	// (agentproto.FinishNextWait when 0; tests of the handoff itself raise it, so that a
	// loaded machine does not decide whether the step comes that way). Agents allow
	// agentproto.FinishNextWait beyond their call timeout, which a few seconds more fit in.
	FinishNextWait time.Duration
	// Logger gets one line per request: method, path (never the query, which carries log
	// tokens), status, duration, request id. Never a header.
	Logger *slog.Logger
	// OnBuild is told the id of every build createBuild stored (the driver manager's Kick);
	// it must not block. Nil: nobody is told (the manager's scan still finds the build).
	OnBuild func(id string)
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
	// Metrics serves GET /metrics (Prometheus, internal/server/metrics) without a token, as
	// probes are: a deployment keeps it off the public side of its proxy. Nil: no route.
	Metrics http.Handler
}

// Server serves the API. Its zero value is not usable: New.
type Server struct {
	cfg     Config
	handler http.Handler
	closing chan struct{}
	once    sync.Once
	maskers maskers      // the builds' secret maskers (secrets.go)
	builds  staticBuilds // what never changes about the builds (buildcache.go)
	tokens  tokenCache
}

// New checks cfg, fills in defaults and builds the routes.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Blobs == nil {
		return nil, fmt.Errorf("server: a store and a blob directory are required: %w", errs.ErrUsage)
	}
	if len(cfg.LogKey) < 32 {
		return nil, fmt.Errorf("server: the log token key must be at least 32 bytes: %w", errs.ErrUsage)
	}
	if cfg.MaxSourceBytes <= 0 {
		cfg.MaxSourceBytes = DefaultMaxSourceBytes
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.FinishNextWait <= 0 {
		cfg.FinishNextWait = agentproto.FinishNextWait
	}
	if cfg.LogTokenTTL <= 0 {
		cfg.LogTokenTTL = DefaultLogTokenTTL
	}
	if cfg.AgentLeaseTTL <= 0 {
		cfg.AgentLeaseTTL = DefaultAgentLeaseTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, closing: make(chan struct{})}
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Drain asks every open stream to end now (a log stream without `done`, which a Harmont
// client takes as the end; an event stream that the hm client resumes with Last-Event-ID), so
// that http.Server.Shutdown, which waits for handlers, finishes once the short requests have.
func (s *Server) Drain() { s.once.Do(func() { close(s.closing) }) }

func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

// maxBuildBody is the cap of a createBuild body: the base64 of the largest source, the
// largest IR escaped in a JSON string (at most 6 bytes per byte, \u00XX), and 1 MiB for the
// rest (env, options, branch, message).
func (s *Server) maxBuildBody() int64 {
	return (s.cfg.MaxSourceBytes+2)/3*4 + 6*irMaxBytes + maxSmallBody
}

// LoadLogKey reads the log token key from path, creating it (32 random bytes, mode 0600) the
// first time. Every replica of one deployment must use the same key.
func LoadLogKey(path string) ([]byte, error) { return LoadKey(path) }

// LoadKey reads a key of the server's data dir (the log token key, the secrets key) from
// path, creating it (32 random bytes, mode 0600) the first time.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) >= 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("server: key %s: %w: %w", path, errs.ErrInfra, err)
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("server: key %s: %w: %w", path, errs.ErrInfra, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return nil, fmt.Errorf("server: key %s: %w: %w", path, errs.ErrInfra, err)
	}
	// A link, not a rename: two servers starting at once on one data dir keep the first key.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		os.Remove(tmp)
		return nil, fmt.Errorf("server: key %s: %w: %w", path, errs.ErrInfra, err)
	}
	os.Remove(tmp)
	return os.ReadFile(path)
}

// wait sleeps until woken (a value on wake) or one poll interval passed; false when the
// request or the server is ending.
func (s *Server) wait(ctx context.Context, wake <-chan struct{}) bool {
	t := time.NewTimer(s.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-wake:
		return true
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.closing:
	}
	return false
}
