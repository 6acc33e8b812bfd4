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

// MaxCacheDirs bounds a step's cache_dirs: each is a mount in the step's machine.
const MaxCacheDirs = 16

// maxCacheDirPath bounds one cache_dirs entry, in bytes (PATH_MAX).
const maxCacheDirPath = 4096

// Paths a cache directory may not be at or under: the workspace (it is the source, and the
// snapshot's), and the kernel filesystems every machine mounts itself.
var cacheDirForbidden = []string{Workspace, "/proc", "/sys", "/dev"}

// Workspace is where the workspace lives in every machine (vm.Workdir says the same).
const Workspace = "/workspace"

// CheckCacheDirs validates a step's cache_dirs as the IR does, for front ends that report
// errors where the user wrote them; name says whose they are ("step test").
func CheckCacheDirs(name string, paths []string) error {
	_, err := convertCacheDirs(name, paths)
	return err
}

// convertCacheDirs validates a step's cache_dirs: absolute, clean paths, none of them / or
// in cacheDirForbidden, no duplicates, none inside another (a mount would hide the other).
func convertCacheDirs(name string, raw []string) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	fix := fmt.Sprintf(`write cache_dirs as a list of at most %d absolute, clean paths outside /workspace, e.g. ["/root/.cache/go-build"]`, MaxCacheDirs)
	if len(raw) > MaxCacheDirs {
		return nil, invalid("ir_cache_dirs", fix, "%s has %d cache_dirs, more than %d", name, len(raw), MaxCacheDirs)
	}
	for i, p := range raw {
		switch {
		case p == "" || len(p) > maxCacheDirPath || strings.IndexByte(p, 0) >= 0:
			return nil, invalid("ir_cache_dirs", fix, "%s has cache_dirs entry %d that is empty, has a NUL byte or is longer than %d bytes", name, i, maxCacheDirPath)
		case !path.IsAbs(p) || path.Clean(p) != p:
			return nil, invalid("ir_cache_dirs", fix, "%s has cache_dirs entry %q: it must be an absolute path without . or .. or a trailing /", name, p)
		case p == "/":
			return nil, invalid("ir_cache_dirs", fix, "%s has / as a cache_dirs entry: name the directory to keep", name)
		}
		for _, f := range cacheDirForbidden {
			if under(p, f) {
				return nil, invalid("ir_cache_dirs", fix, "%s has cache_dirs entry %q, which is %s or under it", name, p, f)
			}
		}
		for _, q := range raw[:i] {
			if under(p, q) || under(q, p) {
				return nil, invalid("ir_cache_dirs", fix, "%s has cache_dirs entries %q and %q: one is the other or inside it", name, q, p)
			}
		}
	}
	return append([]string(nil), raw...), nil
}

// under reports whether clean absolute path p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
