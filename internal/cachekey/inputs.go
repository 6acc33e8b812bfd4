package cachekey

import (
	"fmt"
	"sort"
)

// Inputs records what went into a key, so that a miss can be explained against the inputs of
// the last entry registered for the same step. It is stored as JSON in the snapshot registry.
type Inputs struct {
	Policy string `json:"policy,omitempty"` // "forever", "ttl", "compose(on_change,ttl,none)"
	// FromIR is set when the key came from the IR: the inputs are hm's reconstruction and the
	// front end may have seen a different environment.
	FromIR bool   `json:"from_ir,omitempty"`
	Org    string `json:"org,omitempty"`
	Slug   string `json:"slug,omitempty"`
	// CmdHash is sha256hex(cmd), whatever the policy: the fingerprint covers the command. The
	// command itself is not kept: it may be long or carry secrets.
	CmdHash    string            `json:"cmd_hash,omitempty"`
	EnvValues  map[string]string `json:"env,omitempty"`        // env_keys name → value ("" when unset)
	ParentKey  string            `json:"parent_key,omitempty"` // "scratch" for a root
	Files      map[string]string `json:"files,omitempty"`      // resolved on_change path → pathhash
	TTLBuckets []TTLBucket       `json:"ttl,omitempty"`        // one per ttl (sub-)policy, in order

	// The fingerprint and its parts (see Fingerprint). Entries registered before fingerprints
	// existed have none of them.
	Fingerprint       string            `json:"fingerprint,omitempty"`
	ParentFingerprint string            `json:"parent_fingerprint,omitempty"` // "scratch" for a root
	NodeEnv           map[string]string `json:"node_env,omitempty"`           // name → 16 hex of sha256(value)
	Image             string            `json:"image,omitempty"`              // as written; "" for a child
}

// TTLBucket is floor(now / Seconds) of one ttl policy.
type TTLBucket struct {
	Seconds int64 `json:"seconds"`
	Bucket  int64 `json:"bucket"`
}

// Diff says, one human line each, which inputs differ between old (the last registered entry)
// and new (this run). It returns nil when it finds no difference.
func Diff(old, new Inputs) []string {
	var out []string
	if old.Org != new.Org {
		out = append(out, fmt.Sprintf("org changed: %q → %q", old.Org, new.Org))
	}
	if old.Slug != new.Slug {
		out = append(out, fmt.Sprintf("pipeline slug changed: %q → %q", old.Slug, new.Slug))
	}
	if old.Policy != new.Policy {
		out = append(out, fmt.Sprintf("cache policy changed: %s → %s", orNone(old.Policy), orNone(new.Policy)))
	}
	if old.CmdHash != new.CmdHash && old.CmdHash != "" && new.CmdHash != "" {
		out = append(out, "command changed since the cached snapshot")
	}
	for _, name := range unionKeys(old.EnvValues, new.EnvValues) {
		ov, inOld := old.EnvValues[name]
		nv, inNew := new.EnvValues[name]
		switch {
		case !inOld:
			out = append(out, fmt.Sprintf("env %s added to env_keys (%q)", name, nv))
		case !inNew:
			out = append(out, fmt.Sprintf("env %s removed from env_keys", name))
		case ov != nv:
			out = append(out, fmt.Sprintf("env %s: %q → %q", name, ov, nv))
		}
	}
	if old.ParentKey != new.ParentKey {
		out = append(out, fmt.Sprintf("parent key changed (%s → %s)", short(old.ParentKey), short(new.ParentKey)))
	}
	for _, p := range unionKeys(old.Files, new.Files) {
		oh, inOld := old.Files[p]
		nh, inNew := new.Files[p]
		switch {
		case !inOld:
			out = append(out, fmt.Sprintf("file %s added", p))
		case !inNew:
			out = append(out, fmt.Sprintf("file %s removed", p))
		case oh != nh:
			out = append(out, fmt.Sprintf("file %s changed", p))
		}
	}
	out = append(out, diffTTL(old.TTLBuckets, new.TTLBuckets)...)
	return append(out, diffFingerprint(old, new)...)
}

// diffFingerprint explains a fingerprint that differs: the node env, the image, the parent,
// or an entry older than fingerprints. The command is reported with the key's inputs.
func diffFingerprint(old, new Inputs) []string {
	if old.Fingerprint == new.Fingerprint || new.Fingerprint == "" {
		return nil
	}
	if old.Fingerprint == "" {
		return []string{"the cached snapshot was registered by an older hm that did not record the step's command and env"}
	}
	var out []string
	for _, name := range unionKeys(old.NodeEnv, new.NodeEnv) {
		oh, inOld := old.NodeEnv[name]
		nh, inNew := new.NodeEnv[name]
		switch {
		case !inOld:
			out = append(out, fmt.Sprintf("env %s added since the cached snapshot", name))
		case !inNew:
			out = append(out, fmt.Sprintf("env %s removed since the cached snapshot", name))
		case oh != nh:
			out = append(out, fmt.Sprintf("env %s changed since the cached snapshot", name))
		}
	}
	if old.Image != new.Image {
		out = append(out, fmt.Sprintf("image changed since the cached snapshot: %s → %s", orNone(old.Image), orNone(new.Image)))
	}
	if old.ParentFingerprint != new.ParentFingerprint && old.ParentKey == new.ParentKey {
		out = append(out, "the builds_in parent's command, env or image changed since the cached snapshot")
	}
	return out
}

func diffTTL(old, new []TTLBucket) []string {
	if len(old) != len(new) {
		return nil // the policy changed, already reported
	}
	var out []string
	for i := range old {
		switch {
		case old[i].Seconds != new[i].Seconds:
			out = append(out, fmt.Sprintf("ttl duration changed: %ds → %ds", old[i].Seconds, new[i].Seconds))
		case old[i].Bucket != new[i].Bucket:
			out = append(out, fmt.Sprintf("ttl bucket rolled over (every %ds)", new[i].Seconds))
		}
	}
	return out
}

func unionKeys(a, b map[string]string) []string {
	seen := make(map[string]bool, len(a)+len(b))
	var keys []string
	for _, m := range []map[string]string{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

// short abbreviates a key for display; "scratch" and "" stay readable.
func short(key string) string {
	if key == "" {
		return "none"
	}
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
