// Package remote is the execution backend that runs a prepared build on an hm server
// (spec/remote.md): Start submits it with createBuild (the IR verbatim, the source archive,
// the env and hm_options with the cache keys the client computed), creating the pipeline
// first when the server does not know it; the Handle then emits build_accepted and every
// event of the server's event stream for the build (SSE, resumed with Last-Event-ID when the
// connection drops), so a remote build renders exactly like a local one.
//
// It is not a scheduler and runs nothing here: the server and its agents do. It keeps no
// state beyond one build's stream position.
//
// # Calls
//
//   - createPipeline: only after createBuild answered 404 pipeline_not_found (an hm server
//     creates the pipeline itself on first submit; a Harmont server may not). A 422
//     pipeline_slug_taken (a concurrent first submit) is success.
//   - createBuild: sent once, never retried: it is not idempotent (a retry after a lost
//     answer would start a second build).
//   - buildEvents: the stream; retried after a dropped connection or a 5xx with the last
//     seq seen as Last-Event-ID, a bounded number of times in a row without progress. Frames
//     at or below the last seq are dropped, so nothing is delivered twice.
//   - cancelBuild: at most once per build (Handle.Cancel); a terminal build stays as it is.
//
// Errors are *errs.RemoteError with a class (errs.ErrAuth, ErrNotFound, ErrInvalid,
// ErrUnavailable); the CLI writes the advice.
package remote

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/prepare"
	"github.com/hmci/hm/internal/source"
)

// Backend submits builds to one server. Its fields are read at Start; safe for concurrent use.
type Backend struct {
	Server string // base URL, e.g. https://hm.example.com or http://127.0.0.1:8080/ (a trailing slash is fine)
	Token  string // a user token of Org
	Org    string // the organization's slug
	// Pipeline is the server's pipeline slug; "" means the Build's Slug.
	Pipeline string
	Branch   string // source metadata (-b); "" is none
	Message  string // build message (-m); "" is none
	// Client is the HTTP client; nil means HTTP/1.1 without compression (newTransport).
	Client *http.Client
	// Retries bounds the stream's reconnects in a row without a new event; 0 means 8.
	Retries int
	// RetryDelay is the first reconnect's delay, doubled up to 5 s; 0 means 250 ms.
	RetryDelay time.Duration
	// IdleTimeout ends a stream connection that sent nothing (not even the server's 15 s
	// keep-alive) for this long, and reconnects; 0 means 45 s.
	IdleTimeout time.Duration
}

var _ execution.Backend = (*Backend)(nil)

func (b *Backend) client() *client {
	hc := b.Client
	if hc == nil {
		hc = &http.Client{Transport: newTransport()}
	}
	return &client{base: strings.TrimRight(b.Server, "/"), token: b.Token, hc: hc}
}

// hmOptions is hm's createBuild extension; cache_keys is what the server's driver reads
// (driver.Options), a step key to its cache key, for the cached steps only.
type hmOptions struct {
	Parallelism    int               `json:"parallelism"`
	KeepGoing      bool              `json:"keep_going"`
	NoCache        bool              `json:"no_cache"`
	TimeoutSeconds int64             `json:"timeout_seconds"`
	MapImage       map[string]string `json:"map_image"`
	CacheKeys      map[string]string `json:"cache_keys"`
	// CacheInputs (cached steps) and Warnings (steps with any) let the server scope its
	// registry by fingerprint and explain a miss as the local backend does.
	CacheInputs map[string]cachekey.Inputs `json:"cache_inputs"`
	Warnings    map[string][]string        `json:"warnings"`
}

// buildView is the part of the API's Build a client reads; id is hm's extension (the run id
// of the build's events).
type buildView struct {
	ID        string  `json:"id"`
	Number    int64   `json:"number"`
	State     string  `json:"state"`
	ErrorCode *string `json:"error_code"`
}

