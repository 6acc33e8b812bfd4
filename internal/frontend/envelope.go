package frontend

import (
	"bytes"
	"encoding/json"
	"sort"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/pipeline"
)

// parseEnvelope reads what a program front end (Go SDK, harmont DSL) prints. Two shapes are
// accepted:
//
//   - the harmont envelope, as harmont._envelope.dump_registry_json() writes it and the Go
//     SDK's pipeline.Main too: {"schema_version": "1", "pipelines": [{"slug": "ci", "name":
//     "CI", "definition": IR, ...}, ...]};
//   - a plain object mapping each slug to its IR: {"ci": IR, "release": IR}.
//
// Definitions are kept byte for byte (the remote backend forwards IR verbatim). src names the
// source in errors.
func parseEnvelope(src string, data []byte) ([]pipeline.EnvelopeEntry, error) {
	bad := func(format string, args ...any) error {
		return errs.New(errs.ErrInvalid, "envelope_invalid",
			`print {"schema_version": "1", "pipelines": [{"slug": ..., "definition": IR}]} (or {"SLUG": IR, ...})`,
			"%s: "+format, append([]any{src}, args...)...)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, bad("the output is not a JSON object: %v", err)
	}
	if _, ok := top["version"]; ok && (top["graph"] != nil || top["steps"] != nil) {
		return nil, bad("the program printed one pipeline's IR, not an envelope of pipelines (a Go pipeline's main must call pipeline.Main)")
	}
	var entries []pipeline.EnvelopeEntry
	if _, ok := top["pipelines"]; ok && top["schema_version"] != nil {
		var env pipeline.Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			return nil, bad("malformed envelope: %v", err)
		}
		if env.SchemaVersion != "1" {
			return nil, bad("envelope schema_version %q is not supported (hm reads \"1\"); upgrade hm", env.SchemaVersion)
		}
		entries = env.Pipelines
	} else {
		slugs := make([]string, 0, len(top))
		for s := range top {
			slugs = append(slugs, s)
		}
		sort.Strings(slugs)
		for _, s := range slugs {
			entries = append(entries, pipeline.EnvelopeEntry{Slug: s, Definition: top[s]})
		}
	}
	if len(entries) == 0 {
		return nil, bad("no pipelines registered")
	}
	seen := map[string]bool{}
	for i, e := range entries {
		def := bytes.TrimSpace(e.Definition)
		if e.Slug == "" {
			return nil, bad("pipeline #%d has no slug", i)
		}
		if seen[e.Slug] {
			return nil, bad("two pipelines have the slug %q", e.Slug)
		}
		seen[e.Slug] = true
		if len(def) == 0 || def[0] != '{' {
			return nil, bad("pipeline %q has no IR object as its definition", e.Slug)
		}
	}
	return entries, nil
}
