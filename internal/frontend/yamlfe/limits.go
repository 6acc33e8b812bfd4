package yamlfe

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/hmci/hm/internal/errs"
)

// Bounds on a YAML pipeline file, checked before the work they bound (schema/README.md). A
// pipeline written by hand is far below each; the bounds exist so that a hostile or broken
// file is refused in bounded memory and time.
const (
	// MaxBytes is the largest file read. The decoded tree costs about 200 bytes a node and a
	// node can be 2 bytes (`[0,0,…]`), so this bounds the decoder's memory near 60 MB.
	MaxBytes = 512 << 10
	// MaxDepth bounds the nesting of collections, counted with aliases expanded.
	MaxDepth = 64
	// MaxNodes bounds the nodes of a file's documents with every alias and merge key
	// expanded each time it is used (a billion laughs is refused by arithmetic).
	MaxNodes = 250_000
	// MaxSteps and MaxEdges bound a pipeline's steps and the edges its steps and wait
	// barriers imply (a barrier orders everything after it behind everything before it).
	MaxSteps = 50_000
	MaxEdges = 250_000
)

func (ps *parser) limit(limit string, max int64, format string, args ...any) error {
	return &errs.LimitError{Format: "yaml", File: ps.file, Limit: limit, Max: max, Msg: fmt.Sprintf(format, args...)}
}

// precheck refuses a file too large or too deeply nested, before it is decoded.
func (ps *parser) precheck(data []byte) error {
	if len(data) > MaxBytes {
		return ps.limit(errs.LimitSize, MaxBytes, "the file is %d bytes, more than the %d (%s) hm reads", len(data), MaxBytes, "512 KiB")
	}
	if line := scanDepth(data, MaxDepth); line > 0 {
		return ps.limit(errs.LimitDepth, MaxDepth, "line %d nests collections more than %d deep", line, MaxDepth)
	}
	return nil
}

// blockLevel is an open block collection of scanDepth.
type blockLevel struct {
	col int
	seq bool
}

// depthScanner estimates nesting without building a tree: block collections by the columns
// of their indicators (`- `, `key:`), flow collections by their brackets outside quoted
// scalars, comments and block scalars. It errs high on odd input (a plain scalar's
// continuation line starting with `[`); the decoded tree is measured exactly afterwards.
type depthScanner struct {
	stack       []blockLevel
	flow        int
	quote       byte // a quoted scalar open across lines
	start       bool // the next character may start a scalar
	blockParent int  // >= 0 while in a block scalar: the indentation of the line opening it
	blockIndent int  // the block scalar's content indentation, 0 until its first line
	max, line   int
	deep        bool
}

// scanDepth returns the first line on which the estimated depth exceeds max, or 0.
func scanDepth(data []byte, max int) int {
	s := depthScanner{max: max, blockParent: -1}
	for len(data) > 0 && !s.deep {
		s.line++
		ln := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			ln, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		s.scanLine(bytes.TrimSuffix(ln, []byte{'\r'}))
	}
	if s.deep {
		return s.line
	}
	return 0
}

func (s *depthScanner) check() {
	if len(s.stack)+s.flow > s.max {
		s.deep = true
	}
}

func (s *depthScanner) scanLine(ln []byte) {
	indent := 0
	for indent < len(ln) && ln[indent] == ' ' {
		indent++
	}
	if s.blockParent >= 0 {
		switch {
		case indent == len(ln): // blank: part of the scalar
			return
		case s.blockIndent == 0 && indent > s.blockParent:
			s.blockIndent = indent
			return
		case s.blockIndent > 0 && indent >= s.blockIndent:
			return
		}
		s.blockParent = -1
	}
	if s.quote != 0 || s.flow > 0 {
		s.scanFlow(ln, 0, indent)
		return
	}
	if indent == len(ln) || ln[indent] == '#' {
		return
	}
	p := indent
	if indent == 0 && (bytes.HasPrefix(ln, []byte("---")) || bytes.HasPrefix(ln, []byte("..."))) && (len(ln) == 3 || ln[3] == ' ') {
		s.stack = s.stack[:0] // a new document
		s.start = true
		s.scanFlow(ln, 3, indent)
		return
	}
	for len(s.stack) > 0 && s.stack[len(s.stack)-1].col > indent {
		s.stack = s.stack[:len(s.stack)-1]
	}
	// Compact sequences and explicit keys: `- - key: v`, `? k`.
	for p < len(ln) && (ln[p] == '-' || ln[p] == '?') && (p+1 == len(ln) || ln[p+1] == ' ') {
		s.push(p, ln[p] == '-')
		for p++; p < len(ln) && ln[p] == ' '; p++ {
		}
	}
	if c := keyEnd(ln, p); c > 0 {
		for len(s.stack) > 0 && s.stack[len(s.stack)-1].col == p && s.stack[len(s.stack)-1].seq {
			s.stack = s.stack[:len(s.stack)-1] // a key at a compact sequence's column ends it
		}
		s.push(p, false)
		p = c
	}
	s.start = true
	s.scanFlow(ln, p, indent)
}

func (s *depthScanner) push(col int, seq bool) {
	if n := len(s.stack); n > 0 && s.stack[n-1].col == col && s.stack[n-1].seq == seq {
		return
	}
	if n := len(s.stack); n > 0 && s.stack[n-1].col > col {
		return
	}
	s.stack = append(s.stack, blockLevel{col, seq})
	s.check()
}

