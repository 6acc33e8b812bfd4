package ir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// Known runners. A step's runner selects its executor: the plan carries it (and runner_args)
// to the executor, which refuses a step it cannot run there (the local one runs a build on one
// VM backend); a runner hm does not know is a plan error (spec).
var knownRunners = map[string]bool{"": true, "default": true, "docker": true, "sandbox": true, "host": true}

type rawGraphIR struct {
	Version        *string           `json:"version"`
	DefaultImage   *string           `json:"default_image"`
	TimeoutSeconds *json.Number      `json:"timeout_seconds"`
	Graph          *rawGraph         `json:"graph"`
	Steps          *[]rawStep        `json:"steps"`
	Env            map[string]string `json:"env"`
	Source         json.RawMessage   `json:"source"` // hm extension
}

type rawGraph struct {
	Nodes        []rawNode           `json:"nodes"`
	NodeHoles    []json.RawMessage   `json:"node_holes"`
	EdgeProperty *string             `json:"edge_property"`
	Edges        [][]json.RawMessage `json:"edges"`
}

type rawNode struct {
	Step *rawStep          `json:"step"`
	Env  map[string]string `json:"env"`
}

type rawEval struct {
	Type string  `json:"type"`
	Cmd  *string `json:"cmd"`
}

type rawStep struct {
	Type              string            `json:"type"` // flat form: "command" | "wait"
	Key               *string           `json:"key"`
	Cmd               *string           `json:"cmd"`
	Eval              *rawEval          `json:"eval"`
	Label             *string           `json:"label"`
	Image             *string           `json:"image"`
	TimeoutSeconds    *json.Number      `json:"timeout_seconds"`
	Cache             *Cache            `json:"cache"`
	Runner            *string           `json:"runner"`
	RunnerArgs        json.RawMessage   `json:"runner_args"`
	Env               map[string]string `json:"env"`
	BuildsIn          *string           `json:"builds_in"`
	ContinueOnFailure bool              `json:"continue_on_failure"`
	Retry             json.RawMessage   `json:"retry"`      // hm extension
	Artifacts         json.RawMessage   `json:"artifacts"`  // hm extension
	Secrets           json.RawMessage   `json:"secrets"`    // hm extension
	CacheDirs         []string          `json:"cache_dirs"` // hm extension
}

func invalid(code, fix, format string, args ...any) error {
	return errs.New(errs.ErrInvalid, code, fix, format, args...)
}

// Parse decodes and validates IR bytes in either encoding. Every error is an *errs.Error of
// class errs.ErrInvalid that names the offending step or edge and says how to fix it.
func Parse(data []byte) (*Pipeline, error) {
	if err := precheck(data); err != nil {
		return nil, err
	}
	var raw rawGraphIR
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid("ir_malformed", "check the file is the JSON rendered by a pipeline front end",
			"pipeline IR is not valid JSON: %s", describeJSONError(data, err))
	}
	if dec.More() {
		return nil, invalid("ir_malformed", "the IR must be exactly one JSON object",
			"pipeline IR has data after the top-level object")
	}
	if raw.Version == nil {
		return nil, invalid("ir_version", `add "version": "0" at the top level`, "pipeline IR has no version")
	}
	if *raw.Version != "0" {
		return nil, invalid("ir_version", `render the pipeline with a front end that emits IR version "0", or upgrade hm`,
			"unsupported IR version %q (hm reads version \"0\")", *raw.Version)
	}
	p := &Pipeline{Version: "0", Raw: append([]byte(nil), data...)}
	if raw.DefaultImage != nil {
		p.DefaultImage = *raw.DefaultImage
	}
	if raw.TimeoutSeconds != nil {
		n, err := positiveInt(*raw.TimeoutSeconds)
		if err != nil {
			return nil, invalid("ir_timeout", "set the pipeline's timeout_seconds to a whole number of seconds >= 1, or remove it",
				"pipeline timeout_seconds %s is invalid: %v", raw.TimeoutSeconds.String(), err)
		}
		p.TimeoutSeconds = n
	}
	var err error
	if p.Source, err = convertSource(raw.Source); err != nil {
		return nil, err
	}
	switch {
	case raw.Graph != nil && raw.Steps != nil:
		return nil, invalid("ir_malformed", "keep either graph (current form) or steps (flat form)",
			"pipeline IR has both \"graph\" and \"steps\"")
	case raw.Graph != nil:
		p.Form = FormGraph
		err = parseGraph(p, raw.Graph)
	case raw.Steps != nil:
		p.Form = FormFlat
		err = parseFlat(p, *raw.Steps, raw.Env)
	default:
		return nil, invalid("ir_malformed", `render the pipeline again; the IR needs "graph" (or the older "steps")`,
			"pipeline IR has neither \"graph\" nor \"steps\"")
	}
	if err != nil {
		return nil, err
	}
	if err := validate(p); err != nil {
		return nil, err
	}
	return p, nil
}

