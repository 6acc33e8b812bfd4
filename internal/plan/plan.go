// Package plan turns a parsed pipeline into what the scheduler executes: per step its
// predecessors and successors, its builds_in parent, its chain and position in it (ir-v0.md §5),
// its display name and the environment it runs with.
package plan

import (
	"encoding/json"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/hmci/hm/internal/ir"
)

// Pred is one incoming edge of a step.
type Pred struct {
	Step int
	Kind ir.EdgeKind
	// Tolerant edges come from a continue_on_failure barrier: satisfied once Step has ended,
	// whatever its outcome.
	Tolerant bool
}

// Step is one node of the plan. Indexes are the IR node indexes.
type Step struct {
	Index       int
	Key         string
	DisplayName string
	Cmd         string
	// Parent is the builds_in parent's index, or -1 for a root.
	Parent int
	// Image is the image of a root step (already defaulted), "" for a child.
	Image string
	// Env is the node env as sorted "K=V" entries.
	Env     []string
	Timeout time.Duration // 0: none
	Cache   *ir.Cache
	// Runner is the executor the step asks for ("" or "default": any); RunnerArgs are that
	// runner's arguments, opaque here. The local executor runs a build on one VM backend and
	// refuses a step that names another; its backends take no arguments (ir-v0.md §1).
	Runner     string
	RunnerArgs json.RawMessage
	// Retry is the step's retry policy (ir.Retry), nil when it has none.
	Retry *ir.Retry
	// Artifacts are the step's artifact patterns (ir.Step.Artifacts), nil when it has none.
	Artifacts []string
	// Secrets are the names of the secrets the step sees (ir.Step.Secrets).
	Secrets []string
	// CacheDirs are the step's cache_dirs (ir.Step.CacheDirs).
	CacheDirs []string
	Preds     []Pred
	Succs     []int
	// Children are the builds_in children.
	Children []int
	// Chain is the chain's number; ChainIdx the step's position in it.
	Chain, ChainIdx int
	// BehindBarrier is set for steps behind a continue_on_failure barrier (a tolerant
	// predecessor): they run even after a failure in fail-fast mode.
	BehindBarrier bool
}

// Plan is an executable pipeline.
type Plan struct {
	Pipeline *ir.Pipeline
	Steps    []Step
	Chains   [][]int
	// Order is a topological order of the steps (predecessors first).
	Order   []int
	Timeout time.Duration // pipeline timeout_seconds; 0: none
}

// New builds the plan of a validated pipeline.
func New(p *ir.Pipeline) *Plan {
	pl := &Plan{Pipeline: p, Steps: make([]Step, len(p.Nodes))}
	if p.TimeoutSeconds > 0 {
		pl.Timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	for i, n := range p.Nodes {
		s := &pl.Steps[i]
		*s = Step{
			Index:       i,
			Key:         n.Step.Key,
			DisplayName: DisplayName(n.Step),
			Cmd:         n.Step.Cmd,
			Parent:      -1,
			Env:         envList(n.Env),
			Cache:       n.Step.Cache,
			Runner:      n.Step.Runner,
			RunnerArgs:  n.Step.RunnerArgs,
			Retry:       n.Step.Retry,
			Artifacts:   n.Step.Artifacts,
			Secrets:     n.Step.Secrets,
			CacheDirs:   n.Step.CacheDirs,
		}
		if n.Step.TimeoutSeconds > 0 {
			s.Timeout = time.Duration(n.Step.TimeoutSeconds) * time.Second
		}
	}
	seen := map[[2]int]int{} // dedupe parallel edges; keep the strictest
	for _, e := range p.Edges {
		from, to := &pl.Steps[e.From], &pl.Steps[e.To]
		if e.Kind == ir.BuildsIn {
			to.Parent = e.From
			from.Children = append(from.Children, e.To)
		}
		k := [2]int{e.From, e.To}
		if j, ok := seen[k]; ok {
			pr := &to.Preds[j]
			pr.Tolerant = pr.Tolerant && e.ContinueOnFailure && e.Kind != ir.BuildsIn
			if e.Kind == ir.BuildsIn {
				pr.Kind = ir.BuildsIn
			}
			continue
		}
		seen[k] = len(to.Preds)
		to.Preds = append(to.Preds, Pred{Step: e.From, Kind: e.Kind, Tolerant: e.ContinueOnFailure && e.Kind != ir.BuildsIn})
		from.Succs = append(from.Succs, e.To)
	}
	for i := range pl.Steps {
		s := &pl.Steps[i]
		if s.Parent < 0 {
			s.Image = p.Image(i)
		}
		for _, pr := range s.Preds {
			if pr.Tolerant {
				s.BehindBarrier = true
			}
		}
	}
	pl.assignChains()
	pl.Order = topoOrder(pl.Steps)
	return pl
}

// topoOrder is Kahn's algorithm, stable in index order; the pipeline is known to be acyclic.
func topoOrder(steps []Step) []int {
	indeg := make([]int, len(steps))
	for i := range steps {
		indeg[i] = len(steps[i].Preds)
	}
	order := make([]int, 0, len(steps))
	for i := range steps {
		if indeg[i] == 0 {
			order = append(order, i)
		}
	}
	for k := 0; k < len(order); k++ {
		for _, s := range steps[order[k]].Succs {
			indeg[s]--
			if indeg[s] == 0 {
				order = append(order, s)
			}
		}
	}
	return order
}

// assignChains implements ir-v0.md §5: walk nodes in index order; an unassigned node starts a
// chain, which continues while the current node has exactly one builds_in child that is
// unassigned and has no other predecessor.
func (pl *Plan) assignChains() {
	assigned := make([]bool, len(pl.Steps))
	for i := range pl.Steps {
		if assigned[i] {
			continue
		}
		chain := []int{}
		for cur := i; ; {
			assigned[cur] = true
			pl.Steps[cur].Chain = len(pl.Chains)
			pl.Steps[cur].ChainIdx = len(chain)
			chain = append(chain, cur)
			kids := pl.Steps[cur].Children
			if len(kids) != 1 || assigned[kids[0]] || len(pl.Steps[kids[0]].Preds) != 1 {
				break
			}
			cur = kids[0]
		}
		pl.Chains = append(pl.Chains, chain)
	}
}

// DisplayName is the step's label, or its command trimmed to 40 characters (39 + "…").
func DisplayName(s ir.Step) string {
	if s.Label != "" {
		return s.Label
	}
	if utf8.RuneCountInString(s.Cmd) <= 40 {
		return s.Cmd
	}
	r := []rune(s.Cmd)
	return string(r[:39]) + "…"
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
