// Package cachekey computes step cache keys as specified in spec/cache-keys.md, byte-identical
// to the keys the harmont front ends compute at render time, and records the inputs that went
// into each key so that hm can explain a cache miss.
package cachekey

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
)

// DefaultOrg is the org when HM_PIPELINE_ORG is unset.
const DefaultOrg = "default"

// scratch stands for the parent key of a root step.
const scratch = "scratch"

// Context is what a key depends on beyond the IR.
type Context struct {
	Org  string    // HM_PIPELINE_ORG, read by the caller; "" means DefaultOrg
	Slug string    // the pipeline's slug
	Now  time.Time // render time, for ttl buckets; zero means time.Now()
	// Getenv reads the environment of the rendering process (env_keys); nil means os.Getenv.
	Getenv func(string) string
	// Dir is the source directory that on_change paths are relative to; "" means the
	// working directory.
	Dir string
	// Secret reports whether an env_keys name is one of the build's secrets: its value goes
	// into the key as any other, but the Inputs (stored in the registry, quoted when a miss is
	// explained) keep only a hash of it. nil: none is.
	Secret func(name string) bool
}

// Result is the key of one node.
type Result struct {
	Key    string // "" when the step is not cached
	Inputs Inputs
	// Fingerprint is what the key leaves out (see Fingerprint), set for every node: the
	// registry scopes entries by it, so editing a cached step's command is a miss.
	Fingerprint string
	// Warnings are for the step's log: on_change paths that match nothing, which the key
	// skips as the spec says, but which are most often a typo (go.summ).
	Warnings []string
}

