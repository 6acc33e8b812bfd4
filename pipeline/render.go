package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"time"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
)

// RenderOption adjusts what cache keys are computed from.
type RenderOption func(*renderOptions)

type renderOptions struct {
	org    string
	now    time.Time
	dir    string
	getenv func(string) string
}

// WithOrg sets the org that enters every cache key (default: HM_PIPELINE_ORG, else
// "default").
func WithOrg(org string) RenderOption { return func(o *renderOptions) { o.org = org } }

// WithNow pins the render time that ttl keys depend on (default: now).
func WithNow(t time.Time) RenderOption { return func(o *renderOptions) { o.now = t } }

// WithDir sets the source directory that on_change paths are relative to (default: the
// working directory).
func WithDir(dir string) RenderOption { return func(o *renderOptions) { o.dir = dir } }

// WithGetenv sets how env_keys values are read (default: os.Getenv).
func WithGetenv(getenv func(string) string) RenderOption {
	return func(o *renderOptions) { o.getenv = getenv }
}

// Render writes the pipeline's IR to w.
func (p Pipeline) Render(w io.Writer, opts ...RenderOption) error {
	data, err := p.IR(opts...)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// IR renders the pipeline to IR JSON: the graph form, or the flat form when the pipeline has a
// wait barrier with continue_on_failure (the graph form cannot carry that flag). Cached steps
// carry their computed cache keys. The output is deterministic: the same pipeline and key
// inputs give the same bytes.
func (p Pipeline) IR(opts ...RenderOption) ([]byte, error) {
	o := renderOptions{org: os.Getenv("HM_PIPELINE_ORG"), getenv: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	if err := validSlug(p.slug); err != nil {
		return nil, err
	}
	g, err := p.flatten()
	if err != nil {
		return nil, err
	}
	doc, caches, err := p.document(g)
	if err != nil {
		return nil, err
	}
	data, err := marshal(doc)
	if err != nil {
		return nil, err
	}
	parsed, err := ir.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("pipeline %q: %w", p.slug, err)
	}
	if !hasCache(caches) {
		return data, nil
	}
	keys, err := cachekey.Compute(cachekey.Context{
		Org: o.org, Slug: p.slug, Now: o.now, Getenv: o.getenv, Dir: o.dir,
	}, parsed)
	if err != nil {
		return nil, fmt.Errorf("pipeline %q: %w", p.slug, err)
	}
	for i, c := range caches {
		if c != nil {
			c.Key = keys[i].Key
		}
	}
	return marshal(doc)
}

func hasCache(caches []*ir.Cache) bool {
	for _, c := range caches {
		if c != nil {
			return true
		}
	}
	return false
}

func invalid(code, fix, format string, args ...any) error {
	return errs.New(errs.ErrInvalid, code, fix, format, args...)
}

func validSlug(slug string) error {
	if slug == "" {
		return invalid("pipeline_slug", "give the pipeline a slug: pipeline.New(\"ci\", ...)", "pipeline has no slug")
	}
	for i, r := range slug {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '-' || r == '_' || r == '.')
		if !ok {
			return invalid("pipeline_slug", "use letters, digits, '-', '_' and '.' (starting with a letter or digit)",
				"pipeline slug %q is not valid", slug)
		}
	}
	return nil
}

// entry is one element of the flattened pipeline: a command step or a barrier.
type entry struct {
	step    *Step
	barrier Barrier
}

type flat struct {
	entries []entry
	steps   []*Step        // command steps in order
	index   map[string]int // key → index in steps
}

// flatten walks the items in order: ancestors before a step, a group's head before its
// children, each step once.
func (p Pipeline) flatten() (*flat, error) {
	f := &flat{index: map[string]int{}}
	for _, it := range p.items {
		if err := f.item(it, nil); err != nil {
			return nil, err
		}
	}
	if len(f.steps) == 0 {
		return nil, invalid("pipeline_empty", "add at least one step", "pipeline %q has no steps", p.slug)
	}
	return f, nil
}

