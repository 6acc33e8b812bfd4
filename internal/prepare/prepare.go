// Package prepare turns what `hm run` was given (the rendered IR, the source directory, the
// flags) into a Build: the one value every execution backend starts from. It parses and plans
// the IR, computes every step's cache key and fingerprint (spec/cache-keys.md), walks the
// source once (gitignore-aware, size-bounded) and, when a backend asks, packs it once into a
// content-addressed archive for another machine.
//
// It is not an execution backend: it runs nothing, opens no VM backend, registry or network
// connection, and decides nothing about where the build runs. A Build is immutable once made,
// safe for concurrent use, and owns at most one temporary file (the archive): Close it.
package prepare

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/source"
)

// Input is what a build is prepared from.
type Input struct {
	IR   []byte // the rendered IR, graph or flat form, kept verbatim
	Slug string // the pipeline's slug, part of computed cache keys
	Dir  string // the source directory (the one holding .hm/)
	// Org is HM_PIPELINE_ORG as read by the caller; "" means cachekey.DefaultOrg.
	Org string
	// Getenv reads the environment that env_keys hash; nil means os.Getenv.
	Getenv  func(string) string
	Options Options
	// MaxSourceBytes bounds the source's regular files; 0 means unlimited.
	MaxSourceBytes int64
	// TempDir holds the source archive once one is asked for; "" means os.TempDir().
	TempDir string
	// Exclude are paths relative to Dir left out of the workspace: the .env file that
	// supplied secrets.
	Exclude []string
}

// Options mirror the flags of `hm run` that change how the build runs (remote.md's
// hm_options, plus the environment).
type Options struct {
	Parallelism int // >= 1
	KeepGoing   bool
	NoCache     bool
	Timeout     time.Duration // overrides the pipeline's timeout_seconds when > 0
	// Env is applied to every step after the node env: config env then -e K=V, in order (a
	// later entry of the same name wins).
	Env      []string
	MapImage map[string]string
	// Secrets are the build's secrets by name (package secret): a step sees those it names.
	// They are no part of any key, fingerprint or archive, and never leave this process.
	Secrets map[string]string
	// No verbosity here: a backend streams every event, and how much of it to show is the
	// front end's choice (render.Options.Verbose).
}

// EnvMap is Env as a map (createBuild's env), a later entry of a name winning.
func (o Options) EnvMap() map[string]string {
	m := make(map[string]string, len(o.Env))
	for _, kv := range o.Env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// TimeoutSeconds is Timeout in whole seconds, rounded up (hm_options.timeout_seconds); 0 when
// no timeout overrides the pipeline's.
func (o Options) TimeoutSeconds() int64 {
	if o.Timeout <= 0 {
		return 0
	}
	return int64(math.Ceil(o.Timeout.Seconds()))
}

// Build is a prepared build.
type Build struct {
	IR       []byte // verbatim, as Input.IR (createBuild's pipeline_ir)
	Pipeline *ir.Pipeline
	Plan     *plan.Plan
	Slug     string
	Org      string // resolved: never ""
	// Steps holds each step's cache key (Key "" when the step is not cached), the inputs
	// that went into it (to explain a miss), its fingerprint and the warnings for its log,
	// index-aligned with Plan.Steps and Pipeline.Nodes.
	Steps   []cachekey.Result
	Options Options
	Source  *Source
}

// New prepares a build. Its errors keep their classes: an invalid IR or cache policy is
// errs.ErrInvalid, a missing, unreadable or oversized source errs.ErrUsage (a
// *source.SizeError for the size bound).
func New(ctx context.Context, in Input) (*Build, error) {
	p, err := ir.Parse(in.IR)
	if err != nil {
		return nil, err
	}
	if err := secret.Check(p, in.Options.Secrets); err != nil {
		return nil, err
	}
	b := &Build{IR: in.IR, Pipeline: p, Plan: plan.New(p), Slug: in.Slug, Org: in.Org, Options: in.Options}
	if b.Org == "" {
		b.Org = cachekey.DefaultOrg
	}
	dir, err := filepath.Abs(in.Dir)
	if err != nil {
		return nil, errs.New(errs.ErrUsage, "source_not_found", "pass an existing directory with -d",
			"source directory %s: %v", in.Dir, err)
	}
	tree, err := source.Pack(ctx, dir, source.Options{MaxBytes: in.MaxSourceBytes, Git: p.Source.Git})
	if err != nil {
		return nil, err
	}
	if len(in.Exclude) > 0 {
		tree = exclude(tree, in.Exclude)
	}
	b.Source = &Source{Dir: dir, Tree: tree, tempDir: in.TempDir}
	// Keys after the walk, as before the walk existed here: an on_change file is hashed as
	// close as possible to the moment its tree was read.
	if b.Steps, err = cachekey.Compute(cachekey.Context{
		Org: b.Org, Slug: in.Slug, Dir: dir, Getenv: in.Getenv,
		Secret: func(name string) bool { _, ok := in.Options.Secrets[name]; return ok },
	}, p); err != nil {
		return nil, err
	}
	return b, nil
}

// Keys are the steps' cache keys, index-aligned with Plan.Steps ("" = not cached).
func (b *Build) Keys() []string {
	out := make([]string, len(b.Steps))
	for i, r := range b.Steps {
		out[i] = r.Key
	}
	return out
}

// Warnings are the lines to start each step's log with, index-aligned with Plan.Steps.
func (b *Build) Warnings() [][]string {
	out := make([][]string, len(b.Steps))
	for i, r := range b.Steps {
		out[i] = r.Warnings
	}
	return out
}

// Cached reports whether any step has a cache key.
func (b *Build) Cached() bool {
	for _, r := range b.Steps {
		if r.Key != "" {
			return true
		}
	}
	return false
}

// Close removes the source archive, if one was made. The Build stays usable, and a later
// Archive packs again.
func (b *Build) Close() error { return b.Source.close() }

// Source is a build's workspace: the tree walked once (what a local backend overlays into
// /workspace), and on demand the same tree packed once as an archive (what travels to a
// server). Packing is deferred because a local build never needs it: a fully cached build must
// stay a matter of milliseconds, whatever the size of the source.
type Source struct {
	Dir  string       // absolute
	Tree *source.Tree // entries sorted by path; file contents are read from Dir when used

	tempDir string
	mu      sync.Mutex
	archive *source.Archive
}

// Archive packs the tree on the first call and returns the same archive afterwards. A failed
// or canceled pack is not remembered: the next call tries again. The archive's file belongs
// to the Build (Close removes it); read it with Archive.Open.
func (s *Source) Archive(ctx context.Context) (*source.Archive, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.archive != nil {
		return s.archive, nil
	}
	a, err := s.Tree.WriteArchive(ctx, s.tempDir)
	if err != nil {
		return nil, err
	}
	s.archive = a
	return a, nil
}

func (s *Source) close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.archive == nil {
		return nil
	}
	err := s.archive.Remove()
	s.archive = nil
	return err
}

// exclude returns tree without the regular files at paths.
func exclude(tree *source.Tree, paths []string) *source.Tree {
	out := &source.Tree{Root: tree.Root, Size: tree.Size}
	for _, e := range tree.Entries {
		if e.Type != source.TypeDir && slices.Contains(paths, e.Path) {
			if e.Type == source.TypeFile {
				out.Size -= e.Size
			}
			continue
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}