// Compute returns one Result per node of p, index-aligned with p.Nodes. A key present in the IR
// (step.cache.key) is used as is; its Inputs are still filled as far as they can be.
func Compute(c Context, p *ir.Pipeline) ([]Result, error) {
	if c.Org == "" {
		c.Org = DefaultOrg
	}
	if c.Now.IsZero() {
		c.Now = time.Now()
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.Dir == "" {
		c.Dir = "."
	}
	order, parents, err := lineageOrder(p)
	if err != nil {
		return nil, err
	}
	k := keyer{ctx: c, files: newFileHasher(c.Dir)}
	res := make([]Result, len(p.Nodes))
	for _, i := range order {
		st := p.Nodes[i].Step
		image, parentFP := "", scratch
		if pi := parents[i]; pi >= 0 {
			parentFP = res[pi].Fingerprint
		} else {
			image = p.Image(i)
		}
		res[i].Fingerprint = Fingerprint(st.Cmd, p.Nodes[i].Env, image, parentFP)
		if st.Cache == nil || st.Cache.Policy == ir.PolicyNone {
			continue
		}
		fromIR := st.Cache.Key != ""
		parent := scratch
		if pi := parents[i]; pi >= 0 {
			parent = res[pi].Key
			if parent == "" && !fromIR {
				ps := p.Nodes[pi].Step.Key
				return nil, errs.New(errs.ErrInvalid, "cache_parent_uncached",
					fmt.Sprintf("give step %q a cache policy too, or remove the cache policy of step %q", ps, st.Key),
					"step %q has cache policy %q but its builds_in parent %q is not cached, so its snapshot cannot be keyed",
					st.Key, st.Cache.Policy, ps)
			}
		}
		in := Inputs{
			Policy:            describePolicy(*st.Cache),
			FromIR:            fromIR,
			Org:               c.Org,
			Slug:              c.Slug,
			CmdHash:           hashStrings(st.Cmd),
			NodeEnv:           envHashes(p.Nodes[i].Env),
			Image:             image,
			ParentKey:         parent,
			ParentFingerprint: parentFP,
			Fingerprint:       res[i].Fingerprint,
		}
		k.warnings = nil
		part, err := k.policyPart(st.Key, st.Cmd, *st.Cache, &in)
		res[i].Inputs, res[i].Warnings = in, k.warnings
		if fromIR {
			// The front end already decided the key; what we could not recompute only weakens
			// the explanation of a miss, it must not fail the build.
			res[i].Key = st.Cache.Key
			continue
		}
		if err != nil {
			return nil, err
		}
		res[i].Key = hashStrings(c.Org, c.Slug, st.Key, parent, part)
	}
	return res, nil
}

// lineageOrder returns the node indexes with every builds_in parent before its children, and
// each node's builds_in parent (-1 for a root).
func lineageOrder(p *ir.Pipeline) ([]int, []int, error) {
	parent := make([]int, len(p.Nodes))
	for i := range parent {
		parent[i] = -1
	}
	for _, e := range p.Edges {
		if e.Kind == ir.BuildsIn && e.To >= 0 && e.To < len(p.Nodes) {
			parent[e.To] = e.From
		}
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(p.Nodes))
	order := make([]int, 0, len(p.Nodes))
	for start := range p.Nodes {
		// Walk up to the first resolved ancestor, then emit the path top-down.
		var path []int
		for n := start; n >= 0 && state[n] != done; n = parent[n] {
			if n >= len(p.Nodes) {
				return nil, nil, fmt.Errorf("cache keys: builds_in parent %d out of range: %w", n, errs.ErrInvalid)
			}
			if state[n] == visiting {
				return nil, nil, errs.New(errs.ErrInvalid, "ir_cycle", "remove one builds_in edge of the cycle",
					"builds_in cycle through step %q", p.Nodes[n].Step.Key)
			}
			state[n] = visiting
			path = append(path, n)
		}
		for j := len(path) - 1; j >= 0; j-- {
			state[path[j]] = done
			order = append(order, path[j])
		}
	}
	return order, parent, nil
}

type keyer struct {
	ctx      Context
	files    *fileHasher
	warnings []string // of the node being keyed
}

// policyPart returns the policy_part of the key and records its inputs in in. On error it
// still records what it could.
func (k *keyer) policyPart(step, cmd string, c ir.Cache, in *Inputs) (string, error) {
	switch c.Policy {
	case ir.PolicyNone:
		return "none", nil
	case ir.PolicyForever:
		return "forever-" + k.cmdEnvHash(cmd, c.EnvKeys, in), nil
	case ir.PolicyTTL:
		h := k.cmdEnvHash(cmd, c.EnvKeys, in)
		if c.DurationSeconds <= 0 {
			return "", errs.New(errs.ErrInvalid, "cache_ttl_duration", "set cache.duration_seconds to a whole number of seconds >= 1",
				"step %q has cache policy ttl with duration_seconds %d", step, c.DurationSeconds)
		}
		b := floorDiv(k.ctx.Now.Unix(), c.DurationSeconds)
		in.TTLBuckets = append(in.TTLBuckets, TTLBucket{Seconds: c.DurationSeconds, Bucket: b})
		return "ttl-" + strconv.FormatInt(b, 10) + "-" + h, nil
	case ir.PolicyOnChange:
		paths, unmatched, err := k.files.resolve(c.Paths)
		if err != nil {
			return "", fmt.Errorf("cache key of step %q: %w", step, err)
		}
		for _, u := range unmatched {
			k.warnings = append(k.warnings, fmt.Sprintf("cache on_change path %q matches nothing in the source directory, so it does not affect the key", u))
		}
		h := sha256.New()
		for _, rel := range paths {
			ph, err := k.files.hash(rel)
			if err != nil {
				return "", fmt.Errorf("cache key of step %q: %w", step, err)
			}
			if in.Files == nil {
				in.Files = map[string]string{}
			}
			in.Files[rel] = ph
			h.Write([]byte(ph))
			h.Write([]byte{0})
		}
		return "sha-" + hex.EncodeToString(h.Sum(nil)), nil
	case ir.PolicyCompose:
		var sb strings.Builder
		var firstErr error
		for _, sub := range c.SubPolicies {
			part, err := k.policyPart(step, cmd, sub, in)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			sb.WriteString(part)
		}
		if firstErr != nil {
			return "", firstErr
		}
		return "compose-" + hashStrings(sb.String()), nil
	}
	return "", errs.New(errs.ErrInvalid, "cache_policy_unknown",
		"use one of none, forever, ttl, on_change, compose",
		"step %q has unknown cache policy %q", step, c.Policy)
}

// cmdEnvHash is sha256hex(cmd \0 envsub) and records the command hash and env values.
func (k *keyer) cmdEnvHash(cmd string, envKeys []string, in *Inputs) string {
	names := append([]string(nil), envKeys...)
	sort.Strings(names)
	h := sha256.New()
	h.Write([]byte(cmd))
	h.Write([]byte{0})
	for _, name := range names {
		v := k.ctx.Getenv(name)
		h.Write([]byte(name + "=" + v))
		h.Write([]byte{0})
		if in.EnvValues == nil {
			in.EnvValues = map[string]string{}
		}
		if k.ctx.Secret != nil && k.ctx.Secret(name) {
			v = SecretHash(v)
		}
		in.EnvValues[name] = v
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Fingerprint is sha256hex(sha256hex(cmd) \0 sha256hex(envsub) \0 image \0 parent), envsub
// being the node env as sorted `K=V\0`, image the root's image as written ("" for a builds_in
// child, whose base is its parent) and parent the parent's fingerprint ("scratch" for a root).
// It covers what decides a snapshot's content and a key may leave out (an on_change key
// ignores the command; spec/cache-keys.md § FIX). Parts are hashed first so that no command
// or value can shift bytes into the next part.
func Fingerprint(cmd string, env map[string]string, image, parent string) string {
	names := make([]string, 0, len(env))
	for n := range env {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n + "=" + env[n]))
		h.Write([]byte{0})
	}
	return hashStrings(hashStrings(cmd), hex.EncodeToString(h.Sum(nil)), image, parent)
}

// envHashes records the node env for explanations without keeping values, which may be
// secrets: name → the first 16 hex of sha256(value).
func envHashes(env map[string]string) map[string]string {
	if len(env) == 0 {
		return nil
	}
	out := make(map[string]string, len(env))
	for n, v := range env {
		out[n] = hashStrings(v)[:16]
	}
	return out
}

// describePolicy names a policy for Inputs: "forever", "compose(on_change,ttl,none)".
func describePolicy(c ir.Cache) string {
	if c.Policy != ir.PolicyCompose {
		return c.Policy
	}
	subs := make([]string, len(c.SubPolicies))
	for i, s := range c.SubPolicies {
		subs[i] = describePolicy(s)
	}
	return c.Policy + "(" + strings.Join(subs, ",") + ")"
}

// hashStrings is sha256hex of parts joined by NUL.
func hashStrings(parts ...string) string {
	h := sha256.New()
	for i, s := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// SecretHash is what Inputs keep of a secret's value: enough to tell that it changed.
func SecretHash(v string) string {
	h := sha256.Sum256([]byte("hm secret\x00" + v))
	return "sha256:" + hex.EncodeToString(h[:8])
}
