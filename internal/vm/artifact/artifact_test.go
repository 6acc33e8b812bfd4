package artifact

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// workspace is the fixture both readers see: regular files, a hidden file, an executable,
// symlinks out of and inside the workspace, and a directory reached through a symlink.
func workspace(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("dist/app.tar.gz", "tarball", 0o644)
	write("dist/app.sha", "sum", 0o644)
	write("dist/.hidden", "h", 0o644)
	write("dist/bin/tool", "#!/bin/sh\n", 0o755)
	write("report.xml", "<xml/>", 0o644)
	write("src/main.go", "package main", 0o644)
	for link, target := range map[string]string{
		"dist/passwd.tar.gz": "/etc/passwd",
		"dist/inside.tar.gz": "app.tar.gz",
		"etc":                "/etc",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var cases = []struct {
	name     string
	patterns []string
	files    []File
	warnings []string
}{
	{
		name:     "glob",
		patterns: []string{"dist/*.tar.gz"},
		files:    []File{{"dist/app.tar.gz", 7, sum("tarball")}},
		warnings: []string{`artifact "dist/inside.tar.gz" is a symlink: not copied`, `artifact "dist/passwd.tar.gz" is a symlink: not copied`},
	},
	{
		name:     "directory, hidden files included",
		patterns: []string{"dist/bin", "dist/.hidden"},
		files:    []File{{"dist/.hidden", 1, sum("h")}, {"dist/bin/tool", 10, sum("#!/bin/sh\n")}},
	},
	{
		name:     "wildcard skips hidden, top level, nothing matched",
		patterns: []string{"*.xml", "dist/*.sha", "nothing/*"},
		files:    []File{{"dist/app.sha", 3, sum("sum")}, {"report.xml", 6, sum("<xml/>")}},
		warnings: []string{`artifact pattern "nothing/*" matches nothing`},
	},
	{
		name:     "never through a symlinked directory",
		patterns: []string{"etc/passwd", "etc"},
		warnings: []string{`artifact "etc" is a symlink: not copied`, `artifact pattern "etc/passwd" matches nothing`},
	},
}

func sortFiles(fs []File) []File {
	fs = slices.Clone(fs)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return fs
}

func check(t *testing.T, dst string, res Result, files []File, warnings []string) {
	t.Helper()
	if d := cmp.Diff(sortFiles(files), sortFiles(res.Files), cmpEmpty); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
	w := slices.Sorted(slices.Values(res.Warnings))
	if d := cmp.Diff(slices.Sorted(slices.Values(warnings)), w, cmpEmpty); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
	// What is in the destination is exactly the files, with their bytes.
	var got []File
	_ = filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			t.Errorf("a symlink was written: %s", p)
		}
		b, _ := os.ReadFile(p)
		rel, _ := filepath.Rel(dst, p)
		got = append(got, File{rel, int64(len(b)), sum(string(b))})
		return nil
	})
	if d := cmp.Diff(sortFiles(files), sortFiles(got), cmpEmpty); d != "" {
		t.Errorf("destination (-want +got):\n%s", d)
	}
}

var cmpEmpty = cmpopts.EquateEmpty()

func openRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestFromFS(t *testing.T) {
	ws := workspace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			c := New(openRoot(t, dst), tc.patterns)
			if err := c.FromFS(t.Context(), openRoot(t, ws).FS()); err != nil {
				t.Fatal(err)
			}
			check(t, dst, c.Result(), tc.files, tc.warnings)
			if fi, err := os.Stat(filepath.Join(dst, "dist/bin/tool")); err == nil && fi.Mode().Perm() != 0o755 {
				t.Errorf("executable copied with mode %v", fi.Mode())
			}
		})
	}
}

// archive is what docker's archive API returns for /workspace/prefix: entries named after
// the prefix's last component.
func archive(t *testing.T, ws, prefix string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	from := filepath.Join(ws, prefix)
	base := filepath.Base(from)
	if prefix == "." {
		base = "workspace"
	}
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.Join(base, rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			_, err = tw.Write(b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

func TestFromTar(t *testing.T) {
	ws := workspace(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			c := New(openRoot(t, dst), tc.patterns)
			for _, p := range Prefixes(tc.patterns) {
				if _, err := os.Lstat(filepath.Join(ws, p)); err != nil {
					continue // docker: stat says not found, nothing fetched
				}
				if err := c.FromTar(t.Context(), bytes.NewReader(archive(t, ws, p)), p); err != nil {
					t.Fatal(err)
				}
			}
			check(t, dst, c.Result(), tc.files, tc.warnings)
		})
	}
}

func TestPrefixes(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"dist/*.tar.gz", "dist/bin/x", "report.xml"}, []string{"dist", "report.xml"}},
		{[]string{"a/b", "a-b/c", "a/*/d"}, []string{"a", "a-b/c"}},
		{[]string{"*.xml", "dist"}, []string{"."}},
	} {
		if d := cmp.Diff(tc.want, Prefixes(tc.in)); d != "" {
			t.Errorf("Prefixes(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestBounds(t *testing.T) {
	ws := workspace(t)
	for _, tc := range []struct {
		name     string
		files    int
		bytes    int64
		patterns []string
	}{
		{"bytes", MaxFiles, 8, []string{"dist/app.tar.gz", "report.xml"}},
		{"files", 1, MaxBytes, []string{"dist/app.tar.gz", "report.xml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(openRoot(t, t.TempDir()), tc.patterns)
			c.maxFiles, c.maxBytes = tc.files, tc.bytes
			if err := c.FromFS(t.Context(), openRoot(t, ws).FS()); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
		})
	}
}
