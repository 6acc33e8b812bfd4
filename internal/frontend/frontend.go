// Package frontend discovers the pipelines of a repository under <dir>/.hm/ and renders them to
// IR. Today it reads rendered IR (`.hm/*.json`); YAML, the Go SDK and the harmont DSLs plug in
// here as further kinds.
package frontend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// Kind names how a pipeline is written.
type Kind string

const KindIR Kind = "ir"

// Pipeline is one discovered pipeline.
type Pipeline struct {
	Slug string
	Path string
	Kind Kind
}

// Discover lists the pipelines under dir/.hm, sorted by slug.
func Discover(dir string) ([]Pipeline, error) {
	hmDir := filepath.Join(dir, ".hm")
	entries, err := os.ReadDir(hmDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", hmDir, errs.ErrUsage, err)
	}
	var out []Pipeline
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		name := e.Name()
		if ext := filepath.Ext(name); ext == ".json" {
			out = append(out, Pipeline{Slug: strings.TrimSuffix(name, ext), Path: filepath.Join(hmDir, name), Kind: KindIR})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slug < out[j].Slug })
	return out, nil
}

// Select picks the pipeline named slug, or the only one when slug is "".
func Select(dir string, all []Pipeline, slug string) (Pipeline, error) {
	if len(all) == 0 {
		return Pipeline{}, errs.New(errs.ErrUsage, "no_pipeline",
			"add a pipeline as .hm/NAME.json, or run a rendered IR file with --file PATH",
			"no pipeline found under %s", filepath.Join(dir, ".hm"))
	}
	var slugs []string
	for _, p := range all {
		if p.Slug == slug || (slug == "" && len(all) == 1) {
			return p, nil
		}
		slugs = append(slugs, p.Slug)
	}
	if slug == "" {
		return Pipeline{}, errs.New(errs.ErrUsage, "pipeline_ambiguous",
			fmt.Sprintf("name one: hm run %s", slugs[0]),
			"%d pipelines found (%s); name the one to run", len(all), strings.Join(slugs, ", "))
	}
	return Pipeline{}, errs.New(errs.ErrUsage, "pipeline_not_found",
		fmt.Sprintf("use one of: %s (see `hm pipelines`)", strings.Join(slugs, ", ")),
		"no pipeline %q under %s", slug, filepath.Join(dir, ".hm"))
}

// Render returns the IR bytes of p.
func Render(_ context.Context, p Pipeline) ([]byte, error) {
	switch p.Kind {
	case KindIR:
		data, err := os.ReadFile(p.Path)
		if err != nil {
			return nil, errs.New(errs.ErrUsage, "pipeline_read", "check the file exists and is readable", "cannot read %s: %v", p.Path, err)
		}
		return data, nil
	}
	return nil, fmt.Errorf("frontend: unknown kind %q: %w", p.Kind, errs.ErrUsage)
}
