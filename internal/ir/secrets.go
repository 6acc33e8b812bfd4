package ir

import (
	"bytes"
	"encoding/json"
	"slices"
)

// MaxSecrets bounds the secrets one step may name.
const MaxSecrets = 100

// ValidSecretName reports whether name can be a secret: the name of the environment
// variable the step reads it from, as a shell can name it ([A-Za-z_][A-Za-z0-9_]*), at most
// 256 bytes.
func ValidSecretName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for i, c := range []byte(name) {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// convertSecrets validates a step's `"secrets": ["NAME", ...]`; nil when absent. Names are
// kept in order, without repeats.
func convertSecrets(name string, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	const fix = `write secrets as a list of environment variable names, e.g. "secrets": ["NPM_TOKEN"]`
	var names []string
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&names); err != nil {
		return nil, invalid("ir_secrets", fix, "%s has an invalid secrets list: %v", name, err)
	}
	if len(names) > MaxSecrets {
		return nil, invalid("ir_secrets", fix, "%s names %d secrets, more than %d", name, len(names), MaxSecrets)
	}
	var out []string
	for _, n := range names {
		if !ValidSecretName(n) {
			return nil, invalid("ir_secrets", fix, "%s names secret %q, which is not an environment variable name", name, n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}
