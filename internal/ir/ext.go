package ir

import (
	"bytes"
	"encoding/json"
	"fmt"
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
