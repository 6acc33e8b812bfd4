// Package yamlfe is hm's YAML front end: `.hm/*.yaml` files that map 1:1 onto the pipeline IR
// (spec/ir-v0.md). A file is parsed into the Go SDK's immutable pipeline value
// (github.com/hmci/hm/pipeline), which renders the IR, so a YAML pipeline and its Go twin
// render byte-identical IR. Every error names file:line:column and says how to fix it.
//
//	slug: ci                   # default: the file name without extension
//	default_image: debian:bookworm
//	timeout: 30m
//	env: {CI: "true"}
//	steps:
//	  - key: toolchain
//	    run: make tools
//	    cache: forever          # forever | none | {ttl: 24h} | {on_change: [go.sum]} | {compose: [...]}
//	    steps:                  # children: they start from toolchain's snapshot
//	      - key: test
//	        run: make test
//	        timeout: 10m
//	  - key: docs
//	    run: make docs
//	    after: [test]           # ordering only
//	  - wait: {continue_on_failure: true}
//	  - key: notify
//	    run: echo done
//
// A file may hold several pipelines as YAML documents separated by `---`, each with a slug.
package yamlfe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	goccy "github.com/goccy/go-yaml"
	goccyparser "github.com/goccy/go-yaml/parser"
	"gopkg.in/yaml.v3"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/pipeline"
)

// Pipeline is one pipeline of a YAML file.
type Pipeline struct {
	Slug string
	Name string // display name (`name:`), "" when absent; not part of the IR
	Def  pipeline.Pipeline
}

// Parse reads the pipelines of a YAML file. file names it in error messages; its base name
// without extension is the slug of a single pipeline that gives none.
func Parse(file string, data []byte) ([]Pipeline, error) {
	ps := &parser{file: file}
	if err := ps.precheck(data); err != nil {
		return nil, err
	}
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, ps.syntaxError(data, err)
		}
		if len(doc.Content) > 0 {
			docs = append(docs, doc.Content[0])
		}
	}
	if err := ps.measure(docs); err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, errs.New(errs.ErrInvalid, "yaml_invalid", "add a `steps:` list (run `hm init` for a starter)",
			"%s: no pipeline in the file", file)
	}
	stem := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	var out []Pipeline
	seen := map[string]*yaml.Node{}
	for _, doc := range docs {
		p, slugNode, err := ps.pipeline(doc, stem, len(docs) > 1)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[p.Slug]; dup {
			return nil, ps.errorf(slugNode, "give each pipeline of the file its own slug",
				"pipeline slug %q is already used at line %d", p.Slug, prev.Line)
		}
		seen[p.Slug] = slugNode
		out = append(out, p)
	}
	return out, nil
}

// Render renders p's IR with cache keys for the source directory dir (on_change paths) and org
// (HM_PIPELINE_ORG; "" for the default). Errors name file.
func Render(file string, p Pipeline, opts ...pipeline.RenderOption) ([]byte, error) {
	data, err := p.Def.IR(opts...)
	if err != nil {
		var e *errs.Error
		if errors.As(err, &e) {
			return nil, &errs.Error{Code: e.Code, Msg: file + ": " + e.Msg, Fix: e.Fix, Exit: e.Exit, Err: e}
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return data, nil
}

type parser struct {
	file string
}

func (ps *parser) errorf(n *yaml.Node, fix, format string, args ...any) error {
	return errs.New(errs.ErrInvalid, "yaml_invalid", fix, "%s:%d:%d: %s", ps.file, n.Line, n.Column, fmt.Sprintf(format, args...))
}

// syntaxError reports a YAML syntax error. yaml.v3 gives a line only (sometimes that of the
// enclosing block), so the position and wording come from goccy/go-yaml's parser when it
// agrees that the file is malformed.
func (ps *parser) syntaxError(data []byte, v3err error) error {
	const fix = "fix the YAML syntax at that position (indentation, quotes, a missing ':')"
	if strings.Contains(v3err.Error(), "exceeded max depth") { // the scan estimated low
		return ps.limit(errs.LimitDepth, MaxDepth, "the file nests collections more than %d deep", MaxDepth)
	}
	if _, err := goccyparser.ParseBytes(data, 0); err != nil {
		var ye goccy.Error
		if errors.As(err, &ye) && ye.GetToken() != nil {
			pos := ye.GetToken().Position
			return errs.New(errs.ErrInvalid, "yaml_syntax", fix, "%s:%d:%d: %s", ps.file, pos.Line, pos.Column, ye.GetMessage())
		}
	}
	msg := strings.TrimPrefix(v3err.Error(), "yaml: ")
	line := 0
	if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		return errs.New(errs.ErrInvalid, "yaml_syntax", fix, "%s:%d: %s", ps.file, line, msg)
	}
	return errs.New(errs.ErrInvalid, "yaml_syntax", fix, "%s: %s", ps.file, msg)
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

type field struct {
	key, val *yaml.Node
}

// fields returns the entries of a mapping in order, with `<<` merge keys expanded (explicit
// entries win) and duplicate keys rejected.
func (ps *parser) fields(n *yaml.Node, what string) ([]field, error) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		return nil, ps.errorf(n, fmt.Sprintf("write %s as a mapping of `name: value` lines", what), "%s must be a mapping, not %s", what, describe(n))
	}
	var out, merged []field
	index := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, ps.errorf(k, "use plain names as keys", "%s has a key that is not a plain name", what)
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			m, err := ps.mergeSources(v, what)
			if err != nil {
				return nil, err
			}
			merged = append(merged, m...)
			continue
		}
		if j, dup := index[k.Value]; dup {
			return nil, ps.errorf(k, fmt.Sprintf("remove one of the two %q entries", k.Value),
				"%q is given twice in %s (first at line %d)", k.Value, what, out[j].key.Line)
		}
		index[k.Value] = len(out)
		out = append(out, field{k, v})
	}
	for _, f := range merged {
		if _, ok := index[f.key.Value]; !ok {
			index[f.key.Value] = len(out)
			out = append(out, f)
		}
	}
	return out, nil
}

func (ps *parser) mergeSources(v *yaml.Node, what string) ([]field, error) {
	v = resolve(v)
	var srcs []*yaml.Node
	if v.Kind == yaml.SequenceNode {
		srcs = v.Content
	} else {
		srcs = []*yaml.Node{v}
	}
	var out []field
	for _, s := range srcs {
		fs, err := ps.fields(s, what)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// unknown reports an unknown field, suggesting the closest known one.
func (ps *parser) unknown(k *yaml.Node, where string, known []string) error {
	fix := "use one of: " + strings.Join(known, ", ")
	if s := closest(k.Value, known); s != "" {
		fix = fmt.Sprintf("did you mean %q? (known: %s)", s, strings.Join(known, ", "))
	}
	return ps.errorf(k, fix, "unknown field %q in %s", k.Value, where)
}

// closest returns the known name within edit distance 2 of s, or that s abbreviates, or "".
func closest(s string, known []string) string {
	s = strings.ToLower(s)
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" && len(s) >= 3 {
		for _, k := range known {
			if strings.HasPrefix(k, s) {
				return k
			}
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