func (f *flat) item(it Item, parent *Step) error {
	switch it := it.(type) {
	case Step:
		s, err := reparent(it, parent)
		if err != nil {
			return err
		}
		return f.chain(&s)
	case Group:
		head, err := reparent(it.head, parent)
		if err != nil {
			return err
		}
		if err := f.chain(&head); err != nil {
			return err
		}
		for _, c := range it.children {
			if err := f.item(c, &head); err != nil {
				return err
			}
		}
		return nil
	case Barrier:
		if parent != nil {
			return invalid("pipeline_wait", "put wait barriers between top-level items, not inside Fork",
				"a wait barrier is among the children of step %q", parent.key)
		}
		f.entries = append(f.entries, entry{barrier: it})
		return nil
	case nil:
		return invalid("pipeline_item", "pass steps, groups and barriers to New", "pipeline has a nil item")
	}
	return invalid("pipeline_item", "pass steps, groups and barriers to New", "unsupported pipeline item %T", it)
}

// reparent makes s a child of parent (Fork's children are root steps).
func reparent(s Step, parent *Step) (Step, error) {
	if parent == nil {
		return s, nil
	}
	if s.parent != nil && s.parent.key != parent.key {
		return s, invalid("step_parent", fmt.Sprintf("make %q with pipeline.Sh to fork it from %q", s.key, parent.key),
			"step %q is forked from %q but already builds in %q", s.key, parent.key, s.parent.key)
	}
	s.parent = parent
	return s, nil
}

func (f *flat) chain(s *Step) error {
	if s.parent != nil {
		if err := f.chain(s.parent); err != nil {
			return err
		}
	}
	if i, ok := f.index[s.key]; ok {
		if !sameStep(f.steps[i], s) {
			return invalid("step_duplicate_key", "give every step a unique key",
				"two different steps have the key %q", s.key)
		}
		return nil
	}
	if err := checkStep(s); err != nil {
		return err
	}
	f.index[s.key] = len(f.steps)
	f.steps = append(f.steps, s)
	f.entries = append(f.entries, entry{step: s})
	return nil
}

func checkStep(s *Step) error {
	if s.key == "" {
		return invalid("step_key", "give every step a unique, non-empty key", "a step (cmd %q) has no key", s.cmd)
	}
	if s.cmd == "" {
		return invalid("step_cmd", "give the step a command to run", "step %q has an empty command", s.key)
	}
	if s.parent != nil && s.image != "" {
		return invalid("step_image", fmt.Sprintf("remove the image of %q, or make it a root step", s.key),
			"step %q builds in %q but names image %q: a child starts from its parent's snapshot", s.key, s.parent.key, s.image)
	}
	if _, err := seconds(s.timeout); err != nil {
		return invalid("step_timeout", "use a whole number of seconds >= 1, e.g. 90s or 10m",
			"step %q: timeout %v: %v", s.key, s.timeout, err)
	}
	return nil
}

// seconds converts an optional duration (0 = unset) to whole seconds.
func seconds(d time.Duration) (int, error) {
	if d == 0 {
		return 0, nil
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("not a whole number of seconds >= 1")
	}
	return int(d / time.Second), nil
}

// IR documents. Field order is the output order.
type graphDoc struct {
	Version        string     `json:"version"`
	DefaultImage   string     `json:"default_image,omitempty"`
	TimeoutSeconds int        `json:"timeout_seconds,omitempty"`
	Source         *ir.Source `json:"source,omitempty"`
	Graph          graphBody  `json:"graph"`
}

type graphBody struct {
	Nodes        []graphNode `json:"nodes"`
	NodeHoles    []int       `json:"node_holes"`
	EdgeProperty string      `json:"edge_property"`
	Edges        []edge      `json:"edges"`
}

type graphNode struct {
	Step commandStep       `json:"step"`
	Env  map[string]string `json:"env"`
}

