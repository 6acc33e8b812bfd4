package ir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// hm's extension fields (ir-v0.md § hm extensions): other executors ignore them, so a
// pipeline using them still runs elsewhere.

// MaxRetryLimit bounds retry.limit: a step runs at most MaxRetryLimit+1 times.
const MaxRetryLimit = 10

// Retry is a step's retry policy: `"retry": {"limit": N, "on": [exit codes]}`. A failed
// attempt is run again, on a fresh machine from the same parent snapshot and source, up to
// Limit times, when its exit code is in On (any non-zero code when On is empty). Exit code
// -1 in On names an infrastructure error (the step could not run), which is retried once
// even without a policy. A timeout or a cancel is never retried.
type Retry struct {
	Limit int   `json:"limit"`
	On    []int `json:"on,omitempty"`
}

// Source says what of the source directory the workspace holds beyond the gitignore-aware
// tree: `"source": {"git": true}` at the top level adds the repository's .git directory.
type Source struct {
	Git bool `json:"git"`
}

type rawRetry struct {
	Limit *json.Number  `json:"limit"`
	On    []json.Number `json:"on"`
}

// convertRetry validates a step's retry policy; nil when absent.
func convertRetry(name string, raw json.RawMessage) (*Retry, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	fix := fmt.Sprintf(`write retry as {"limit": N, "on": [exit codes]} with 0 <= N <= %d and codes 1..255 (or -1: an infrastructure error)`, MaxRetryLimit)
	var r rawRetry
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, invalid("ir_retry", fix, "%s has an invalid retry policy: %v", name, err)
	}
	if r.Limit == nil {
		return nil, invalid("ir_retry", fix, "%s has a retry policy without a limit", name)
	}
	limit, err := r.Limit.Int64()
	if err != nil || limit < 0 || limit > MaxRetryLimit {
		return nil, invalid("ir_retry", fix, "%s has retry limit %s: it must be a whole number from 0 to %d", name, r.Limit.String(), MaxRetryLimit)
	}
	out := &Retry{Limit: int(limit)}
	for _, n := range r.On {
		c, err := n.Int64()
		if err != nil || !(c == -1 || c >= 1 && c <= 255) {
			return nil, invalid("ir_retry", fix, "%s retries on exit code %s: codes are 1..255, or -1 for an infrastructure error", name, n.String())
		}
		out.On = append(out.On, int(c))
	}
	return out, nil
}

// convertSource validates the pipeline's source field; the zero Source when absent.
func convertSource(raw json.RawMessage) (Source, error) {
	var s Source
	if len(raw) == 0 || string(raw) == "null" {
		return s, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, invalid("ir_source", `write source as {"git": true} or leave it out`,
			"the pipeline's source field is invalid: %v", err)
	}
	return s, nil
}

// Bounds of a step's artifacts field (what the patterns may copy is bounded where they are
// copied, internal/vm/artifact).
const (
	MaxArtifacts   = 64
	MaxArtifactLen = 1024
)

// convertArtifacts validates a step's artifacts: `"artifacts": ["dist/*.tar.gz", "report.xml",
// "/workspace/out"]`, paths or globs (* ? [a-z], per path component) under /workspace, copied
// out of the machine after the step succeeds (schema/README.md). Each is returned clean and
// relative to /workspace; one that is not under it (absolute elsewhere, escaping with ..,
// the workspace itself) is refused, as are more than MaxArtifacts of them.
func convertArtifacts(name string, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	fix := fmt.Sprintf(`write artifacts as a list of at most %d paths or globs under /workspace, e.g. ["dist/*.tar.gz", "report.xml"]`, MaxArtifacts)
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("ir_artifacts", fix, "%s has invalid artifacts: %v", name, err)
	}
	if len(list) > MaxArtifacts {
		return nil, invalid("ir_artifacts", fix, "%s has %d artifacts patterns, more than %d", name, len(list), MaxArtifacts)
	}
	out := make([]string, 0, len(list))
	for _, p := range list {
		clean, why := CleanArtifact(p)
		if why != "" {
			return nil, invalid("ir_artifacts", fix, "%s has artifact %q: %s", name, truncate(p, 80), why)
		}
		if !slices.Contains(out, clean) {
			out = append(out, clean)
		}
	}
	return out, nil
}

// CleanArtifact returns artifact pattern p clean and relative to /workspace, or why it cannot
// be one (for the front ends, which say where it is written).
func CleanArtifact(p string) (string, string) {
	switch {
	case p == "":
		return "", "it is empty"
	case len(p) > MaxArtifactLen:
		return "", fmt.Sprintf("it is longer than %d bytes", MaxArtifactLen)
	case strings.ContainsRune(p, 0):
		return "", "it contains a NUL byte"
	}
	rel := p
	if strings.HasPrefix(p, "/") {
		var ok bool
		if rel, ok = strings.CutPrefix(path.Clean(p), "/workspace/"); !ok {
			return "", "an absolute path must be under /workspace"
		}
	}
	for c := range strings.SplitSeq(rel, "/") {
		if c == ".." {
			return "", "it escapes /workspace with .."
		}
	}
	rel = path.Clean(rel)
	if rel == "." {
		return "", "it names the whole workspace; name the files or directories to keep"
	}
	if _, err := path.Match(rel, ""); err != nil {
		return "", "it is not a valid glob (syntax: * ? [a-z] within a path component)"
	}
	return rel, ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
