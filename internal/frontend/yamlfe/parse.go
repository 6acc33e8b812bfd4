package yamlfe

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hmci/hm/pipeline"
)

var (
	pipelineFields = []string{"slug", "name", "default_image", "timeout", "env", "source", "steps"}
	stepFields     = []string{"key", "run", "label", "image", "env", "cache", "timeout", "retry", "artifacts", "secrets", "cache_dirs", "steps", "from", "after"}
)

// pipelineDef is a parsed document before it becomes a pipeline.Pipeline.
type pipelineDef struct {
	slug, name, defaultImage string
	env                      map[string]string
	timeout                  time.Duration
	git                      bool // source: {git: true}
	items                    []itemDef
}

// itemDef is a top-level entry of `steps:`: a step or a wait barrier.
type itemDef struct {
	step *stepDef
	wait *waitDef
}

type waitDef struct {
	node              *yaml.Node
	continueOnFailure bool
}

type stepDef struct {
	node                *yaml.Node
	key                 string
	keyNode             *yaml.Node
	run, label, image   string
	imageNode, fromNode *yaml.Node
	env                 map[string]string
	timeout             time.Duration
	cache               *pipeline.Cache
	retry               *retryDef
	artifacts           []string
	secrets             []string
	cacheDirs           []string
	from                string
	after               []*yaml.Node
	children            []*stepDef
	nested              bool // a child listed under its parent's `steps:`
}

// pipeline parses one document. needSlug is set when the file holds several.
func (ps *parser) pipeline(doc *yaml.Node, stem string, needSlug bool) (Pipeline, *yaml.Node, error) {
	fs, err := ps.fields(doc, "a pipeline")
	if err != nil {
		return Pipeline{}, nil, err
	}
	d := pipelineDef{slug: stem}
	slugNode := resolve(doc)
	var stepsNode *yaml.Node
	for _, f := range fs {
		switch f.key.Value {
		case "slug":
			if d.slug, err = ps.str(f.val, "slug"); err == nil {
				slugNode = f.val
			}
		case "name":
			d.name, err = ps.str(f.val, "name")
		case "default_image":
			d.defaultImage, err = ps.str(f.val, "default_image")
		case "timeout":
			d.timeout, err = ps.duration(f.val, "timeout")
		case "env":
			d.env, err = ps.env(f.val)
		case "source":
			d.git, err = ps.source(f.val)
		case "steps":
			stepsNode = f.val
		default:
			if !extension(f.key) {
				err = ps.unknown(f.key, "the pipeline", pipelineFields)
			}
		}
		if err != nil {
			return Pipeline{}, nil, err
		}
	}
	if needSlug && slugNode == resolve(doc) {
		return Pipeline{}, nil, ps.errorf(doc, "add `slug: NAME` to every pipeline of the file",
			"this file holds several pipelines (YAML documents), so each needs a slug")
	}
	if err := ps.checkSlug(slugNode, d.slug); err != nil {
		return Pipeline{}, nil, err
	}
	if stepsNode == nil {
		return Pipeline{}, nil, ps.errorf(doc, "add a `steps:` list", "pipeline %q has no steps", d.slug)
	}
	if d.items, err = ps.items(stepsNode); err != nil {
		return Pipeline{}, nil, err
	}
	if err := ps.countEdges(&d); err != nil {
		return Pipeline{}, nil, err
	}
	if err := ps.check(&d); err != nil {
		return Pipeline{}, nil, err
	}
	return Pipeline{Slug: d.slug, Name: d.name, Def: d.build()}, slugNode, nil
}

// extension reports whether k is an `x-` field: ignored, a place for YAML anchors.
func extension(k *yaml.Node) bool { return strings.HasPrefix(k.Value, "x-") }

