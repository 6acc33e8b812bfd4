package pipeline

import (
	"maps"
	"slices"
	"time"

	"github.com/hmci/hm/internal/ir"
)

// Pipeline is a named set of steps with pipeline-wide settings.
type Pipeline struct {
	slug         string
	defaultImage string
	env          map[string]string // replaced, never written, on change
	timeout      time.Duration
	git          bool
	items        []Item
}

// New returns the pipeline slug made of items (steps, groups and wait barriers) in order. The
// slug names the pipeline (`hm run SLUG`) and enters every cache key.
func New(slug string, items ...Item) Pipeline {
	return Pipeline{slug: slug, items: slices.Clone(items)}
}

// Slug returns the pipeline's slug.
func (p Pipeline) Slug() string { return p.slug }

// Add returns p with items appended.
func (p Pipeline) Add(items ...Item) Pipeline {
	p.items = append(slices.Clip(p.items), items...)
	return p
}

// Env sets one environment variable for every step (a step's own Env wins).
func (p Pipeline) Env(key, value string) Pipeline {
	env := maps.Clone(p.env)
	if env == nil {
		env = map[string]string{}
	}
	env[key] = value
	p.env = env
	return p
}

// DefaultImage sets the image of root steps that name none.
func (p Pipeline) DefaultImage(image string) Pipeline { p.defaultImage = image; return p }

// Timeout sets the whole-build budget, a whole number of seconds >= 1.
func (p Pipeline) Timeout(d time.Duration) Pipeline { p.timeout = d; return p }

// SourceGit puts the repository's .git directory into every step's /workspace, so that `git
// describe` works in a step (IR `"source": {"git": true}`, an hm extension). Off by default.
func (p Pipeline) SourceGit() Pipeline { p.git = true; return p }

func (p Pipeline) source() *ir.Source {
	if !p.git {
		return nil
	}
	return &ir.Source{Git: true}
}
