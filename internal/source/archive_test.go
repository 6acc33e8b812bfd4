package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

// member is one tar entry of an archive as a test sees it.
type member struct {
	Name, Link, Body string
	Type             byte
	Mode             int64
	Uid, Gid         int
	Uname, Gname     string
	ModTime          int64
}

func members(t *testing.T, a *Archive) []member {
	t.Helper()
	r, err := a.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []member
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, member{Name: hdr.Name, Link: hdr.Linkname, Body: string(body), Type: hdr.Typeflag,
			Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid, Uname: hdr.Uname, Gname: hdr.Gname, ModTime: hdr.ModTime.Unix()})
	}
}

func archive(t *testing.T, root string) *Archive {
	t.Helper()
	tree, err := Pack(context.Background(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := tree.WriteArchive(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Remove() })
	return a
}

// TestArchiveReproducible: the digest depends on contents, modes and links only, never on
// mtimes or the order in which the tree was created.
func TestArchiveReproducible(t *testing.T) {
	isolateGit(t)
	spec := map[string]string{"a.txt": "alpha\n", "d/b.txt": "beta\n", "d/e/": "", "l": "@d/b.txt", "z/c": "gamma"}
	ref := t.TempDir()
	build(t, ref, spec)
	want := archive(t, ref).Digest

	tests := []struct {
		name   string
		mutate func(t *testing.T, root string)
		same   bool
	}{
		{"same tree", func(*testing.T, string) {}, true},
		{"other mtimes", func(t *testing.T, root string) {
			old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
			for _, p := range []string{"a.txt", "d/b.txt", "d/e", "d", "z/c", "z"} {
				if err := os.Chtimes(filepath.Join(root, p), old, old); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
		{"created in another order", func(t *testing.T, root string) {
			for _, p := range []string{"z", "d", "a.txt", "l"} {
				if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range []string{"z/c", "l", "d/e/", "d/b.txt", "a.txt"} {
				build(t, root, map[string]string{k: spec[k]})
			}
		}, true},
		{"an ignored file added", func(t *testing.T, root string) {
			build(t, root, map[string]string{".git/info/exclude": "*.log\n", "x.log": "noise"})
		}, true},
		{"content changed", func(t *testing.T, root string) {
			build(t, root, map[string]string{"a.txt": "ALPHA\n"})
		}, false},
		{"mode changed", func(t *testing.T, root string) {
			if err := os.Chmod(filepath.Join(root, "a.txt"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"link target changed", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "l"))
			build(t, root, map[string]string{"l": "@a.txt"})
		}, false},
		{"empty directory added", func(t *testing.T, root string) {
			build(t, root, map[string]string{"new/": ""})
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			build(t, root, spec)
			tc.mutate(t, root)
			got := archive(t, root).Digest
			if (got == want) != tc.same {
				t.Errorf("digest %s, reference %s: same = %v, want %v", got, want, got == want, tc.same)
			}
		})
	}
}

// TestArchiveContents: what an archive holds, header by header, and that Digest and Size are
// those of its bytes.
func TestArchiveContents(t *testing.T) {
	isolateGit(t)
	root := t.TempDir()
	build(t, root, map[string]string{
		".gitignore": "build/\n*.o\n", "main.c": "int main;\n", "main.o": "obj", "build/out": "x",
		"run.sh": "#!/bin/sh\n", "dir/": "", "dir/up": "@../main.c", "abs": "@/etc/passwd",
		".hm/pipeline.yaml": "steps: []\n", ".git/HEAD": "ref\n",
	})
	if err := os.Chmod(filepath.Join(root, "run.sh"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	a := archive(t, root)

	file := func(name, body string, mode int64) member {
		return member{Name: name, Body: body, Type: tar.TypeReg, Mode: mode}
	}
	want := []member{
		file(".gitignore", "build/\n*.o\n", 0o644),
		{Name: "abs", Link: "/etc/passwd", Type: tar.TypeSymlink, Mode: 0o777},
		{Name: "dir/", Type: tar.TypeDir, Mode: 0o700},
		{Name: "dir/up", Link: "../main.c", Type: tar.TypeSymlink, Mode: 0o777},
		file("main.c", "int main;\n", 0o644),
		file("run.sh", "#!/bin/sh\n", 0o750),
	}
	if diff := cmp.Diff(want, members(t, a)); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}

	b, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := (Archive{Digest: DigestPrefix + hex.EncodeToString(sum[:]), Size: int64(len(b)), Path: a.Path}); got != *a {
		t.Errorf("archive %+v, its bytes say %+v", *a, got)
	}
}

// TestArchiveRoundTrip: extracting an archive gives back the tree (symlinks as links, modes),
// with the extraction time as every mtime.
func TestArchiveRoundTrip(t *testing.T) {
	isolateGit(t)
	root := t.TempDir()
	build(t, root, map[string]string{"a": "1", "d/b": "2", "d/empty/": "", "d/l": "@../a", "x": "@/nowhere"})
	if err := os.Chmod(filepath.Join(root, "d", "b"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(filepath.Join(root, "a"), old, old); err != nil {
		t.Fatal(err)
	}
	a := archive(t, root)
	dst := t.TempDir()
	r, err := a.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := time.Now().Add(-time.Second)
	if err := ExtractArchive(r, a.Digest, dst); err != nil {
		t.Fatal(err)
	}
	want, err := Pack(context.Background(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Pack(context.Background(), dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	noTime := func(es []Entry) []Entry {
		for i := range es {
			es[i].ModTime = time.Time{}
		}
		return es
	}
	for _, e := range got.Entries {
		if e.Type != TypeSymlink && e.ModTime.Before(before) {
			t.Errorf("%s: mtime %v, want the extraction time", e.Path, e.ModTime)
		}
	}
	if diff := cmp.Diff(noTime(want.Entries), noTime(got.Entries)); diff != "" {
		t.Errorf("extracted tree (-want +got):\n%s", diff)
	}
}

// TestArchiveRefused: no archive holds a path leaving its root, and no archive extracts one;
// bytes that are not the digest's are refused.
func TestArchiveRefused(t *testing.T) {
	writeTests := []struct {
		name  string
		entry Entry
	}{
		{"parent component", Entry{Path: "../x", Type: TypeDir}},
		{"absolute", Entry{Path: "/etc/x", Type: TypeDir}},
		{"inner parent component", Entry{Path: "a/../../x", Type: TypeDir}},
		{"the root itself", Entry{Path: ".", Type: TypeDir}},
	}
	for _, tc := range writeTests {
		t.Run("write/"+tc.name, func(t *testing.T) {
			tree := &Tree{Root: t.TempDir(), Entries: []Entry{tc.entry}}
			dir := t.TempDir()
			_, err := tree.WriteArchive(context.Background(), dir)
			if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), tc.entry.Path) {
				t.Errorf("err = %v, want errs.ErrInvalid naming %q", err, tc.entry.Path)
			}
			mustBeEmpty(t, dir) // no half-written archive left behind
		})
	}

	gz := func(t *testing.T, tarball *bytes.Buffer) ([]byte, string) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write(tarball.Bytes()); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b.Bytes())
		return b.Bytes(), DigestPrefix + hex.EncodeToString(sum[:])
	}
	extractTests := []struct {
		name    string
		entries []tarEntry
		digest  func(good string) string
		want    error
	}{
		{"parent component", []tarEntry{{name: "../evil", typ: tar.TypeReg, body: "x"}}, nil, errs.ErrInvalid},
		{"absolute", []tarEntry{{name: "/evil", typ: tar.TypeReg, body: "x"}}, nil, errs.ErrInvalid},
		{"through a symlink", []tarEntry{{name: "l", link: "..", typ: tar.TypeSymlink}, {name: "l/evil", typ: tar.TypeReg, body: "x"}}, nil, errs.ErrInvalid},
		{"hard link out", []tarEntry{{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}}, nil, errs.ErrInvalid},
		{"wrong digest", []tarEntry{{name: "ok", typ: tar.TypeReg, body: "x"}},
			func(string) string { return DigestPrefix + strings.Repeat("0", 64) }, ErrDigestMismatch},
		{"malformed digest", []tarEntry{{name: "ok", typ: tar.TypeReg, body: "x"}},
			func(good string) string { return strings.TrimPrefix(good, DigestPrefix) }, errs.ErrInvalid},
	}
	for _, tc := range extractTests {
		t.Run("extract/"+tc.name, func(t *testing.T) {
			outside := t.TempDir()
			dst := filepath.Join(outside, "a", "b")
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			b, digest := gz(t, makeTar(t, tc.entries...))
			if tc.digest != nil {
				digest = tc.digest(digest)
			}
			err := ExtractArchive(bytes.NewReader(b), digest, dst)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(outside, "evil")); err == nil {
				t.Errorf("an entry escaped to %s", outside)
			}
		})
	}
}

// TestExtractArchiveTree: the tree returned is the archive's entries rooted at the extracted
// directory (what a walk of the source saw, a .gitignore'd name it held included), with the
// extraction time as every mtime, and it materializes.
func TestExtractArchiveTree(t *testing.T) {
	isolateGit(t)
	root := t.TempDir()
	build(t, root, map[string]string{"a": "1", "d/b": "22", "d/empty/": "", "d/l": "@../a"})
	want, err := Pack(context.Background(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A .gitignore that would drop "a" if the extracted tree were walked again.
	build(t, root, map[string]string{".gitignore": "a\n"})
	want.Entries = append([]Entry{{Path: ".gitignore", Type: TypeFile, Mode: 0o644, Size: 2}}, want.Entries...)
	want.Size += 2
	a, err := want.WriteArchive(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dst := t.TempDir()
	got, err := ExtractArchiveTree(r, a.Digest, dst)
	if err != nil {
		t.Fatal(err)
	}
	if got.Root != dst || got.Size != want.Size {
		t.Errorf("root %s size %d, want %s %d", got.Root, got.Size, dst, want.Size)
	}
	noTime := func(es []Entry) []Entry {
		es = slices.Clone(es)
		for i := range es {
			es[i].ModTime = time.Time{}
		}
		return es
	}
	if diff := cmp.Diff(noTime(want.Entries), noTime(got.Entries)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
	out := t.TempDir()
	if err := got.Materialize(out); err != nil {
		t.Fatal(err)
	}
	if s := readFile(t, filepath.Join(out, "a")); s != "1" {
		t.Errorf("materialized a = %q", s)
	}
}