// Start submits the build and returns once the server accepted it. ctx bounds the submit.
func (b *Backend) Start(ctx context.Context, req execution.Request) (execution.Handle, error) {
	bd := req.Build
	if b.Server == "" || b.Org == "" {
		return nil, errs.New(errs.ErrUsage, "usage", "", "the remote backend needs a server URL and an organization")
	}
	c := b.client()
	pipe := b.Pipeline
	if pipe == "" {
		pipe = bd.Slug
	}
	arch, err := bd.Source.Archive(ctx)
	if err != nil {
		return nil, err
	}
	path := apiPath("organizations", b.Org, "pipelines", pipe, "builds")
	var bv buildView
	err = c.createBuild(ctx, path, b.body(bd), arch, &bv)
	var re *errs.RemoteError
	if errors.As(err, &re) && re.APICode == "pipeline_not_found" {
		if err = b.createPipeline(ctx, c, pipe); err == nil {
			err = c.createBuild(ctx, path, b.body(bd), arch, &bv)
		}
	}
	if err != nil {
		return nil, err
	}
	h := &handle{
		c: c, q: events.NewQueue(), done: make(chan struct{}), cancel: make(chan struct{}),
		buildPath: apiPath("organizations", b.Org, "pipelines", pipe, "builds", fmt.Sprint(bv.Number)),
		retries:   b.Retries, delay: b.RetryDelay, idle: b.IdleTimeout,
		runID: bv.ID, artifactsDir: req.ArtifactsDir,
	}
	if h.retries <= 0 {
		h.retries = 8
	}
	if h.delay <= 0 {
		h.delay = 250 * time.Millisecond
	}
	if h.idle <= 0 {
		h.idle = 45 * time.Second
	}
	watch := c.base + h.buildPath + "/events"
	h.q.Publish(events.Event{Kind: events.KindBuildAccepted, BuildAccepted: &events.BuildAccepted{
		Build:    events.AcceptedBuild{RunID: bv.ID, Number: bv.Number, Org: b.Org, Pipeline: pipe},
		WatchURL: &watch,
	}})
	go h.run()
	return h, nil
}

// createBody is createBuild's body but for source_b64, which is streamed after it.
type createBody struct {
	Branch       string            `json:"branch"`
	Commit       string            `json:"commit"`
	Message      *string           `json:"message"`
	Source       string            `json:"source"`
	PipelineIR   string            `json:"pipeline_ir"`
	SourceSHA256 string            `json:"source_sha256"`
	Env          map[string]string `json:"env"`
	HMOptions    hmOptions         `json:"hm_options"`
	// HMSecrets are the values of the secrets the pipeline's steps name, apart from env and
	// hm_options (which the server stores as sent): the server seals them, hands each step
	// only its own and forgets them when the build ends.
	HMSecrets map[string]string `json:"hm_secrets,omitempty"`
}

func (b *Backend) body(bd *prepare.Build) createBody {
	o := bd.Options
	keys, inputs, warnings := map[string]string{}, map[string]cachekey.Inputs{}, map[string][]string{}
	for i, st := range bd.Plan.Steps {
		if k := bd.Steps[i].Key; k != "" {
			keys[st.Key] = k
			inputs[st.Key] = bd.Steps[i].Inputs
		}
		if w := bd.Steps[i].Warnings; len(w) > 0 {
			warnings[st.Key] = w
		}
	}
	cb := createBody{Branch: b.Branch, Source: "api", PipelineIR: string(bd.IR), Env: o.EnvMap(),
		HMOptions: hmOptions{Parallelism: o.Parallelism, KeepGoing: o.KeepGoing, NoCache: o.NoCache,
			TimeoutSeconds: o.TimeoutSeconds(), MapImage: o.MapImage, CacheKeys: keys,
			CacheInputs: inputs, Warnings: warnings}}
	for _, st := range bd.Plan.Steps {
		for _, name := range st.Secrets {
			if v, ok := o.Secrets[name]; ok {
				if cb.HMSecrets == nil {
					cb.HMSecrets = map[string]string{}
				}
				cb.HMSecrets[name] = v
			}
		}
	}
	if b.Message != "" {
		cb.Message = &b.Message
	}
	if cb.HMOptions.MapImage == nil {
		cb.HMOptions.MapImage = map[string]string{}
	}
	return cb
}

// createBuild posts body with the archive as source_b64, streamed: the
// archive is never held in memory whole, nor its base64.
func (c *client) createBuild(ctx context.Context, path string, cb createBody, arch *source.Archive, out *buildView) error {
	f, err := arch.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	cb.SourceSHA256 = strings.TrimPrefix(arch.Digest, source.DigestPrefix)
	head, err := json.Marshal(cb)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		// {...fields..., "source_b64":"<base64>"}
		_, err := pw.Write(append(head[:len(head)-1], `,"source_b64":"`...))
		if err == nil {
			enc := base64.NewEncoder(base64.StdEncoding, pw)
			if _, err = io.Copy(enc, f); err == nil {
				err = enc.Close()
			}
		}
		if err == nil {
			_, err = io.WriteString(pw, `"}`)
		}
		pw.CloseWithError(err)
	}()
	err = c.call(ctx, "createBuild", http.MethodPost, path, pr, out)
	pr.Close()
	return err
}

// createPipeline creates the pipeline a first submit names. Its slug is derived from the
// name by the server, so the name is the slug.
func (b *Backend) createPipeline(ctx context.Context, c *client, slug string) error {
	branch := b.Branch
	if branch == "" {
		branch = "main"
	}
	req := map[string]any{"name": slug, "repository": slug, "default_branch": branch}
	err := c.callJSON(ctx, "createPipeline", http.MethodPost, apiPath("organizations", b.Org, "pipelines"), req, nil)
	var re *errs.RemoteError
	if errors.As(err, &re) && re.APICode == "pipeline_slug_taken" {
		return nil // created meanwhile by another submit
	}
	return err
}