// keyEnd returns the index after `key:` when ln[p:] starts with a block mapping key, else 0.
func keyEnd(ln []byte, p int) int {
	if p >= len(ln) {
		return 0
	}
	i := p
	switch ln[p] {
	case '[', '{', '#', '|', '>':
		return 0
	case '\'', '"':
		j := bytes.IndexByte(ln[p+1:], ln[p])
		if j < 0 {
			return 0
		}
		i = p + 1 + j + 1
	}
	for ; i < len(ln); i++ {
		switch {
		case ln[i] == '#' && i > p && ln[i-1] == ' ':
			return 0
		case ln[i] == ':' && (i+1 == len(ln) || ln[i+1] == ' '):
			return i + 1
		}
	}
	return 0
}

// scanFlow follows flow brackets, quotes and comments from ln[p:].
func (s *depthScanner) scanFlow(ln []byte, p, indent int) {
	for i := p; i < len(ln) && !s.deep; i++ {
		c := ln[i]
		if s.quote != 0 {
			switch {
			case s.quote == '"' && c == '\\':
				i++
			case c == s.quote && s.quote == '\'' && i+1 < len(ln) && ln[i+1] == '\'':
				i++
			case c == s.quote:
				s.quote, s.start = 0, false
			}
			continue
		}
		switch {
		case c == ' ' || c == '\t':
		case c == '#' && (i == 0 || ln[i-1] == ' ' || ln[i-1] == '\t'):
			return
		case s.start && (c == '\'' || c == '"'):
			s.quote = c
		case s.start && s.flow == 0 && (c == '|' || c == '>'):
			s.blockParent, s.blockIndent = indent, 0
			return
		case s.start && (c == '&' || c == '!'): // an anchor or tag before the node
			for i+1 < len(ln) && ln[i+1] != ' ' {
				i++
			}
		case c == '[' || c == '{':
			if s.flow > 0 || s.start {
				s.flow++
				s.start = true
				s.check()
			} else {
				s.start = false
			}
		case c == ']' || c == '}':
			if s.flow > 0 {
				s.flow--
			}
			s.start = false
		case s.flow > 0 && (c == ',' || c == ':' || c == '?'):
			s.start = true
		default:
			s.start = false
		}
	}
}

// measure walks the decoded documents as the parser does, aliases followed, and refuses what
// is too deep or too large once expanded. An alias is charged its target's expanded size,
// computed once, and an alias inside its own anchor is a cycle: neither is expanded here.
func (ps *parser) measure(docs []*yaml.Node) error {
	type memo struct {
		size  int64
		depth int
		state uint8 // 1 on the walk's stack, 2 done
	}
	seen := map[*yaml.Node]*memo{}
	type frame struct {
		n    *yaml.Node
		next int
	}
	kids := func(n *yaml.Node) []*yaml.Node {
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil {
				return nil
			}
			return []*yaml.Node{n.Alias}
		}
		return n.Content
	}
	var total int64
	for _, doc := range docs {
		stack := []frame{{doc, 0}}
		seen[doc] = &memo{state: 1}
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if ks := kids(top.n); top.next < len(ks) {
				k := ks[top.next]
				top.next++
				m := seen[k]
				switch {
				case m == nil:
					seen[k] = &memo{state: 1}
					stack = append(stack, frame{k, 0})
				case m.state == 1:
					return ps.errorf(top.n, "an alias cannot refer to a node that contains it",
						"alias *%s refers to a node that contains it", top.n.Value)
				}
				continue
			}
			m := seen[top.n]
			m.size, m.state = 1, 2
			for _, k := range kids(top.n) {
				km := seen[k]
				m.size = min(m.size+km.size, MaxNodes+1)
				m.depth = max(m.depth, km.depth)
			}
			if top.n.Kind != yaml.AliasNode {
				m.depth++
			}
			if m.depth > MaxDepth {
				return ps.limit(errs.LimitDepth, MaxDepth, "line %d nests collections more than %d deep (aliases expanded)", top.n.Line, MaxDepth)
			}
			stack = stack[:len(stack)-1]
		}
		total += seen[doc].size
		if total > MaxNodes {
			return ps.limit(errs.LimitAliases, MaxNodes, "the file expands to more than %d YAML nodes (aliases and merge keys counted each time they are used)", MaxNodes)
		}
	}
	return nil
}

// countEdges refuses a pipeline with more steps, or more edges implied by its steps, `after`
// and wait barriers, than hm takes: a barrier between 5,000 steps and 5,000 more is 25
// million edges.
func (ps *parser) countEdges(d *pipelineDef) error {
	var steps, edges, before, since int64
	var walk func(s *stepDef) int64
	walk = func(s *stepDef) int64 {
		n := int64(1)
		edges += int64(len(s.after))
		for _, c := range s.children {
			edges++
			n += walk(c)
		}
		return n
	}
	for _, it := range d.items {
		if it.wait != nil {
			if since > 0 {
				before, since = since, 0
			}
			continue
		}
		n := walk(it.step)
		steps += n
		since += n
		edges += before * n
		if steps > MaxSteps {
			return ps.limit(errs.LimitSteps, MaxSteps, "pipeline %q has more than %d steps", d.slug, MaxSteps)
		}
		if edges > MaxEdges {
			return ps.limit(errs.LimitEdges, MaxEdges, "pipeline %q has more than %d edges (a wait barrier orders every step after it behind every step before it)", d.slug, MaxEdges)
		}
	}
	return nil
}
