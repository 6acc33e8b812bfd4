package source

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

func TestTarRoundTrip(t *testing.T) {
	isolateGit(t)
	src := t.TempDir()
	long := strings.Repeat("a-very-long-directory-name/", 6) + strings.Repeat("f", 120)
	build(t, src, map[string]string{
		".gitignore":    "*.log\n",
		"dropped.log":   "",
		"README.md":     "hello\n",
		"bin/tool":      strings.Repeat("\x00\x01binary", 10000),
		"empty/":        "",
		"link":          "@README.md",
		"outside":       "@/etc/passwd",
		"unicodé/ñ.txt": "ü",
		long:            "long name",
		"long-link":     "@" + long,
	})
	if err := os.Chmod(filepath.Join(src, "bin/tool"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	tree, err := Pack(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"", "workspace/"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tree.WriteTar(&buf, prefix); err != nil {
				t.Fatal(err)
			}
			names := tarNames(t, buf.Bytes())
			if len(names) != len(tree.Entries) {
				t.Errorf("tar has %d members, tree %d", len(names), len(tree.Entries))
			}
			for _, n := range names {
				if !strings.HasPrefix(n, prefix) {
					t.Errorf("member %q lacks prefix %q", n, prefix)
				}
			}
			dst := t.TempDir()
			if err := ExtractTar(&buf, dst); err != nil {
				t.Fatal(err)
			}
			got, err := Pack(context.Background(), filepath.Join(dst, prefix), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(comparable(tree), comparable(got)); diff != "" {
				t.Errorf("extracted tree (-packed +extracted):\n%s", diff)
			}
			if got := readFile(t, filepath.Join(dst, prefix, "bin/tool")); got != readFile(t, filepath.Join(src, "bin/tool")) {
				t.Errorf("bin/tool content differs")
			}
		})
	}
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

func TestExtractTarOverlay(t *testing.T) {
	dst := t.TempDir()
	build(t, dst, map[string]string{"keep": "k", "a": "old", "d/": "", "b": "@keep"})
	in := makeTar(t,
		tarEntry{name: "./", typ: tar.TypeDir},
		tarEntry{name: "./a", typ: tar.TypeReg, body: "new"},
		tarEntry{name: "d/f", typ: tar.TypeReg, body: "f"},
		tarEntry{name: "b", typ: tar.TypeReg, body: "b"},
		tarEntry{name: "h", typ: tar.TypeLink, link: "d/f"},
		tarEntry{name: "p/q/r", typ: tar.TypeReg, body: "r"}, // parents not in the archive
	)
	if err := ExtractTar(in, dst); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"keep": "k", "a": "new", "d/f": "f", "b": "b", "h": "f", "p/q/r": "r"} {
		if got := readFile(t, filepath.Join(dst, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dst, "b")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("b should have replaced the symlink with a file: %v %v", fi, err)
	}
	if got := readFile(t, filepath.Join(dst, "keep")); got != "k" {
		t.Errorf("wrote through the old b symlink: keep = %q", got)
	}
}

func TestExtractTarRefusals(t *testing.T) {
	tests := []struct {
		name     string
		existing map[string]string // built in dst first; "{OUT}" is the outside dir
		entries  []tarEntry        // "{OUT}" in a name or link is the outside dir
		bad      string            // the entry the error must name
	}{{
		name:    "absolute path",
		entries: []tarEntry{{name: "{OUT}/passwd", typ: tar.TypeReg, body: "x"}},
		bad:     "{OUT}/passwd",
	}, {
		name:    "dot-dot component",
		entries: []tarEntry{{name: "../escape", typ: tar.TypeReg, body: "x"}},
		bad:     "../escape",
	}, {
		name:    "dot-dot in a directory entry",
		entries: []tarEntry{{name: "a/../../up/", typ: tar.TypeDir}},
		bad:     "a/../../up/",
	}, {
		name: "archive symlink then a path through it",
		entries: []tarEntry{
			{name: "foo", typ: tar.TypeSymlink, link: "{OUT}"},
			{name: "foo/passwd", typ: tar.TypeReg, body: "x"},
		},
		bad: "foo/passwd",
	}, {
		name: "archive relative symlink then a directory through it",
		entries: []tarEntry{
			{name: "foo", typ: tar.TypeSymlink, link: "../../../../../../../..{OUT}"},
			{name: "foo/sub/", typ: tar.TypeDir},
		},
		bad: "foo/sub/",
	}, {
		name:     "existing symlink then a path through it",
		existing: map[string]string{"foo": "@{OUT}"},
		entries:  []tarEntry{{name: "foo/passwd", typ: tar.TypeReg, body: "x"}},
		bad:      "foo/passwd",
	}, {
		name:    "hard link with dot-dot target",
		entries: []tarEntry{{name: "h", typ: tar.TypeLink, link: "../../..{OUT}/secret"}},
		bad:     "h",
	}, {
		name:    "hard link with absolute target",
		entries: []tarEntry{{name: "h", typ: tar.TypeLink, link: "{OUT}/secret"}},
		bad:     "h",
	}, {
		name: "hard link through a symlink",
		entries: []tarEntry{
			{name: "foo", typ: tar.TypeSymlink, link: "{OUT}"},
			{name: "h", typ: tar.TypeLink, link: "foo/secret"},
		},
		bad: "h",
	}, {
		name:    "device node",
		entries: []tarEntry{{name: "dev", typ: tar.TypeChar}},
		bad:     "dev",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, outside := t.TempDir(), t.TempDir()
			// A file a hard link could try to reach; it must stay the only entry outside.
			secret := filepath.Join(outside, "secret")
			if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
				t.Fatal(err)
			}
			existing := map[string]string{}
			for k, v := range tt.existing {
				existing[k] = strings.ReplaceAll(v, "{OUT}", outside)
			}
			build(t, dst, existing)
			var entries []tarEntry
			for _, e := range tt.entries {
				e.name = strings.ReplaceAll(e.name, "{OUT}", outside)
				e.link = strings.ReplaceAll(e.link, "{OUT}", outside)
				entries = append(entries, e)
			}
			err := ExtractTar(makeTar(t, entries...), dst)
			bad := strings.ReplaceAll(tt.bad, "{OUT}", outside)
			if !errors.Is(err, errs.ErrInvalid) || !strings.Contains(err.Error(), `"`+bad+`"`) {
				t.Fatalf("err = %v, want ErrInvalid naming %q", err, bad)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			des, err := os.ReadDir(outside)
			if err != nil || len(des) != 1 {
				t.Errorf("outside changed: %v %v", des, err)
			}
			if fi, err := os.Stat(secret); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Errorf("secret gained a hard link")
			}
			for _, p := range []string{"escape", "up", "passwd", "h"} {
				if _, err := os.Lstat(filepath.Join(filepath.Dir(dst), p)); err == nil {
					t.Errorf("%s written next to dst", p)
				}
			}
		})
	}
}
