package frontend

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/frontend/yamlfe"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/pipeline"
)

func TestTemplatesRender(t *testing.T) {
	want := []string{"c", "go", "minimal", "node", "python", "rust"}
	if diff := cmp.Diff(want, Templates()); diff != "" {
		t.Fatalf("templates (-want +got):\n%s", diff)
	}
	for _, name := range Templates() {
		data, err := Template(name)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := yamlfe.Parse(".hm/pipeline.yaml", data)
		if err != nil {
			t.Fatalf("template %s: %v", name, err)
		}
		out, err := yamlfe.Render(".hm/pipeline.yaml", ps[0], pipeline.WithDir(t.TempDir()))
		if err != nil {
			t.Fatalf("template %s: %v", name, err)
		}
		p, err := ir.Parse(out)
		if err != nil {
			t.Fatalf("template %s: %v", name, err)
		}
		if ps[0].Slug != "pipeline" || p.DefaultImage != "host" {
			t.Errorf("template %s: slug %q, default image %q", name, ps[0].Slug, p.DefaultImage)
		}
	}
	if _, err := Template("cobol"); errCode(t, err).Code != "usage" {
		t.Errorf("unknown template: %v", err)
	}
}

func TestDetectTemplate(t *testing.T) {
	for file, want := range map[string]string{
		"": "minimal", "go.mod": "go", "package.json": "node", "Cargo.toml": "rust",
		"pyproject.toml": "python", "requirements.txt": "python", "setup.py": "python", "Makefile": "minimal",
	} {
		dir := t.TempDir()
		if file != "" {
			if err := os.WriteFile(filepath.Join(dir, file), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := DetectTemplate(dir); got != want {
			t.Errorf("DetectTemplate with %q = %q, want %q", file, got, want)
		}
	}
}

func TestSlugFor(t *testing.T) {
	root := t.TempDir()
	tests := []struct{ dir, want string }{
		{"cobra", "cobra"},
		{"My Project (copy)", "My-Project-copy"},
		{"..hidden", "hidden"},
		{"émoji✓", "moji"},
		{"✓✓", "pipeline"},
		{"v1.2_rc", "v1.2_rc"},
	}
	for _, tc := range tests {
		if got := SlugFor(filepath.Join(root, tc.dir)); got != tc.want {
			t.Errorf("SlugFor(%q) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}

// Every template with the slug inserted still parses, under that slug.
func TestWithSlug(t *testing.T) {
	for _, name := range Templates() {
		data, err := Template(name)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := yamlfe.Parse(".hm/pipeline.yaml", WithSlug(data, "cobra"))
		if err != nil {
			t.Fatalf("template %s: %v", name, err)
		}
		if len(ps) != 1 || ps[0].Slug != "cobra" {
			t.Errorf("template %s: slugs %+v, want cobra", name, ps)
		}
	}
}