type commandStep struct {
	Type           string            `json:"type,omitempty"` // flat form only
	Key            string            `json:"key"`
	Label          string            `json:"label,omitempty"`
	Cmd            string            `json:"cmd"`
	Image          string            `json:"image,omitempty"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty"`
	Cache          *ir.Cache         `json:"cache,omitempty"`
	Retry          *ir.Retry         `json:"retry,omitempty"`
	Artifacts      []string          `json:"artifacts,omitempty"`
	Secrets        []string          `json:"secrets,omitempty"`
	CacheDirs      []string          `json:"cache_dirs,omitempty"`
	BuildsIn       *string           `json:"builds_in,omitempty"` // flat form only
	Env            map[string]string `json:"env,omitempty"`       // flat form only
}

type waitStep struct {
	Type              string `json:"type"`
	ContinueOnFailure bool   `json:"continue_on_failure"`
}

type flatDoc struct {
	Version        string            `json:"version"`
	DefaultImage   string            `json:"default_image,omitempty"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty"`
	Source         *ir.Source        `json:"source,omitempty"`
	Env            map[string]string `json:"env"`
	Steps          []any             `json:"steps"`
}

type edge struct {
	from, to int
	kind     ir.EdgeKind
}

func (e edge) MarshalJSON() ([]byte, error) {
	return json.Marshal([]any{e.from, e.to, e.kind})
}

// document builds the IR document of g and returns the cache object of each command step (nil
// when uncached), index-aligned with g.steps, for the keys to be filled in.
func (p Pipeline) document(g *flat) (any, []*ir.Cache, error) {
	timeout, err := seconds(p.timeout)
	if err != nil {
		return nil, nil, invalid("pipeline_timeout", "use a whole number of seconds >= 1, e.g. 30m",
			"pipeline %q: timeout %v: %v", p.slug, p.timeout, err)
	}
	steps := make([]commandStep, len(g.steps))
	caches := make([]*ir.Cache, len(g.steps))
	for i, s := range g.steps {
		secs, _ := seconds(s.timeout) // checked by checkStep
		steps[i] = commandStep{Key: s.key, Label: s.label, Cmd: s.cmd, Image: s.image, TimeoutSeconds: secs, Retry: s.retry, Artifacts: s.artifacts, Secrets: s.secrets,
			CacheDirs: s.cacheDirs}
		if err := checkRetry(s.key, s.retry); err != nil {
			return nil, nil, err
		}
		if err := checkArtifacts(s.key, s.artifacts); err != nil {
			return nil, nil, err
		}
		for _, n := range s.secrets {
			if !ir.ValidSecretName(n) {
				return nil, nil, invalid("step_secrets", "name secrets as environment variables, e.g. Secrets(\"NPM_TOKEN\")",
					"step %q: secret %q is not an environment variable name", s.key, n)
			}
		}
		if s.cache != nil {
			c, err := s.cache.toIR(false)
			if err != nil {
				return nil, nil, invalid("step_cache", "see the cache policies in spec/cache-keys.md", "step %q: cache: %v", s.key, err)
			}
			steps[i].Cache, caches[i] = &c, &c
		}
	}
	cof := false
	for _, e := range g.entries {
		cof = cof || (e.step == nil && e.barrier.continueOnFailure)
	}
	if cof {
		doc, err := p.flatDocument(g, steps)
		return doc, caches, err
	}
	doc := graphDoc{Version: "0", DefaultImage: p.defaultImage, TimeoutSeconds: timeout, Source: p.source(),
		Graph: graphBody{Nodes: []graphNode{}, NodeHoles: []int{}, EdgeProperty: "directed", Edges: []edge{}}}
	for i, s := range g.steps {
		env := maps.Clone(p.env)
		if env == nil {
			env = map[string]string{}
		}
		maps.Copy(env, s.env)
		doc.Graph.Nodes = append(doc.Graph.Nodes, graphNode{Step: steps[i], Env: env})
	}
	doc.Graph.Edges, err = g.edges()
	return doc, caches, err
}

