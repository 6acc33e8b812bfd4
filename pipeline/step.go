package pipeline

import (
	"maps"
	"slices"
	"time"

	"github.com/hmci/hm/internal/ir"
)

// Item is something New accepts: a Step, a Group or a Barrier.
type Item interface{ item() }

// Step is one command step. The zero Step is invalid; make steps with Sh.
type Step struct {
	key, cmd     string
	label, image string
	env          map[string]string // shared between copies: replaced, never written, on change
	timeout      time.Duration
	cache        *Cache
	retry        *ir.Retry
	artifacts    []string
	secrets      []string
	cacheDirs    []string // CacheDirs; shared between copies, replaced on change
	after        []string
	parent       *Step // builds_in parent; nil for a root
}

func (Step) item() {}

// Sh returns a root step: it starts from the image (its own, or the pipeline's default).
func Sh(key, cmd string) Step { return Step{key: key, cmd: cmd} }

// Sh returns a child of s: it starts from s's committed snapshot (files, installed packages and
// the workspace as s left them).
func (s Step) Sh(key, cmd string) Step {
	parent := s
	return Step{key: key, cmd: cmd, parent: &parent}
}

// Key returns the step's key.
func (s Step) Key() string { return s.key }

// Label sets the display name.
func (s Step) Label(label string) Step { s.label = label; return s }

// Image sets the image a root step starts from. A child step starts from its parent's
// snapshot, so an image on a child is an error at render time.
func (s Step) Image(image string) Step { s.image = image; return s }

// Env sets one environment variable of the step, over the pipeline's environment.
func (s Step) Env(key, value string) Step {
	env := maps.Clone(s.env)
	if env == nil {
		env = map[string]string{}
	}
	env[key] = value
	s.env = env
	return s
}

// Timeout sets the step's wall-clock limit, a whole number of seconds >= 1.
func (s Step) Timeout(d time.Duration) Step { s.timeout = d; return s }

// Retry runs the step again, on a fresh machine from the same base and source, when it
// fails: up to limit more times (at most 10), on the exit codes listed (any non-zero code when
// none is; -1 names an infrastructure error, which hm retries once even without Retry). An hm
// extension of the IR: other executors ignore it.
func (s Step) Retry(limit int, on ...int) Step {
	s.retry = &ir.Retry{Limit: limit, On: slices.Clone(on)}
	return s
}

// Artifacts names files to copy out of the step's machine once it succeeds: paths or globs
// (* ? [a-z] within a path component; a directory copies all of it) under /workspace, such as
// "dist/*.tar.gz". hm writes them to .hm/artifacts/BUILD/KEY/ of the source directory (`hm
// run --artifacts DIR` moves it); symlinks are never copied. An hm extension of the IR:
// other executors ignore it. Each call adds to the list.
func (s Step) Artifacts(patterns ...string) Step {
	s.artifacts = append(slices.Clip(s.artifacts), patterns...)
	return s
}

// Secrets names secrets of the build (hm run --secret NAME, config [secrets]) that the step
// sees as environment variables of those names; no other step does. hm masks their values
// in all output, and a build that was not given one of them is refused before it starts. An
// hm extension of the IR: other executors ignore it.
func (s Step) Secrets(names ...string) Step {
	s.secrets = append(slices.Clip(s.secrets), names...)
	return s
}

// CacheDirs keeps these directories of the step's machine between builds, like BuildKit's
// cache mounts: absolute paths outside /workspace (at most 16), one persistent directory
// per pipeline and path, mounted into the step and shared with concurrent steps, never in
// its snapshot or cache key. For tool caches: CacheDirs("/root/.cache/go-build",
// "/root/go/pkg/mod"). Each call adds to the list. An hm extension of the IR: other
// executors ignore it.
func (s Step) CacheDirs(paths ...string) Step {
	s.cacheDirs = append(slices.Clip(s.cacheDirs), paths...)
	return s
}

// Cache sets the step's cache policy.
func (s Step) Cache(c Cache) Step { s.cache = &c; return s }

// After makes s wait for deps (ordering only: s does not start from their snapshots). The
// deps must be part of the pipeline.
func (s Step) After(deps ...Step) Step {
	keys := make([]string, 0, len(s.after)+len(deps))
	keys = append(keys, s.after...)
	for _, d := range deps {
		keys = append(keys, d.key)
	}
	s.after = keys
	return s
}

// AfterKeys is After by step key, for steps defined elsewhere.
func (s Step) AfterKeys(keys ...string) Step {
	s.after = append(slices.Clip(s.after), keys...)
	return s
}

// Fork attaches children to s: each child (a root step made with Sh, or a Group headed by
// one) builds in s's snapshot. The result lists s, then the children in order.
func (s Step) Fork(children ...Item) Group {
	return Group{head: s, children: slices.Clone(children)}
}

// Group is a step with the children attached by Fork.
type Group struct {
	head     Step
	children []Item
}

func (Group) item() {}

// Barrier is a wait barrier: every step after it waits for every step before it.
type Barrier struct{ continueOnFailure bool }

func (Barrier) item() {}

// Wait returns a barrier.
func Wait() Barrier { return Barrier{} }

// ContinueOnFailure makes the steps after the barrier run even when steps before it failed
// (cleanup, notification).
func (b Barrier) ContinueOnFailure(on bool) Barrier { b.continueOnFailure = on; return b }

// sameStep reports whether b, met again after a was listed, is the same step. Parents are
// compared by key (a parent is itself compared when it is met); b without a parent refers to a
// (it may be the root value that Fork attached to a parent).
func sameStep(a, b *Step) bool {
	if a.key != b.key || a.cmd != b.cmd || a.label != b.label || a.image != b.image ||
		a.timeout != b.timeout || !maps.Equal(a.env, b.env) || !slices.Equal(a.after, b.after) ||
		!slices.Equal(a.cacheDirs, b.cacheDirs) {
		return false
	}
	if b.parent != nil && (a.parent == nil || a.parent.key != b.parent.key) {
		return false
	}
	if (a.cache == nil) != (b.cache == nil) {
		return false
	}
	return a.cache == nil || a.cache.equal(*b.cache)
}
