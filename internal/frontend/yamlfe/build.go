package yamlfe

import (
	"fmt"
	"sort"

	"github.com/hmci/hm/pipeline"
)

// check validates what spans steps, so that the error can point at the offending line: unique
// keys, `from` naming an earlier step, images only on root steps, `after` naming a step.
func (ps *parser) check(d *pipelineDef) error {
	defined := map[string]*stepDef{} // in document order, depth first
	var order []*stepDef
	var walk func(s *stepDef)
	walk = func(s *stepDef) {
		order = append(order, s)
		for _, c := range s.children {
			walk(c)
		}
	}
	cof := false
	for _, it := range d.items {
		if it.step != nil {
			walk(it.step)
		} else {
			cof = cof || it.wait.continueOnFailure
		}
	}
	all := map[string]*stepDef{}
	for _, s := range order {
		if prev, dup := all[s.key]; dup {
			return ps.errorf(s.keyNode, "give every step a unique key",
				"step key %q is already used at line %d", s.key, prev.keyNode.Line)
		}
		all[s.key] = s
	}
	for _, s := range order {
		if s.from != "" {
			if s.nested {
				return ps.errorf(s.fromNode, "remove `from:`: a nested step builds in the step it is listed under",
					"step %q is nested under another step and also names from: %q", s.key, s.from)
			}
			if _, ok := defined[s.from]; !ok {
				fix := fmt.Sprintf("name a step defined above %q", s.key)
				if _, later := all[s.from]; later {
					return ps.errorf(s.fromNode, fmt.Sprintf("move step %q above %q", s.from, s.key),
						"step %q builds from %q, which is defined below it", s.key, s.from)
				}
				if s.from == s.key {
					return ps.errorf(s.fromNode, fix, "step %q builds from itself", s.key)
				}
				return ps.errorf(s.fromNode, fix+closestHint(s.from, all), "step %q builds from unknown step %q", s.key, s.from)
			}
		}
		if s.image != "" && (s.nested || s.from != "") {
			return ps.errorf(s.imageNode, "remove image: a child step starts from its parent's snapshot, not an image",
				"step %q builds in another step, so it cannot name an image", s.key)
		}
		for _, a := range s.after {
			if _, ok := all[a.Value]; !ok {
				return ps.errorf(a, "name a step of this pipeline"+closestHint(a.Value, all), "step %q runs after unknown step %q", s.key, a.Value)
			}
			if a.Value == s.key {
				return ps.errorf(a, "remove it from after", "step %q runs after itself", s.key)
			}
			if cof {
				return ps.errorf(a, "use wait barriers instead of after in a pipeline with a continue_on_failure wait",
					"after cannot be combined with a continue_on_failure wait: the IR form that carries that flag (flat form) has no ordering-only edges")
			}
		}
		defined[s.key] = s
	}
	return nil
}

func closestHint(name string, all map[string]*stepDef) string {
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if s := closest(name, keys); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

// build turns the checked definition into the SDK's pipeline. Children are made with Sh on
// their parent and listed through Fork, so the SDK lists steps in document order, depth first.
func (d *pipelineDef) build() pipeline.Pipeline {
	p := pipeline.New(d.slug).DefaultImage(d.defaultImage).Timeout(d.timeout)
	if d.git {
		p = p.SourceGit()
	}
	for _, k := range sortedKeys(d.env) {
		p = p.Env(k, d.env[k])
	}
	built := map[string]pipeline.Step{}
	for _, it := range d.items {
		if it.wait != nil {
			p = p.Add(pipeline.Wait().ContinueOnFailure(it.wait.continueOnFailure))
			continue
		}
		var parent *pipeline.Step
		if it.step.from != "" {
			s := built[it.step.from]
			parent = &s
		}
		p = p.Add(buildStep(it.step, parent, built))
	}
	return p
}

func buildStep(sd *stepDef, parent *pipeline.Step, built map[string]pipeline.Step) pipeline.Item {
	s := pipeline.Sh(sd.key, sd.run)
	if parent != nil {
		s = parent.Sh(sd.key, sd.run)
	}
	if sd.label != "" {
		s = s.Label(sd.label)
	}
	if sd.image != "" {
		s = s.Image(sd.image)
	}
	for _, k := range sortedKeys(sd.env) {
		s = s.Env(k, sd.env[k])
	}
	if sd.timeout != 0 {
		s = s.Timeout(sd.timeout)
	}
	if sd.cache != nil {
		s = s.Cache(*sd.cache)
	}
	if sd.retry != nil {
		s = s.Retry(sd.retry.limit, sd.retry.on...)
	}
	if len(sd.artifacts) > 0 {
		s = s.Artifacts(sd.artifacts...)
	}
	if len(sd.secrets) > 0 {
		s = s.Secrets(sd.secrets...)
	}
	if len(sd.cacheDirs) > 0 {
		s = s.CacheDirs(sd.cacheDirs...)
	}
	if len(sd.after) > 0 {
		keys := make([]string, len(sd.after))
		for i, a := range sd.after {
			keys[i] = a.Value
		}
		s = s.AfterKeys(keys...)
	}
	built[sd.key] = s
	if len(sd.children) == 0 {
		return s
	}
	children := make([]pipeline.Item, len(sd.children))
	for i, c := range sd.children {
		children[i] = buildStep(c, &s, built)
	}
	return s.Fork(children...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
