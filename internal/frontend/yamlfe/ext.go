package yamlfe

import (
	"errors"
	"fmt"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
)

// hm's extension fields: `retry`, `artifacts`, `secrets` and `cache_dirs` on a step, `source` on the pipeline.

type retryDef struct {
	limit int
	on    []int
}

var retryFix = fmt.Sprintf("write retry as {limit: N, on: [exit codes]}, N from 0 to %d, codes 1..255 (or -1: an infrastructure error)", ir.MaxRetryLimit)

// retry reads `retry: {limit: N, on: [codes]}`, or `retry: N` for {limit: N}.
func (ps *parser) retry(n *yaml.Node) (*retryDef, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode {
		limit, err := ps.integer(n, "retry", 0, ir.MaxRetryLimit)
		return &retryDef{limit: limit}, err
	}
	fs, err := ps.fields(n, "retry")
	if err != nil {
		return nil, err
	}
	r := &retryDef{}
	seenLimit := false
	for _, f := range fs {
		switch f.key.Value {
		case "limit":
			r.limit, err = ps.integer(f.val, "retry limit", 0, ir.MaxRetryLimit)
			seenLimit = true
		case "on":
			var codes []*yaml.Node
			if codes, err = ps.strList(f.val, "retry on"); err == nil {
				for _, c := range codes {
					var code int
					if code, err = ps.integer(c, "a retry exit code", -1, 255); err != nil {
						break
					}
					if code == 0 {
						err = ps.errorf(c, retryFix, "exit code 0 is success; it cannot be retried")
						break
					}
					r.on = append(r.on, code)
				}
			}
		default:
			if !extension(f.key) {
				err = ps.unknown(f.key, "retry", []string{"limit", "on"})
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if !seenLimit {
		return nil, ps.errorf(n, retryFix, "retry has no limit")
	}
	return r, nil
}

// source reads `source: {git: BOOL}`.
func (ps *parser) source(n *yaml.Node) (bool, error) {
	fs, err := ps.fields(n, "source")
	if err != nil {
		return false, err
	}
	git := false
	for _, f := range fs {
		switch f.key.Value {
		case "git":
			git, err = ps.boolean(f.val, "source.git")
		default:
			if !extension(f.key) {
				err = ps.unknown(f.key, "source", []string{"git"})
			}
		}
		if err != nil {
			return false, err
		}
	}
	return git, nil
}

func (ps *parser) integer(n *yaml.Node, what string, lo, hi int) (int, error) {
	n = resolve(n)
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v < lo || v > hi {
		return 0, ps.errorf(n, retryFix, "%s must be a whole number from %d to %d, not %s", what, lo, hi, describe(n))
	}
	return v, nil
}

var artifactsFix = fmt.Sprintf("write artifacts as a list of at most %d paths or globs under /workspace, e.g. [dist/*.tar.gz, report.xml]", ir.MaxArtifacts)

// artifacts reads `artifacts: [paths or globs]` (or one string), each checked where it is
// written.
func (ps *parser) artifacts(n *yaml.Node) ([]string, error) {
	list, err := ps.strList(n, "artifacts")
	if err != nil {
		return nil, err
	}
	if len(list) > ir.MaxArtifacts {
		return nil, ps.errorf(n, artifactsFix, "artifacts lists %d patterns, more than %d", len(list), ir.MaxArtifacts)
	}
	out := make([]string, 0, len(list))
	for _, it := range list {
		if _, why := ir.CleanArtifact(it.Value); why != "" {
			return nil, ps.errorf(it, artifactsFix, "artifact %q: %s", it.Value, why)
		}
		out = append(out, it.Value)
	}
	return out, nil
}

// secrets reads `secrets: [NAME, ...]` (or one NAME): environment variable names.
func (ps *parser) secrets(n *yaml.Node) ([]string, error) {
	list, err := ps.strList(n, "secrets")
	if err != nil {
		return nil, err
	}
	out := make([]string, len(list))
	for i, v := range list {
		if !ir.ValidSecretName(v.Value) {
			return nil, ps.errorf(v, "name secrets as environment variables, e.g. secrets: [NPM_TOKEN]",
				"secret %q is not an environment variable name", v.Value)
		}
		out[i] = v.Value
	}
	return out, nil
}

// cacheDirs reads `cache_dirs: [paths]` (or one path), checked as the IR checks them
// (absolute, clean, outside /workspace, bounded count), the error pointing at the field.
func (ps *parser) cacheDirs(n *yaml.Node) ([]string, error) {
	list, err := ps.strList(n, "cache_dirs")
	if err != nil {
		return nil, err
	}
	out := make([]string, len(list))
	for i, it := range list {
		out[i] = it.Value
	}
	var e *errs.Error
	if err := ir.CheckCacheDirs("the step", out); errors.As(err, &e) {
		return nil, ps.errorf(n, e.Fix, "%s", e.Msg)
	} else if err != nil {
		return nil, err
	}
	return out, nil
}