// edges returns the graph edges, grouped by target node: its builds_in parent, then what its
// barriers impose (as the flat form's wait does, ir-v0.md §2), then its After dependencies.
func (g *flat) edges() ([]edge, error) {
	out := []edge{}
	var before, barrier []int
	for _, e := range g.entries {
		if e.step == nil {
			if len(before) > 0 {
				barrier = before
			}
			before = nil
			continue
		}
		to := g.index[e.step.key]
		seen := map[int]bool{}
		if e.step.parent != nil {
			from := g.index[e.step.parent.key]
			out = append(out, edge{from, to, ir.BuildsIn})
			seen[from] = true
		}
		for _, from := range barrier {
			if !seen[from] {
				out = append(out, edge{from, to, ir.DependsOn})
				seen[from] = true
			}
		}
		for _, key := range e.step.after {
			from, ok := g.index[key]
			if !ok {
				return nil, invalid("step_after", fmt.Sprintf("add a step %q to the pipeline, or remove it from After", key),
					"step %q waits for %q, which is not in the pipeline", e.step.key, key)
			}
			if !seen[from] {
				out = append(out, edge{from, to, ir.DependsOn})
				seen[from] = true
			}
		}
		before = append(before, to)
	}
	return out, nil
}

func (p Pipeline) flatDocument(g *flat, steps []commandStep) (any, error) {
	timeout, _ := seconds(p.timeout) // checked by document
	env := maps.Clone(p.env)
	if env == nil {
		env = map[string]string{}
	}
	doc := flatDoc{Version: "0", DefaultImage: p.defaultImage, TimeoutSeconds: timeout, Source: p.source(), Env: env, Steps: []any{}}
	for _, e := range g.entries {
		if e.step == nil {
			doc.Steps = append(doc.Steps, waitStep{Type: "wait", ContinueOnFailure: e.barrier.continueOnFailure})
			continue
		}
		if len(e.step.after) > 0 {
			return nil, invalid("step_after",
				"use wait barriers instead of After in a pipeline with a continue_on_failure wait",
				"step %q uses After in a pipeline with a continue_on_failure wait: the IR form that carries the flag (flat form) has no ordering-only edges",
				e.step.key)
		}
		st := steps[g.index[e.step.key]]
		st.Type = "command"
		st.Env = e.step.env
		if e.step.parent != nil {
			k := e.step.parent.key
			st.BuildsIn = &k
		}
		doc.Steps = append(doc.Steps, st)
	}
	return doc, nil
}

func marshal(doc any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("pipeline: encode IR: %w", err)
	}
	// One edge per line reads better than the encoder's one number per line.
	return spreadEdge.ReplaceAll(buf.Bytes(), []byte("[$1, $2, $3]")), nil
}

var spreadEdge = regexp.MustCompile(`\[\n\s+(\d+),\n\s+(\d+),\n\s+("(?:builds_in|depends_on)")\n\s+\]`)

func checkArtifacts(key string, patterns []string) error {
	fix := fmt.Sprintf("use Artifacts(paths or globs under /workspace...), at most %d of them, e.g. Artifacts(\"dist/*.tar.gz\")", ir.MaxArtifacts)
	if len(patterns) > ir.MaxArtifacts {
		return invalid("step_artifacts", fix, "step %q: %d artifacts, more than %d", key, len(patterns), ir.MaxArtifacts)
	}
	for _, p := range patterns {
		if _, why := ir.CleanArtifact(p); why != "" {
			return invalid("step_artifacts", fix, "step %q: artifact %q: %s", key, p, why)
		}
	}
	return nil
}

func checkRetry(key string, r *ir.Retry) error {
	if r == nil {
		return nil
	}
	fix := fmt.Sprintf("use Retry(limit, codes...) with 0 <= limit <= %d and codes 1..255 (or -1: an infrastructure error)", ir.MaxRetryLimit)
	if r.Limit < 0 || r.Limit > ir.MaxRetryLimit {
		return invalid("step_retry", fix, "step %q: retry limit %d is out of range", key, r.Limit)
	}
	for _, c := range r.On {
		if c != -1 && (c < 1 || c > 255) {
			return invalid("step_retry", fix, "step %q: retry on exit code %d: codes are 1..255, or -1", key, c)
		}
	}
	return nil
}
