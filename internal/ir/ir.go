// Package ir parses and validates hm's pipeline intermediate representation (spec/ir-v0.md):
// the graph form and the older flat form, which parse into the same Pipeline.
package ir

import "encoding/json"

// Form says which encoding a pipeline was parsed from.
type Form string

const (
	FormGraph Form = "graph"
	FormFlat  Form = "flat"
)

// FallbackImage is the image of root steps when neither the step nor the pipeline names one.
const FallbackImage = "ubuntu:24.04"

// Pipeline is a parsed, validated pipeline. Nodes are in IR order; a node's index is its
// identity for edges.
type Pipeline struct {
	Version        string
	DefaultImage   string // "" when absent; see Image
	TimeoutSeconds int    // 0 when absent
	Nodes          []Node
	Edges          []Edge
	Form           Form
	Source         Source // hm extension: what the workspace holds beyond the source tree
	// Raw is the original IR bytes, forwarded verbatim by the remote backend.
	Raw []byte
}

// Node is one command step with its fully merged environment.
type Node struct {
	Step Step
	Env  map[string]string
}

// Step is a CommandStep.
type Step struct {
	Key            string
	Cmd            string
	Label          string
	Image          string
	TimeoutSeconds int
	Cache          *Cache
	Runner         string
	RunnerArgs     json.RawMessage
	Retry          *Retry // hm extension; nil: no policy (infrastructure errors retried once)
	// Artifacts (hm extension) are the step's artifact patterns, clean and relative to
	// /workspace; nil: none.
	Artifacts []string
	// Secrets are the names of the build's secrets the step sees as environment variables
	// (hm extension, see ValidSecretName); nil: none.
	Secrets []string
	// CacheDirs (hm extension) are absolute paths in the machine kept between builds (per
	// pipeline and path), mounted into the step, never part of its snapshot or key.
	CacheDirs []string
}

// Cache policy names.
const (
	PolicyNone     = "none"
	PolicyForever  = "forever"
	PolicyTTL      = "ttl"
	PolicyOnChange = "on_change"
	PolicyCompose  = "compose"
)

// Cache is a step's cache policy (spec/cache-keys.md).
type Cache struct {
	Policy          string   `json:"policy"`
	Key             string   `json:"key,omitempty"`
	DurationSeconds int64    `json:"duration_seconds,omitempty"`
	EnvKeys         []string `json:"env_keys,omitempty"`
	Paths           []string `json:"paths,omitempty"`
	SubPolicies     []Cache  `json:"sub_policies,omitempty"`
}

// EdgeKind is builds_in (lineage) or depends_on (ordering only).
type EdgeKind string

const (
	BuildsIn  EdgeKind = "builds_in"
	DependsOn EdgeKind = "depends_on"
)

// Edge orders From before To.
type Edge struct {
	From, To int
	Kind     EdgeKind
	// ContinueOnFailure marks a depends_on edge created by a flat-form `wait` barrier with
	// continue_on_failure: To runs once From has finished, whatever its outcome.
	ContinueOnFailure bool
}

// Image returns the image a root node starts from: its own, else the pipeline default, else
// FallbackImage.
func (p *Pipeline) Image(node int) string {
	if img := p.Nodes[node].Step.Image; img != "" {
		return img
	}
	if p.DefaultImage != "" {
		return p.DefaultImage
	}
	return FallbackImage
}

// Parent returns the builds_in parent of node, or -1 for a root.
func (p *Pipeline) Parent(node int) int {
	for _, e := range p.Edges {
		if e.To == node && e.Kind == BuildsIn {
			return e.From
		}
	}
	return -1
}
