package yamlfe

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/testutil"
)

// code returns the error code of a refusal.
func code(err error) string {
	var e *errs.Error
	var typed interface{ Code() string }
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &typed):
		return typed.Code()
	}
	return ""
}

// laughs is a billion laughs: each anchor lists the previous one ten times, so 9 levels expand
// to 10⁹ nodes.
func laughs() string {
	var b strings.Builder
	b.WriteString("x-l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		p := "*l" + itoa(i-1)
		b.WriteString("x-l" + itoa(i) + ": &l" + itoa(i) + " [" + strings.Repeat(p+", ", 9) + p + "]\n")
	}
	b.WriteString("steps:\n  - key: a\n    run: echo\n    env: {A: x}\n    x-all: *l9\n")
	return b.String()
}

func itoa(i int) string { return string(rune('0' + i%10)) }

func TestParseRefusesHostileInput(t *testing.T) {
	var waits strings.Builder
	waits.WriteString("steps:\n")
	for i := 0; i < 600; i++ {
		waits.WriteString("  - {key: a" + itoa3(i) + ", run: x}\n")
	}
	waits.WriteString("  - wait\n")
	for i := 0; i < 600; i++ {
		waits.WriteString("  - {key: b" + itoa3(i) + ", run: x}\n")
	}
	for _, tc := range []struct{ name, code, in string }{
		{"too large", "yaml_too_large", "x-a: " + strings.Repeat("a", MaxBytes) + "\nsteps: [{key: a, run: b}]\n"},
		{"flow nesting", "yaml_too_deep", "steps: " + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + "\n"},
		{"compact sequences", "yaml_too_deep", "steps:\n" + strings.Repeat("- ", 100_000) + "x\n"},
		{"block mappings", "yaml_too_deep", deepBlock(70)},
		{"nesting through aliases", "yaml_too_deep", "x-a: &a " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\nx-b: &b " + strings.Repeat("[", 20) + "*a" + strings.Repeat("]", 20) + "\nx-c: " + strings.Repeat("[", 20) + "*b" + strings.Repeat("]", 20) + "\nsteps: [{key: a, run: b}]\n"},
		{"billion laughs", "yaml_alias_expansion", laughs()},
		{"merge-key laughs", "yaml_alias_expansion", mergeLaughs()},
		{"wait barrier cross product", "yaml_too_many_edges", waits.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(".hm/p.yaml", []byte(tc.in))
			if err == nil {
				t.Fatal("accepted")
			}
			if errs.ExitCode(err) != errs.ExitInvalid {
				t.Fatalf("%v: exit %d, want %d", err, errs.ExitCode(err), errs.ExitInvalid)
			}
			if got := code(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if !strings.HasPrefix(err.Error(), ".hm/p.yaml") {
				t.Fatalf("%q does not name the file", err)
			}
		})
	}
}

func itoa3(i int) string { return itoa(i/100) + itoa(i/10) + itoa(i) }

func deepBlock(n int) string {
	var b strings.Builder
	b.WriteString("x-deep:\n")
	for i := 1; i <= n; i++ {
		b.WriteString(strings.Repeat(" ", i) + "k:\n")
	}
	b.WriteString("steps: [{key: a, run: b}]\n")
	return b.String()
}

func mergeLaughs() string {
	var b strings.Builder
	b.WriteString("x-m0: &m0 {a: 1, b: 2}\n")
	for i := 1; i <= 9; i++ {
		p := "*m" + itoa(i-1)
		b.WriteString("x-m" + itoa(i) + ": &m" + itoa(i) + " {<<: [" + strings.Repeat(p+", ", 9) + p + "]}\n")
	}
	b.WriteString("steps:\n  - key: a\n    run: echo\n    env: *m9\n")
	return b.String()
}

// The scan must not refuse what pipelines hold: brackets in commands and block scalars,
// quotes, comments.
func TestScanDepthAcceptsOrdinaryFiles(t *testing.T) {
	in := `steps:
  - key: a
    run: |
      if [ -f x ]; then echo "{{{{{{{{"; fi
      awk '{ print $1 }' [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
    env: {A: "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", B: '{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{'}
  - key: b # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
    run: echo [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
`
	if _, err := Parse("p.yaml", []byte(in)); err != nil {
		t.Fatal(err)
	}
}

// FuzzYAML checks that no input makes the front end panic, hang or refuse without a
// classified, user-facing error. Seeded with every YAML file of the repository.
func FuzzYAML(f *testing.F) {
	root := testutil.RepoRoot()
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			if data, err := os.ReadFile(path); err == nil {
				f.Add(data)
			}
		}
		return nil
	})
	f.Add([]byte(laughs()))
	f.Add([]byte(mergeLaughs()))
	f.Add([]byte("x: &a [*a]\nsteps: [{key: a, run: b}]\n"))
	f.Add([]byte("steps: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Parse("p.yaml", data)
		if err != nil {
			if !errors.Is(err, errs.ErrInvalid) || code(err) == "" {
				t.Fatalf("unclassified error %T: %v", err, err)
			}
			return
		}
		for _, p := range ps {
			if _, err := Render("p.yaml", p); err != nil && code(err) == "" {
				t.Fatalf("unclassified render error %T: %v", err, err)
			}
		}
	})
}
