package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hmci/hm/internal/errs"
)

func TestPackIgnoreRules(t *testing.T) {
	tests := []struct {
		name string
		// files is built in a temp dir; home (from isolateGit) holds global git config.
		files map[string]string
		home  map[string]string
		// sub is the directory packed, relative to the temp dir ("" = the temp dir).
		sub  string
		want []string
	}{{
		name: "no repository: nested .gitignore with negation and anchoring",
		files: map[string]string{
			".gitignore":               "# comment\n*.log\n!keep.log\nbuild/\n",
			"a.log":                    "",
			"keep.log":                 "",
			"build/out":                "",
			"main.go":                  "",
			"sub/.gitignore":           "/local.txt\n!important.log\r\n",
			"sub/local.txt":            "",
			"sub/deeper/local.txt":     "",
			"sub/important.log":        "",
			"sub/x.log":                "",
			"sub/build/x":              "",
			"other/important.log":      "",
			"other/nested/.gitignore":  "*\n!.gitignore\n",
			"other/nested/generated.c": "",
		},
		want: []string{
			".gitignore", "keep.log", "main.go",
			"other/", "other/nested/", "other/nested/.gitignore",
			"sub/", "sub/.gitignore", "sub/deeper/", "sub/deeper/local.txt", "sub/important.log",
		},
	}, {
		name: "info/exclude applies in a repository",
		files: map[string]string{
			".git/info/exclude": "secret.txt\n/top-only\n",
			".git/HEAD":         "ref: refs/heads/main\n",
			"secret.txt":        "",
			"top-only":          "",
			"d/top-only":        "",
			"d/secret.txt":      "",
			"visible":           "",
		},
		want: []string{"d/", "d/top-only", "visible"},
	}, {
		name:  "global excludes default location under XDG_CONFIG_HOME",
		home:  map[string]string{".config/git/ignore": "*.tmp\n"},
		files: map[string]string{"a.tmp": "", "d/b.tmp": "", "c.txt": ""},
		want:  []string{"c.txt", "d/"},
	}, {
		name: "core.excludesFile from ~/.gitconfig with ~ expansion replaces the default",
		home: map[string]string{
			".gitconfig":         "[user]\n\tname = x\n[core]\n\texcludesFile = ~/my-ignore\n",
			"my-ignore":          "*.bak\n",
			".config/git/ignore": "*.tmp\n",
		},
		files: map[string]string{"a.bak": "", "a.tmp": "", "a.txt": ""},
		want:  []string{"a.tmp", "a.txt"},
	}, {
		name: "a .gitignore may re-include what the global excludes drop",
		home: map[string]string{".config/git/ignore": "*.tmp\n"},
		files: map[string]string{
			".gitignore": "!wanted.tmp\n",
			"wanted.tmp": "", "other.tmp": "",
		},
		want: []string{".gitignore", "wanted.tmp"},
	}, {
		name: "packing a subdirectory honours the repository's upper .gitignore files",
		files: map[string]string{
			".git/HEAD":          "",
			".git/info/exclude":  "excluded\n",
			".gitignore":         "*.o\n/app/gen/\n",
			"app/.gitignore":     "tmp/\n",
			"app/main.c":         "",
			"app/main.o":         "",
			"app/gen/x.c":        "",
			"app/tmp/y":          "",
			"app/excluded":       "",
			"app/lib/gen/kept.c": "",
		},
		sub:  "app",
		want: []string{".gitignore", "lib/", "lib/gen/", "lib/gen/kept.c", "main.c"},
	}, {
		name: ".git and .hm dropped at any depth, other dotfiles kept",
		files: map[string]string{
			".git/config":         "",
			".hm/state":           "",
			".env":                "",
			".github/ci.yml":      "",
			"vendor/lib/.git":     "gitdir: elsewhere\n",
			"vendor/lib/.hm/x":    "",
			"vendor/lib/lib.go":   "",
			"deep/a/b/.git/HEAD":  "",
			"deep/a/b/.gitignore": "",
		},
		want: []string{
			".env", ".github/", ".github/ci.yml",
			"deep/", "deep/a/", "deep/a/b/", "deep/a/b/.gitignore",
			"vendor/", "vendor/lib/", "vendor/lib/lib.go",
		},
	}, {
		name: "symlinks kept and never followed; empty dirs kept",
		files: map[string]string{
			"target/f":    "x",
			"to-dir":      "@target",
			"to-etc":      "@/etc",
			"dangling":    "@does/not/exist",
			"escape":      "@../../outside",
			"empty/":      "",
			"empty2/sub/": "",
		},
		want: []string{
			"dangling -> does/not/exist", "empty/", "empty2/", "empty2/sub/",
			"escape -> ../../outside", "target/", "target/f", "to-dir -> target", "to-etc -> /etc",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := isolateGit(t)
			build(t, home, tt.home)
			dir := t.TempDir()
			build(t, dir, tt.files)
			tree, err := Pack(context.Background(), filepath.Join(dir, tt.sub), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, listing(tree)); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPackGlobalConfigEnv(t *testing.T) {
	home := isolateGit(t)
	build(t, home, map[string]string{
		"alt.gitconfig": "[core]\n\texcludesfile = " + filepath.Join(home, "alt-ignore") + "\n",
		"alt-ignore":    "*.alt\n",
		".gitconfig":    "[core]\n\texcludesfile = ~/never\n",
		"never":         "*.txt\n",
	})
	t.Setenv("GIT_CONFIG_GLOBAL", filepath.Join(home, "alt.gitconfig"))
	dir := t.TempDir()
	build(t, dir, map[string]string{"a.alt": "", "a.txt": ""})
	tree, err := Pack(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a.txt"}, listing(tree)); diff != "" {
		t.Errorf("GIT_CONFIG_GLOBAL must replace ~/.gitconfig (-want +got):\n%s", diff)
	}
}

func TestPackEntryFields(t *testing.T) {
	isolateGit(t)
	dir := t.TempDir()
	build(t, dir, map[string]string{"bin/run": "#!/bin/sh\n", "data": "12345", "ln": "@data"})
	if err := os.Chmod(filepath.Join(dir, "bin/run"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "bin"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree, err := Pack(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := &Tree{Root: dir, Size: 15, Entries: []Entry{
		{Path: "bin", Type: TypeDir, Mode: 0o711},
		{Path: "bin/run", Type: TypeFile, Mode: 0o750, Size: 10},
		{Path: "data", Type: TypeFile, Mode: 0o644, Size: 5},
		{Path: "ln", Type: TypeSymlink, Mode: 0o777, Link: "data"},
	}}
	if diff := cmp.Diff(want, tree, cmpopts.IgnoreFields(Entry{}, "ModTime")); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
	fi, err := os.Lstat(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if got := tree.Entries[2].ModTime; !got.Equal(fi.ModTime()) {
		t.Errorf("data ModTime = %v, want %v", got, fi.ModTime())
	}
}

func TestPackSizeError(t *testing.T) {
	isolateGit(t)
	dir := t.TempDir()
	build(t, dir, map[string]string{
		"node_modules/a": strings.Repeat("x", 2000),
		"node_modules/b": strings.Repeat("x", 1000),
		"video.mp4":      strings.Repeat("x", 2500),
		"dist/out":       strings.Repeat("x", 1000),
		"src/main.go":    strings.Repeat("x", 500),
		"README":         strings.Repeat("x", 10),
		"empty/":         "",
	})
	const total = 7010
	if _, err := Pack(context.Background(), dir, Options{MaxBytes: total}); err != nil {
		t.Fatalf("at exactly the limit: %v", err)
	}
	_, err := Pack(context.Background(), dir, Options{MaxBytes: total - 1})
	var se *SizeError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *SizeError", err)
	}
	want := &SizeError{Root: dir, Total: total, Limit: total - 1, Largest: []PathSize{
		{"node_modules/", 3000}, {"video.mp4", 2500}, {"dist/", 1000}, {"src/", 500}, {"README", 10},
	}}
	if diff := cmp.Diff(want, se); diff != "" {
		t.Errorf("SizeError (-want +got):\n%s", diff)
	}
	if !errors.Is(err, errs.ErrUsage) {
		t.Errorf("err does not wrap ErrUsage")
	}
	var ue *errs.Error
	if !errors.As(err, &ue) {
		t.Fatalf("err not convertible to *errs.Error")
	}
	if ue.Code != "source_too_large" || !strings.Contains(ue.Fix, "node_modules/") || !strings.Contains(ue.Fix, ".gitignore") {
		t.Errorf("user error = %+v", ue)
	}
	if !strings.Contains(err.Error(), "node_modules/ (2.9 KiB)") {
		t.Errorf("message %q does not list node_modules/ with its size", err.Error())
	}
	if got := errs.ExitCode(err); got != errs.ExitUsage {
		t.Errorf("exit code = %d, want %d", got, errs.ExitUsage)
	}
}

func TestPackErrors(t *testing.T) {
	isolateGit(t)
	dir := t.TempDir()
	build(t, dir, map[string]string{"file": "", "d/x": ""})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		root  string
		class error
	}{
		{"missing root", context.Background(), filepath.Join(dir, "nope"), errs.ErrUsage},
		{"root is a file", context.Background(), filepath.Join(dir, "file"), errs.ErrUsage},
		{"canceled", canceled, dir, errs.ErrCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Pack(tt.ctx, tt.root, Options{})
			if !errors.Is(err, tt.class) {
				t.Errorf("err = %v, want class %v", err, tt.class)
			}
		})
	}
}

func TestPackUnreadableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any directory: cannot make one unreadable")
	}
	isolateGit(t)
	dir := t.TempDir()
	build(t, dir, map[string]string{"locked/x": ""})
	if err := os.Chmod(filepath.Join(dir, "locked"), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "locked"), 0o755) })
	_, err := Pack(context.Background(), dir, Options{})
	if !errors.Is(err, errs.ErrUsage) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("err = %v, want a usage error naming locked", err)
	}
}

func TestPackGit(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{".git/HEAD", ".git/objects/ab/cd", "a.txt"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	paths := func(tr *Tree) []string {
		var out []string
		for _, e := range tr.Entries {
			out = append(out, e.Path)
		}
		return out
	}
	off, err := Pack(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(off); !slices.Equal(got, []string{"a.txt"}) {
		t.Errorf("off: %v, want only a.txt", got)
	}
	on, err := Pack(context.Background(), dir, Options{Git: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".git", ".git/HEAD", ".git/objects", ".git/objects/ab", ".git/objects/ab/cd", "a.txt"}
	if got := paths(on); !slices.Equal(got, want) {
		t.Errorf("on: %v, want %v", got, want)
	}
	if _, err := Pack(context.Background(), t.TempDir(), Options{Git: true}); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("no .git: err = %v, want a usage error", err)
	}
}
