package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// Environment variables of the protocol between hm and a `.hm/` Go main package.
const (
	// EnvelopeEnv set to "1" asks Main for the envelope of every pipeline instead of one IR.
	EnvelopeEnv = "HM_RENDER_ENVELOPE"
	// SourceDirEnv is the source directory on_change paths are relative to. hm sets it because
	// `go run` runs the program in the .hm directory.
	SourceDirEnv = "HM_SOURCE_DIR"
)

// Envelope lists rendered pipelines. It has the shape of the harmont DSLs'
// dump_registry_json() ("schema_version": "1"), so hm reads every front end's output alike.
type Envelope struct {
	SchemaVersion string          `json:"schema_version"`
	Pipelines     []EnvelopeEntry `json:"pipelines"`
}

// EnvelopeEntry is one pipeline of an Envelope; Definition is its IR.
type EnvelopeEntry struct {
	Slug       string          `json:"slug"`
	Name       string          `json:"name"`
	Definition json.RawMessage `json:"definition"`
}

// Main is the main function of a `.hm/` Go package: it prints the IR of the pipeline named by
// the first argument (or of the only one), or, when hm asks with HM_RENDER_ENVELOPE=1, the
// envelope of all of them. On error it prints the error and exits with status 1.
func Main(pipelines ...Pipeline) {
	if err := run(os.Stdout, os.Args[1:], os.Getenv, pipelines); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, args []string, getenv func(string) string, pipelines []Pipeline) error {
	var opts []RenderOption
	if dir := getenv(SourceDirEnv); dir != "" {
		opts = append(opts, WithDir(dir))
	}
	seen := map[string]bool{}
	var slugs []string
	for _, p := range pipelines {
		if seen[p.slug] {
			return fmt.Errorf("two pipelines have the slug %q", p.slug)
		}
		seen[p.slug] = true
		slugs = append(slugs, p.slug)
	}
	if getenv(EnvelopeEnv) == "1" {
		return writeEnvelope(w, pipelines, opts)
	}
	switch {
	case len(args) > 1:
		return fmt.Errorf("usage: go run ./.hm [PIPELINE]")
	case len(args) == 1:
		for _, p := range pipelines {
			if p.slug == args[0] {
				return p.Render(w, opts...)
			}
		}
		return fmt.Errorf("no pipeline %q (have: %s)", args[0], strings.Join(slugs, ", "))
	case len(pipelines) == 1:
		return pipelines[0].Render(w, opts...)
	case len(pipelines) == 0:
		return fmt.Errorf("no pipelines given to pipeline.Main")
	}
	return fmt.Errorf("%d pipelines (%s): name the one to print", len(pipelines), strings.Join(slugs, ", "))
}

// writeEnvelope writes the envelope by hand: encoding/json would compact the definitions, and
// hm shows them as rendered.
func writeEnvelope(w io.Writer, pipelines []Pipeline, opts []RenderOption) error {
	var buf bytes.Buffer
	buf.WriteString(`{"schema_version": "1", "pipelines": [`)
	for i, p := range pipelines {
		data, err := p.IR(opts...)
		if err != nil {
			return err
		}
		slug, _ := json.Marshal(p.slug)
		if i > 0 {
			buf.WriteString(", ")
		}
		fmt.Fprintf(&buf, `{"slug": %s, "name": %s, "definition": `, slug, slug)
		buf.Write(bytes.TrimSpace(data))
		buf.WriteString("}")
	}
	buf.WriteString("]}\n")
	_, err := w.Write(buf.Bytes())
	return err
}