func describeJSONError(data []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := lineCol(data, se.Offset)
		return fmt.Sprintf("%v at line %d, column %d", se, line, col)
	case errors.As(err, &te):
		line, col := lineCol(data, te.Offset)
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("%s must be %s, not %s (line %d, column %d)", field, te.Type, te.Value, line, col)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		line, col := lineCol(data, int64(len(data)))
		return fmt.Sprintf("unexpected end of input at line %d, column %d", line, col)
	}
	return err.Error()
}

func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func positiveInt(n json.Number) (int, error) {
	f, err := n.Float64()
	if err != nil {
		return 0, fmt.Errorf("not a number")
	}
	if f != math.Trunc(f) {
		return 0, fmt.Errorf("not a whole number")
	}
	if f < 1 {
		return 0, fmt.Errorf("must be >= 1")
	}
	if f > math.MaxInt32 {
		return 0, fmt.Errorf("too large")
	}
	return int(f), nil
}

func stepName(i int, s *rawStep) string {
	if s != nil && s.Key != nil && *s.Key != "" {
		return fmt.Sprintf("step %q", *s.Key)
	}
	return fmt.Sprintf("step #%d", i)
}

// convertStep validates the fields of one command step.
func convertStep(i int, s *rawStep) (Step, error) {
	name := stepName(i, s)
	if s.Key == nil || *s.Key == "" {
		return Step{}, invalid("ir_missing_key", "give every step a unique, non-empty key",
			"%s has no key", name)
	}
	st := Step{Key: *s.Key, RunnerArgs: s.RunnerArgs}
	switch {
	case s.Cmd != nil:
		st.Cmd = *s.Cmd
	case s.Eval != nil && s.Eval.Cmd != nil:
		if s.Eval.Type != "" && s.Eval.Type != "cmd" {
			return Step{}, invalid("ir_missing_cmd", `use "eval": {"type": "cmd", "cmd": "..."} or a plain "cmd"`,
				"%s has eval of unsupported type %q", name, s.Eval.Type)
		}
		st.Cmd = *s.Eval.Cmd
	default:
		return Step{}, invalid("ir_missing_cmd", `give the step a "cmd" (or "eval": {"type": "cmd", "cmd": "..."})`,
			"%s has no cmd", name)
	}
	if s.Label != nil {
		st.Label = *s.Label
	}
	if s.Image != nil {
		st.Image = *s.Image
	}
	if s.TimeoutSeconds != nil {
		n, err := positiveInt(*s.TimeoutSeconds)
		if err != nil {
			return Step{}, invalid("ir_timeout", "set timeout_seconds to a whole number of seconds >= 1, or remove it",
				"%s has invalid timeout_seconds %s: %v", name, s.TimeoutSeconds.String(), err)
		}
		st.TimeoutSeconds = n
	}
	if s.Runner != nil {
		st.Runner = *s.Runner
		if !knownRunners[st.Runner] {
			return Step{}, invalid("ir_runner", "remove runner, or use one of: docker, sandbox, host",
				"%s names unknown runner %q", name, st.Runner)
		}
	}
	if s.Cache != nil {
		if err := validateCache(name, s.Cache); err != nil {
			return Step{}, err
		}
		c := *s.Cache
		st.Cache = &c
	}
	r, err := convertRetry(name, s.Retry)
	if err != nil {
		return Step{}, err
	}
	st.Retry = r
	if st.Artifacts, err = convertArtifacts(name, s.Artifacts); err != nil {
		return Step{}, err
	}
	if st.Secrets, err = convertSecrets(name, s.Secrets); err != nil {
		return Step{}, err
	}
	if st.CacheDirs, err = convertCacheDirs(name, s.CacheDirs); err != nil {
		return Step{}, err
	}
	return st, nil
}

