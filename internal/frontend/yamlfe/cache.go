package yamlfe

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/hmci/hm/pipeline"
)

var cachePolicies = []string{"forever", "ttl", "on_change", "compose", "none"}

const cacheFix = "write cache: forever | none | {ttl: 24h} | {on_change: [go.sum]} | {compose: [...]}, " +
	"with env_keys: [...] beside forever or ttl"

// cache parses a cache policy:
//
//	cache: forever                       # or none
//	cache: {ttl: 24h}
//	cache: {on_change: [go.mod, go.sum]}
//	cache: {forever: true, env_keys: [GO_VERSION]}
//	cache: {compose: [{on_change: [uv.lock]}, {ttl: 1h}]}
func (ps *parser) cache(n *yaml.Node, nested bool) (pipeline.Cache, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "forever":
			return pipeline.Forever(), nil
		case "none":
			return pipeline.None(), nil
		case "ttl", "on_change", "compose":
			return pipeline.Cache{}, ps.errorf(n, fmt.Sprintf("write it as a mapping, e.g. {%s: ...}", n.Value),
				"cache policy %s needs a value", n.Value)
		}
		return pipeline.Cache{}, ps.errorf(n, cacheFix, "unknown cache policy %s", describe(n))
	}
	fs, err := ps.fields(n, "cache")
	if err != nil {
		return pipeline.Cache{}, err
	}
	var (
		c          pipeline.Cache
		policy     *yaml.Node
		envKeys    []string
		envKeyNode *yaml.Node
	)
	for _, f := range fs {
		k := f.key
		if k.Value == "env_keys" {
			nodes, err := ps.strList(f.val, "env_keys")
			if err != nil {
				return c, err
			}
			for _, e := range nodes {
				envKeys = append(envKeys, e.Value)
			}
			envKeyNode = k
			continue
		}
		if !isPolicy(k.Value) {
			return c, ps.unknown(k, "cache", append(cachePolicies, "env_keys"))
		}
		if policy != nil {
			return c, ps.errorf(k, "give one policy, or combine several with compose: [...]",
				"cache has two policies, %s and %s", policy.Value, k.Value)
		}
		policy = k
		if c, err = ps.policy(k, f.val, nested); err != nil {
			return c, err
		}
	}
	if policy == nil {
		return c, ps.errorf(n, cacheFix, "cache has no policy")
	}
	if envKeyNode != nil {
		if policy.Value != "forever" && policy.Value != "ttl" {
			return c, ps.errorf(envKeyNode, "remove env_keys, or put it beside a forever or ttl policy",
				"env_keys only affect forever and ttl policies, not %s", policy.Value)
		}
		c = c.EnvKeys(envKeys...)
	}
	return c, nil
}

func isPolicy(s string) bool {
	for _, p := range cachePolicies {
		if p == s {
			return true
		}
	}
	return false
}

// policy parses the value of one policy key.
func (ps *parser) policy(k, v *yaml.Node, nested bool) (pipeline.Cache, error) {
	v = resolve(v)
	switch k.Value {
	case "forever", "none":
		if v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Tag == "!!bool" && v.Value == "true") {
			if k.Value == "none" {
				return pipeline.None(), nil
			}
			return pipeline.Forever(), nil
		}
		return pipeline.Cache{}, ps.errorf(v, fmt.Sprintf("write `%s: true`, or `cache: %s`", k.Value, k.Value),
			"%s takes no value but true, not %s", k.Value, describe(v))
	case "ttl":
		d, err := ps.duration(v, "ttl")
		return pipeline.TTL(d), err
	case "on_change":
		nodes, err := ps.strList(v, "on_change")
		if err != nil {
			return pipeline.Cache{}, err
		}
		paths := make([]string, len(nodes))
		for i, p := range nodes {
			paths[i] = p.Value
		}
		return pipeline.OnChange(paths...), nil
	case "compose":
		if nested {
			return pipeline.Cache{}, ps.errorf(k, "list the sub-policies of both in one compose", "compose cannot be nested inside compose")
		}
		list, err := ps.list(v, "compose")
		if err != nil {
			return pipeline.Cache{}, err
		}
		if len(list) == 0 {
			return pipeline.Cache{}, ps.errorf(v, "list at least one sub-policy", "compose is empty")
		}
		subs := make([]pipeline.Cache, len(list))
		for i, it := range list {
			if subs[i], err = ps.cache(it, true); err != nil {
				return pipeline.Cache{}, err
			}
		}
		return pipeline.Compose(subs...), nil
	}
	return pipeline.Cache{}, ps.errorf(k, cacheFix, "unknown cache policy %q", k.Value)
}