func (ps *parser) checkSlug(n *yaml.Node, slug string) error {
	for i, r := range slug {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '-' || r == '_' || r == '.')
		if !ok {
			return ps.errorf(n, "set `slug:` to letters, digits, '-', '_' and '.' (starting with a letter or digit)",
				"pipeline slug %q is not valid", slug)
		}
	}
	if slug == "" {
		return ps.errorf(n, "set `slug:` to a name such as ci", "pipeline slug is empty")
	}
	return nil
}

// items parses the top-level `steps:` list.
func (ps *parser) items(n *yaml.Node) ([]itemDef, error) {
	list, err := ps.list(n, "steps")
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, ps.errorf(n, "add at least one step", "`steps:` is empty")
	}
	var out []itemDef
	for _, it := range list {
		if w, ok, err := ps.wait(it); ok || err != nil {
			if err != nil {
				return nil, err
			}
			out = append(out, itemDef{wait: w})
			continue
		}
		s, err := ps.step(it, false)
		if err != nil {
			return nil, err
		}
		out = append(out, itemDef{step: s})
	}
	return out, nil
}

// wait recognises `- wait`, `- wait:` and `- wait: {continue_on_failure: true}`.
func (ps *parser) wait(n *yaml.Node) (*waitDef, bool, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Value == "wait" {
		return &waitDef{node: n}, true, nil
	}
	if n.Kind != yaml.MappingNode || !hasKey(n, "wait") {
		return nil, false, nil
	}
	fs, err := ps.fields(n, "a wait barrier")
	if err != nil {
		return nil, true, err
	}
	if len(fs) != 1 {
		k := fs[0].key
		if k.Value == "wait" {
			k = fs[1].key
		}
		return nil, true, ps.errorf(k, "write a barrier as its own list item: `- wait: {continue_on_failure: true}`",
			"a wait barrier has no field %q", k.Value)
	}
	w := &waitDef{node: n}
	v := resolve(fs[0].val)
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return w, true, nil
	}
	opts, err := ps.fields(v, "wait")
	if err != nil {
		return nil, true, err
	}
	for _, f := range opts {
		if f.key.Value != "continue_on_failure" {
			return nil, true, ps.unknown(f.key, "wait", []string{"continue_on_failure"})
		}
		if w.continueOnFailure, err = ps.boolean(f.val, "continue_on_failure"); err != nil {
			return nil, true, err
		}
	}
	return w, true, nil
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// step parses a step; nested is set for a child listed under its parent's `steps:`.
func (ps *parser) step(n *yaml.Node, nested bool) (*stepDef, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && !nested {
		return nil, ps.errorf(n, "write a step as a mapping: `- key: NAME` and `run: COMMAND` on the next line",
			"a step must be a mapping with key and run, not %s", describe(n))
	}
	fs, err := ps.fields(n, "a step")
	if err != nil {
		return nil, err
	}
	s := &stepDef{node: n, nested: nested}
	var runNode *yaml.Node
	for _, f := range fs {
		switch f.key.Value {
		case "key":
			s.key, err = ps.str(f.val, "key")
			s.keyNode = f.val
		case "run":
			s.run, err = ps.str(f.val, "run")
			runNode = f.val
		case "label":
			s.label, err = ps.str(f.val, "label")
		case "image":
			s.image, err = ps.str(f.val, "image")
			s.imageNode = f.val
		case "env":
			s.env, err = ps.env(f.val)
		case "timeout":
			s.timeout, err = ps.duration(f.val, "timeout")
		case "cache":
			var c pipeline.Cache
			if c, err = ps.cache(f.val, false); err == nil {
				s.cache = &c
			}
		case "retry":
			s.retry, err = ps.retry(f.val)
		case "artifacts":
			s.artifacts, err = ps.artifacts(f.val)
		case "secrets":
			s.secrets, err = ps.secrets(f.val)
		case "cache_dirs":
			s.cacheDirs, err = ps.cacheDirs(f.val)
		case "from":
			s.from, err = ps.str(f.val, "from")
			s.fromNode = f.val
		case "after":
			s.after, err = ps.strList(f.val, "after")
		case "steps":
			s.children, err = ps.children(f.val)
		case "wait":
			err = ps.errorf(f.key, "make the barrier its own list item: `- wait: {continue_on_failure: true}`",
				"wait is not a step field")
		default:
			if !extension(f.key) {
				err = ps.unknown(f.key, "a step", stepFields)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if s.key == "" {
		at := n
		if s.keyNode != nil {
			at = s.keyNode
		}
		return nil, ps.errorf(at, "add `key: NAME`, unique in the pipeline", "step has no key")
	}
	if strings.TrimSpace(s.run) == "" {
		at := n
		if runNode != nil {
			at = runNode
		}
		return nil, ps.errorf(at, "add `run: COMMAND` (a shell command)", "step %q has no command (run)", s.key)
	}
	return s, nil
}

// children parses a step's nested `steps:`.
func (ps *parser) children(n *yaml.Node) ([]*stepDef, error) {
	list, err := ps.list(n, "steps")
	if err != nil {
		return nil, err
	}
	var out []*stepDef
	for _, it := range list {
		if _, ok, _ := ps.wait(it); ok {
			return nil, ps.errorf(it, "put wait barriers in the pipeline's top-level `steps:` list",
				"a wait barrier cannot be nested under a step")
		}
		c, err := ps.step(it, true)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (ps *parser) list(n *yaml.Node, what string) ([]*yaml.Node, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return nil, ps.errorf(n, fmt.Sprintf("write %s as a list of `- ...` items", what), "%s must be a list, not %s", what, describe(n))
	}
	return n.Content, nil
}

// str reads a scalar as text; YAML null is "". Numbers and booleans keep their literal text.
func (ps *parser) str(n *yaml.Node, what string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		return "", ps.errorf(n, fmt.Sprintf("give %s a single value (quote it if it contains ': ' or starts with '{' or '[')", what),
			"%s must be a single value, not %s", what, describe(n))
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

// strList reads a list of scalars, or one scalar as a list of one.
func (ps *parser) strList(n *yaml.Node, what string) ([]*yaml.Node, error) {
	r := resolve(n)
	if r.Kind == yaml.ScalarNode {
		r = &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{r}}
	}
	list, err := ps.list(r, what)
	if err != nil {
		return nil, err
	}
	out := make([]*yaml.Node, 0, len(list))
	for _, it := range list {
		v, err := ps.str(it, what+" entries")
		if err != nil {
			return nil, err
		}
		if v == "" {
			return nil, ps.errorf(resolve(it), "remove the empty entry", "%s has an empty entry", what)
		}
		out = append(out, resolve(it))
	}
	return out, nil
}

func (ps *parser) boolean(n *yaml.Node, what string) (bool, error) {
	n = resolve(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		return false, ps.errorf(n, "write true or false", "%s must be true or false, not %s", what, describe(n))
	}
	return b, nil
}

func (ps *parser) env(n *yaml.Node) (map[string]string, error) {
	fs, err := ps.fields(n, "env")
	if err != nil {
		return nil, err
	}
	env := make(map[string]string, len(fs))
	for _, f := range fs {
		name := f.key.Value
		if name == "" || strings.ContainsAny(name, "= \t\n") {
			return nil, ps.errorf(f.key, "use a variable name without '=' or spaces", "env name %q is not valid", name)
		}
		if env[name], err = ps.str(f.val, "env "+name); err != nil {
			return nil, err
		}
	}
	return env, nil
}

// duration reads a Go duration (30s, 5m, 1h30m) that is a whole number of seconds >= 1.
func (ps *parser) duration(n *yaml.Node, what string) (time.Duration, error) {
	s, err := ps.str(n, what)
	if err != nil {
		return 0, err
	}
	n = resolve(n)
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, ps.errorf(n, "write a duration such as 90s, 10m or 1h30m", "%s %q is not a duration", what, s)
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, ps.errorf(n, "use a whole number of seconds, at least 1s", "%s %s is not a whole number of seconds >= 1", what, s)
	}
	return d, nil
}
