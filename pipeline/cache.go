package pipeline

import (
	"fmt"
	"slices"
	"time"

	"github.com/hmci/hm/internal/ir"
)

// Cache is a step's cache policy (spec/cache-keys.md). A cached step's snapshot is reused
// while its key stays the same.
type Cache struct {
	policy  string
	ttl     time.Duration
	paths   []string
	envKeys []string
	subs    []Cache
}

// Forever caches the step until its command (or an env_keys value) changes.
func Forever() Cache { return Cache{policy: ir.PolicyForever} }

// TTL caches the step for d (a whole number of seconds): the key rolls over every d, counted
// from the Unix epoch, so a 24h TTL rolls over at 00:00 UTC.
func TTL(d time.Duration) Cache { return Cache{policy: ir.PolicyTTL, ttl: d} }

// OnChange caches the step until one of paths (files, directories or globs, relative to the
// source directory) changes.
func OnChange(paths ...string) Cache {
	return Cache{policy: ir.PolicyOnChange, paths: slices.Clone(paths)}
}

// Compose combines policies: the key changes when any sub-policy's would.
func Compose(subs ...Cache) Cache {
	return Cache{policy: ir.PolicyCompose, subs: slices.Clone(subs)}
}

// None is no caching; useful as a Compose sub-policy.
func None() Cache { return Cache{policy: ir.PolicyNone} }

// EnvKeys adds environment variables (read when the pipeline is rendered) to a Forever or TTL
// key.
func (c Cache) EnvKeys(names ...string) Cache {
	c.envKeys = append(slices.Clip(c.envKeys), names...)
	return c
}

func (c Cache) equal(o Cache) bool {
	return c.policy == o.policy && c.ttl == o.ttl && slices.Equal(c.paths, o.paths) &&
		slices.Equal(c.envKeys, o.envKeys) && slices.EqualFunc(c.subs, o.subs, Cache.equal)
}

// toIR converts c to the IR's cache object. nested is true inside Compose.
func (c Cache) toIR(nested bool) (ir.Cache, error) {
	out := ir.Cache{Policy: c.policy, EnvKeys: slices.Clone(c.envKeys)}
	if len(c.envKeys) > 0 && c.policy != ir.PolicyForever && c.policy != ir.PolicyTTL {
		return out, fmt.Errorf("env_keys only affect forever and ttl policies, not %s", c.policy)
	}
	switch c.policy {
	case ir.PolicyForever, ir.PolicyNone:
	case ir.PolicyTTL:
		if c.ttl < time.Second || c.ttl%time.Second != 0 {
			return out, fmt.Errorf("ttl %v is not a whole number of seconds >= 1", c.ttl)
		}
		out.DurationSeconds = int64(c.ttl / time.Second)
	case ir.PolicyOnChange:
		if len(c.paths) == 0 {
			return out, fmt.Errorf("on_change needs at least one path")
		}
		out.Paths = slices.Clone(c.paths)
	case ir.PolicyCompose:
		if nested {
			return out, fmt.Errorf("compose cannot be nested inside compose")
		}
		if len(c.subs) == 0 {
			return out, fmt.Errorf("compose needs at least one sub-policy")
		}
		for _, s := range c.subs {
			sub, err := s.toIR(true)
			if err != nil {
				return out, err
			}
			out.SubPolicies = append(out.SubPolicies, sub)
		}
	default:
		return out, fmt.Errorf("unknown cache policy %q", c.policy)
	}
	return out, nil
}
