package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

func TestMaterializeOverlay(t *testing.T) {
	isolateGit(t)
	src, dst := t.TempDir(), t.TempDir()
	build(t, src, map[string]string{
		"a.txt":       "new",
		"sub/b.txt":   "b",
		"sub/empty/":  "",
		"link":        "@sub/b.txt",
		"run.sh":      "#!/bin/sh\n",
		"deep/er/c.c": "c",
	})
	if err := os.Chmod(filepath.Join(src, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1600000000, 0)
	if err := os.Chtimes(filepath.Join(src, "a.txt"), old, old); err != nil {
		t.Fatal(err)
	}
	// What a parent step left in /workspace: outputs stay, stale source is overwritten.
	build(t, dst, map[string]string{
		"a.txt":         "old content, longer than the new one",
		"keep.out":      "parent output",
		"sub/old.o":     "object",
		"link":          "@keep.out",
		"deep/er/x.bin": "x",
	})
	tree, err := Pack(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Materialize(dst); err != nil {
		t.Fatal(err)
	}
	got, err := Pack(context.Background(), dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"a.txt", "deep/", "deep/er/", "deep/er/c.c", "deep/er/x.bin", "keep.out",
		"link -> sub/b.txt", "run.sh", "sub/", "sub/b.txt", "sub/empty/", "sub/old.o",
	}
	if diff := cmp.Diff(want, listing(got)); diff != "" {
		t.Errorf("workspace (-want +got):\n%s", diff)
	}
	for p, content := range map[string]string{"a.txt": "new", "keep.out": "parent output", "sub/old.o": "object"} {
		if got := readFile(t, filepath.Join(dst, p)); got != content {
			t.Errorf("%s = %q, want %q", p, got, content)
		}
	}
	// Everything the tree holds is reproduced exactly (modes, links, mtimes).
	byPath := map[string]Entry{}
	for _, e := range comparable(got) {
		byPath[e.Path] = e
	}
	for _, e := range comparable(tree) {
		if diff := cmp.Diff(e, byPath[e.Path]); diff != "" {
			t.Errorf("%s (-tree +workspace):\n%s", e.Path, diff)
		}
	}
}

func TestMaterializeReplacesOtherKinds(t *testing.T) {
	isolateGit(t)
	src, dst, outside := t.TempDir(), t.TempDir(), t.TempDir()
	build(t, src, map[string]string{
		"foo/passwd": "mine",   // dst/foo is a symlink to outside
		"bar":        "file",   // dst/bar is a non-empty directory
		"baz":        "@bar",   // dst/baz is a regular file
		"qux":        "qux",    // dst/qux is a symlink to a file inside dst
		"dir/":       "",       // dst/dir is a regular file
		"rel/x":      "inside", // dst/rel is a symlink to a sibling directory inside dst
	})
	build(t, dst, map[string]string{
		"foo":           "@" + outside,
		"bar/nested/f":  "",
		"baz":           "regular",
		"target.txt":    "untouched",
		"qux":           "@target.txt",
		"dir":           "was a file",
		"real/":         "",
		"rel":           "@real",
		"unrelated.txt": "stays",
	})
	tree, err := Pack(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Materialize(dst); err != nil {
		t.Fatal(err)
	}
	mustBeEmpty(t, outside)
	mustBeEmpty(t, filepath.Join(dst, "real"))
	got, err := Pack(context.Background(), dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bar", "baz -> bar", "dir/", "foo/", "foo/passwd", "qux", "real/", "rel/", "rel/x",
		"target.txt", "unrelated.txt",
	}
	if diff := cmp.Diff(want, listing(got)); diff != "" {
		t.Errorf("workspace (-want +got):\n%s", diff)
	}
	if got := readFile(t, filepath.Join(dst, "target.txt")); got != "untouched" {
		t.Errorf("wrote through the old qux symlink: target.txt = %q", got)
	}
}

func TestMaterializeRefusals(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		// existing is built in dst first; "@OUT" in a value is replaced by the outside dir.
		existing map[string]string
		bad      string // the entry the error must name
	}{{
		name:    "absolute path",
		entries: []Entry{{Path: "/OUT/passwd", Type: TypeFile, Size: 4}},
		bad:     "/OUT/passwd",
	}, {
		name:    "dot-dot component",
		entries: []Entry{{Path: "../escape", Type: TypeFile, Size: 4}},
		bad:     "../escape",
	}, {
		name:    "dot-dot that cleaning would hide",
		entries: []Entry{{Path: "a/../../escape", Type: TypeFile, Size: 4}},
		bad:     "a/../../escape",
	}, {
		name: "tree symlink then a path through it",
		entries: []Entry{
			{Path: "foo", Type: TypeSymlink, Link: "@OUT"},
			{Path: "foo/passwd", Type: TypeFile, Mode: 0o644, Size: 4},
		},
		bad: "foo/passwd",
	}, {
		name:     "existing symlink then a path through it",
		existing: map[string]string{"foo": "@OUT"},
		entries:  []Entry{{Path: "foo/passwd", Type: TypeFile, Mode: 0o644, Size: 4}},
		bad:      "foo/passwd",
	}, {
		name:     "existing in-tree symlink is not traversed either",
		existing: map[string]string{"foo": "@real", "real/": ""},
		entries:  []Entry{{Path: "foo/passwd", Type: TypeFile, Mode: 0o644, Size: 4}},
		bad:      "foo/passwd",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst, outside := t.TempDir(), t.TempDir(), t.TempDir()
			// The source holds real files at those paths, so a refusal cannot be mistaken
			// for a missing source file.
			build(t, src, map[string]string{"foo/passwd": "mine", "escape": "mine"})
			existing := map[string]string{}
			for k, v := range tt.existing {
				existing[k] = strings.ReplaceAll(v, "@OUT", "@"+outside)
			}
			build(t, dst, existing)
			tree := &Tree{Root: src}
			bad := strings.ReplaceAll(tt.bad, "/OUT", outside)
			for _, e := range tt.entries {
				e.Path = strings.ReplaceAll(e.Path, "/OUT", outside)
				e.Link = strings.ReplaceAll(e.Link, "@OUT", outside)
				tree.Entries = append(tree.Entries, e)
			}
			err := tree.Materialize(dst)
			if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), bad) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, bad)
			}
			mustBeEmpty(t, outside)
			if _, err := os.Stat(filepath.Join(filepath.Dir(dst), "escape")); err == nil {
				t.Errorf("escape written next to dst")
			}
			if _, err := os.Lstat(filepath.Join(dst, "real", "passwd")); err == nil {
				t.Errorf("wrote through an in-tree symlink")
			}
		})
	}
}

func TestMaterializeSourceChanged(t *testing.T) {
	isolateGit(t)
	src, dst := t.TempDir(), t.TempDir()
	build(t, src, map[string]string{"f": "1234"})
	tree, err := Pack(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	build(t, src, map[string]string{"f": "123456789"})
	if err := tree.Materialize(dst); !errors.Is(err, errs.ErrInfra) || !strings.Contains(err.Error(), "changed") {
		t.Errorf("err = %v, want ErrInfra about a changed file", err)
	}
}
