package frontend

import (
	"embed"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// Starter pipelines for `hm init`. Each runs as is on the default backend with tools found on
// a usual developer machine.
//
//go:embed templates/*.yaml
var templateFS embed.FS

// Templates lists the starter template names, sorted.
func Templates() []string {
	entries, _ := templateFS.ReadDir("templates")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// Template returns the starter pipeline name.
func Template(name string) ([]byte, error) {
	data, err := templateFS.ReadFile("templates/" + name + ".yaml")
	if err != nil {
		return nil, errs.New(errs.ErrUsage, "usage", "use --template "+strings.Join(Templates(), "|"),
			"unknown template %q", name)
	}
	return data, nil
}

// DetectTemplate suggests a template from the files of dir: go for go.mod, node for
// package.json, rust for Cargo.toml, python for pyproject.toml/setup.py/requirements.txt, else
// minimal.
func DetectTemplate(dir string) string {
	for _, c := range []struct{ file, template string }{
		{"go.mod", "go"}, {"package.json", "node"}, {"Cargo.toml", "rust"},
		{"pyproject.toml", "python"}, {"setup.py", "python"}, {"requirements.txt", "python"},
	} {
		if _, err := os.Stat(filepath.Join(dir, c.file)); err == nil {
			return c.template
		}
	}
	return "minimal"
}

// SlugFor names the pipeline of a project directory after the directory: letters, digits and
// '-', '_', '.' kept (other runs of characters become '-'), starting with a letter or digit;
// "pipeline" when nothing is left. The slug is part of every cache key, so two repositories
// initialised with `hm init` must not share one (they shared snapshots when all were called
// "pipeline").
func SlugFor(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	var b strings.Builder
	dash := false
	for _, r := range filepath.Base(dir) {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	slug := strings.TrimLeft(b.String(), "-_.")
	slug = strings.TrimRight(slug, "-")
	if slug == "" {
		return "pipeline"
	}
	return slug
}

// WithSlug returns a template with `slug: slug` as its first field, after the header comment.
func WithSlug(data []byte, slug string) []byte {
	lines := strings.SplitAfter(string(data), "\n")
	i := 0
	for i < len(lines) && (strings.HasPrefix(lines[i], "#") || strings.TrimSpace(lines[i]) == "") {
		i++
	}
	field := "# The pipeline's name (hm run NAME, hm cache ls); it scopes its cache entries.\nslug: " + slug + "\n"
	return []byte(strings.Join(lines[:i], "") + field + strings.Join(lines[i:], ""))
}
