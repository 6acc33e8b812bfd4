// Package frontend discovers the pipelines of a repository under <dir>/.hm/ and renders them to
// IR (spec/ir-v0.md). Sources, by file name:
//
//   - NAME.json: rendered IR, used as is (slug NAME).
//   - NAME.yaml, NAME.yml: the YAML front end (package yamlfe); one or more pipelines.
//   - *.go: a Go main package using the Go SDK (github.com/hmci/hm/pipeline), run with
//     `go run` in .hm/; it prints the envelope of its pipelines.
//   - *.py: the harmont Python DSL, run with python3 when the harmont package is importable.
//   - *.ts: the harmont TypeScript DSL, run with node when @harmont/hm is installed.
//
// The Go and DSL sources are evaluated once at discovery (their slugs are only known then);
// YAML is parsed at discovery and rendered (cache keys computed) by Render. A source that
// cannot be read or evaluated still yields a pipeline, named after its file, whose Render
// returns the error: other pipelines of the repository stay usable.
package frontend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/frontend/yamlfe"
	"github.com/hmci/hm/pipeline"
)

// Kind names how a pipeline is written.
type Kind string

const (
	KindIR         Kind = "ir"
	KindYAML       Kind = "yaml"
	KindGo         Kind = "go"
	KindPython     Kind = "python"
	KindTypeScript Kind = "typescript"
)

// Pipeline is one discovered pipeline.
type Pipeline struct {
	Slug string
	Name string // display name when the source gives one
	Path string // source file; for a source spread over files, a pattern such as .hm/*.py
	Kind Kind

	dir  string           // the source directory, for on_change paths
	yaml *yamlfe.Pipeline // KindYAML
	ir   []byte           // KindGo and the DSLs: rendered at discovery
	err  error            // the source could not be read or evaluated
}

// Err returns why the pipeline's source could not be read or evaluated, or nil.
func (p Pipeline) Err() error { return p.err }

// Files in .hm/ that are not pipelines although their extension says so.
var notPipelines = map[string]bool{
	"package.json": true, "package-lock.json": true, "tsconfig.json": true, "jsconfig.json": true,
	"deno.json": true, "composer.json": true,
}

// Discover lists the pipelines under dir/.hm, sorted by slug.
func Discover(ctx context.Context, dir string) ([]Pipeline, error) {
	hmDir := filepath.Join(dir, ".hm")
	entries, err := os.ReadDir(hmDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", hmDir, errs.ErrUsage, err)
	}
	var out []Pipeline
	var goFiles, pyFiles, tsFiles []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || notPipelines[name] || strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(hmDir, name)
		stem := strings.TrimSuffix(name, filepath.Ext(name))
		switch filepath.Ext(name) {
		case ".json":
			out = append(out, Pipeline{Slug: stem, Path: path, Kind: KindIR, dir: dir})
		case ".yaml", ".yml":
			out = append(out, discoverYAML(dir, path, stem)...)
		case ".go":
			if !strings.HasSuffix(name, "_test.go") {
				goFiles = append(goFiles, path)
			}
		case ".py":
			pyFiles = append(pyFiles, path)
		case ".ts", ".mts":
			if !strings.HasSuffix(name, ".d.ts") {
				tsFiles = append(tsFiles, path)
			}
		}
	}
	if len(goFiles) > 0 {
		out = append(out, discoverGo(ctx, dir, goFiles)...)
	}
	if len(pyFiles) > 0 {
		out = append(out, discoverPython(ctx, dir, pyFiles)...)
	}
	if len(tsFiles) > 0 {
		out = append(out, discoverTypeScript(ctx, dir, tsFiles)...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Slug < out[j].Slug })
	for i := 1; i < len(out); i++ {
		if out[i].Slug == out[i-1].Slug {
			return nil, errs.New(errs.ErrInvalid, "pipeline_duplicate_slug",
				"rename one of them (`slug:` in YAML, pipeline.New's slug in Go, the file name for IR)",
				"two pipelines have the slug %q: %s and %s", out[i].Slug, out[i-1].Path, out[i].Path)
		}
	}
	return out, nil
}

func discoverYAML(dir, path, stem string) []Pipeline {
	data, err := ReadFile(path, "yaml")
	if _, limit := err.(*errs.LimitError); limit {
		return []Pipeline{{Slug: stem, Path: path, Kind: KindYAML, dir: dir, err: err}}
	}
	if err != nil {
		return []Pipeline{{Slug: stem, Path: path, Kind: KindYAML, dir: dir,
			err: errs.New(errs.ErrUsage, "pipeline_read", "check the file is readable", "cannot read %s: %v", path, err)}}
	}
	ps, err := yamlfe.Parse(path, data)
	if err != nil {
		return []Pipeline{{Slug: stem, Path: path, Kind: KindYAML, dir: dir, err: err}}
	}
	out := make([]Pipeline, len(ps))
	for i := range ps {
		out[i] = Pipeline{Slug: ps[i].Slug, Name: ps[i].Name, Path: path, Kind: KindYAML, dir: dir, yaml: &ps[i]}
	}
	return out
}

// sourcePath names a source of several files: the file itself when there is one, else a
// pattern.
func sourcePath(files []string, ext string) string {
	if len(files) == 1 {
		return files[0]
	}
	return filepath.Join(filepath.Dir(files[0]), "*"+ext)
}

// failed returns one placeholder per file, named after it, carrying err.
func failed(dir string, kind Kind, files []string, err error) []Pipeline {
	out := make([]Pipeline, len(files))
	for i, f := range files {
		base := filepath.Base(f)
		out[i] = Pipeline{Slug: strings.TrimSuffix(base, filepath.Ext(base)), Path: f, Kind: kind, dir: dir, err: err}
	}
	return out
}

// fromEnvelope turns an evaluated envelope into pipelines.
func fromEnvelope(dir string, kind Kind, files []string, ext string, data []byte) []Pipeline {
	src := sourcePath(files, ext)
	entries, err := parseEnvelope(src, data)
	if err != nil {
		return failed(dir, kind, files, err)
	}
	out := make([]Pipeline, len(entries))
	for i, e := range entries {
		out[i] = Pipeline{Slug: e.Slug, Name: e.Name, Path: src, Kind: kind, dir: dir, ir: e.Definition}
	}
	return out
}

// Select picks the pipeline named slug, or the only one when slug is "".
func Select(dir string, all []Pipeline, slug string) (Pipeline, error) {
	if len(all) == 0 {
		return Pipeline{}, errs.New(errs.ErrUsage, "no_pipeline",
			"run `hm init` to write a starter .hm/pipeline.yaml, or run a rendered IR file with --file PATH",
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

// Render returns the IR bytes of p. YAML pipelines get their cache keys computed now, for the
// source directory and HM_PIPELINE_ORG.
func Render(_ context.Context, p Pipeline) ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	switch p.Kind {
	case KindIR:
		data, err := ReadFile(p.Path, "ir")
		if _, limit := err.(*errs.LimitError); limit {
			return nil, err
		}
		if err != nil {
			return nil, errs.New(errs.ErrUsage, "pipeline_read", "check the file exists and is readable", "cannot read %s: %v", p.Path, err)
		}
		return data, nil
	case KindYAML:
		return yamlfe.Render(p.Path, *p.yaml, pipeline.WithDir(p.dir))
	case KindGo, KindPython, KindTypeScript:
		// As rendered, with a final newline like every other kind.
		data := append([]byte(nil), p.ir...)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			data = append(data, '\n')
		}
		return data, nil
	}
	return nil, fmt.Errorf("frontend: unknown kind %q: %w", p.Kind, errs.ErrUsage)
}