func validateCache(name string, c *Cache) error {
	switch c.Policy {
	case PolicyNone, PolicyForever, PolicyOnChange:
	case PolicyTTL:
		if c.DurationSeconds < 1 {
			return invalid("ir_cache_policy", "give a ttl policy duration_seconds >= 1",
				"%s has a ttl cache policy without a positive duration_seconds", name)
		}
	case PolicyCompose:
		for i := range c.SubPolicies {
			if c.SubPolicies[i].Policy == PolicyCompose {
				return invalid("ir_cache_policy", "flatten nested compose policies into one",
					"%s nests a compose cache policy inside compose", name)
			}
			if err := validateCache(name, &c.SubPolicies[i]); err != nil {
				return err
			}
		}
	default:
		return invalid("ir_cache_policy", "use one of the cache policies: none, forever, ttl, on_change, compose",
			"%s has unknown cache policy %q", name, c.Policy)
	}
	if c.Key != "" && !isHex(c.Key) {
		return invalid("ir_cache_policy", "leave cache.key out to let hm compute it, or render the pipeline again",
			"%s has cache key %q that is not lowercase hex", name, c.Key)
	}
	return nil
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func parseGraph(p *Pipeline, g *rawGraph) error {
	if len(g.NodeHoles) > 0 {
		return invalid("ir_malformed", "render the pipeline again; node_holes must be empty",
			"graph.node_holes is not empty (%d holes)", len(g.NodeHoles))
	}
	if g.EdgeProperty != nil && *g.EdgeProperty != "directed" {
		return invalid("ir_malformed", `set graph.edge_property to "directed"`,
			"graph.edge_property is %q", *g.EdgeProperty)
	}
	if len(g.Nodes) > MaxSteps {
		return limit(errs.LimitSteps, MaxSteps, "the pipeline has %d steps, more than %d", len(g.Nodes), MaxSteps)
	}
	if len(g.Edges) > MaxEdges {
		return limit(errs.LimitEdges, MaxEdges, "the pipeline has %d edges, more than %d", len(g.Edges), MaxEdges)
	}
	for i, n := range g.Nodes {
		if n.Step == nil {
			return invalid("ir_missing_key", `every node needs a "step" object`, "node #%d has no step", i)
		}
		st, err := convertStep(i, n.Step)
		if err != nil {
			return err
		}
		env := n.Env
		if env == nil {
			env = map[string]string{}
		}
		if err := checkStep(st, env); err != nil {
			return err
		}
		p.Nodes = append(p.Nodes, Node{Step: st, Env: env})
	}
	for i, raw := range g.Edges {
		if len(raw) != 3 {
			return invalid("ir_edge", "write each edge as [from, to, \"builds_in\"|\"depends_on\"]",
				"edge #%d has %d elements, want 3", i, len(raw))
		}
		var from, to int
		var kind string
		if json.Unmarshal(raw[0], &from) != nil || json.Unmarshal(raw[1], &to) != nil {
			return invalid("ir_edge", "edge endpoints are node indexes (whole numbers)",
				"edge #%d has non-integer endpoints %s, %s", i, raw[0], raw[1])
		}
		if json.Unmarshal(raw[2], &kind) != nil {
			return invalid("ir_edge", `use "builds_in" or "depends_on"`, "edge #%d has a kind that is not a string: %s", i, raw[2])
		}
		n := len(p.Nodes)
		if from < 0 || from >= n || to < 0 || to >= n {
			return invalid("ir_edge", fmt.Sprintf("edge endpoints must be node indexes 0..%d", n-1),
				"edge #%d [%d, %d] points outside the %d nodes", i, from, to, n)
		}
		k := EdgeKind(kind)
		if k != BuildsIn && k != DependsOn {
			return invalid("ir_edge", `use "builds_in" or "depends_on"`,
				"edge #%d %s → %s has unknown kind %q", i, p.Nodes[from].Step.Key, p.Nodes[to].Step.Key, kind)
		}
		p.Edges = append(p.Edges, Edge{From: from, To: to, Kind: k})
	}
	return nil
}

func parseFlat(p *Pipeline, steps []rawStep, pipeEnv map[string]string) error {
	index := map[string]int{}
	var before []int    // command steps since the previous barrier
	var barrier []int   // predecessors imposed by the last barrier
	var barrierCOF bool // that barrier's continue_on_failure
	envTotal := 0
	for i := range steps {
		s := &steps[i]
		switch s.Type {
		case "wait":
			if len(before) > 0 {
				barrier, barrierCOF = before, s.ContinueOnFailure
			} else {
				barrierCOF = barrierCOF || s.ContinueOnFailure
			}
			before = nil
			continue
		case "command", "":
		default:
			return invalid("ir_malformed", `flat-form steps have "type": "command" or "wait"`,
				"%s has unknown type %q", stepName(i, s), s.Type)
		}
		st, err := convertStep(i, s)
		if err != nil {
			return err
		}
		if envTotal += len(pipeEnv) + len(s.Env); envTotal > MaxEnvTotal {
			return limit(errs.LimitEnv, MaxEnvTotal, "the pipeline's steps have more than %d environment entries in all (the pipeline's env is merged into each step's)", MaxEnvTotal)
		}
		env := map[string]string{}
		for k, v := range pipeEnv {
			env[k] = v
		}
		for k, v := range s.Env {
			env[k] = v
		}
		if err := checkStep(st, env); err != nil {
			return err
		}
		node := len(p.Nodes)
		if node >= MaxSteps {
			return limit(errs.LimitSteps, MaxSteps, "the pipeline has more than %d steps", MaxSteps)
		}
		if len(p.Edges)+len(barrier)+1 > MaxEdges {
			return limit(errs.LimitEdges, MaxEdges, "the pipeline has more than %d edges (a wait barrier orders every step after it behind every step before it)", MaxEdges)
		}
		if _, dup := index[st.Key]; !dup {
			index[st.Key] = node
		}
		p.Nodes = append(p.Nodes, Node{Step: st, Env: env})
		if s.BuildsIn != nil {
			parent, ok := index[*s.BuildsIn]
			if !ok || parent == node {
				fix := fmt.Sprintf("name a step defined before %q, or set builds_in to null", st.Key)
				if later := laterKey(steps[i+1:], *s.BuildsIn); later {
					return invalid("ir_builds_in", fix, "step %q builds_in %q, which comes later; a parent must come first", st.Key, *s.BuildsIn)
				}
				return invalid("ir_builds_in", fix, "step %q builds_in unknown step %q", st.Key, *s.BuildsIn)
			}
			p.Edges = append(p.Edges, Edge{From: parent, To: node, Kind: BuildsIn})
		}
		for _, b := range barrier {
			p.Edges = append(p.Edges, Edge{From: b, To: node, Kind: DependsOn, ContinueOnFailure: barrierCOF})
		}
		before = append(before, node)
	}
	return nil
}

func laterKey(steps []rawStep, key string) bool {
	for _, s := range steps {
		if s.Key != nil && *s.Key == key {
			return true
		}
	}
	return false
}

// validate checks the rules that span steps: unique keys, one builds_in parent, no self edge,
// no cycle.
func validate(p *Pipeline) error {
	seen := map[string]int{}
	for i, n := range p.Nodes {
		if j, dup := seen[n.Step.Key]; dup {
			return invalid("ir_duplicate_key", "give every step a unique key",
				"steps #%d and #%d share the key %q", j, i, n.Step.Key)
		}
		seen[n.Step.Key] = i
	}
	parent := make([]int, len(p.Nodes))
	for i := range parent {
		parent[i] = -1
	}
	for _, e := range p.Edges {
		if e.From == e.To {
			return invalid("ir_self_edge", "remove the edge; a step cannot wait for itself",
				"step %q has an edge to itself (%s)", p.Nodes[e.From].Step.Key, e.Kind)
		}
		if e.Kind == BuildsIn {
			if parent[e.To] >= 0 && parent[e.To] != e.From {
				return invalid("ir_builds_in", "keep one builds_in parent and make the other a depends_on edge",
					"step %q has more than one builds_in parent: %q and %q",
					p.Nodes[e.To].Step.Key, p.Nodes[parent[e.To]].Step.Key, p.Nodes[e.From].Step.Key)
			}
			parent[e.To] = e.From
		}
	}
	if cyc := findCycle(p); cyc != nil {
		keys := make([]string, len(cyc))
		for i, n := range cyc {
			keys[i] = p.Nodes[n].Step.Key
		}
		return invalid("ir_cycle", "remove one of the edges on the cycle",
			"steps form a cycle: %s", strings.Join(keys, " → "))
	}
	return nil
}

// findCycle returns the nodes of one cycle with the first repeated at the end, or nil.
func findCycle(p *Pipeline) []int {
	succ := make([][]int, len(p.Nodes))
	for _, e := range p.Edges {
		succ[e.From] = append(succ[e.From], e.To)
	}
	const (
		white = iota
		grey
		black
	)
	color := make([]uint8, len(p.Nodes))
	// Iterative DFS: pipelines can be deep (10,000-step chains) and must not blow the stack.
	type frame struct{ node, next int }
	for start := range p.Nodes {
		if color[start] != white {
			continue
		}
		stack := []frame{{start, 0}}
		color[start] = grey
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next < len(succ[top.node]) {
				n := succ[top.node][top.next]
				top.next++
				switch color[n] {
				case white:
					color[n] = grey
					stack = append(stack, frame{n, 0})
				case grey:
					var cyc []int
					for i := len(stack) - 1; i >= 0; i-- {
						cyc = append([]int{stack[i].node}, cyc...)
						if stack[i].node == n {
							break
						}
					}
					return append(cyc, n)
				}
				continue
			}
			color[top.node] = black
			stack = stack[:len(stack)-1]
		}
	}
	return nil
}
