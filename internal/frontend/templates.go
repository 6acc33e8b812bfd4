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
