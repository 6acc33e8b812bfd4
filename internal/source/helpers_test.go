package source

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// isolateGit points every git config and excludes location at an empty temp home, so the
// machine's own ~/.gitconfig or /etc/gitconfig cannot change what a test sees.
func isolateGit(t *testing.T) (home string) {
	t.Helper()
	home = t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", "")
	t.Setenv("GIT_CONFIG_SYSTEM", "")
	return home
}

// build creates files under root from a compact spec: "d/" is a directory, a value starting
// with "@" is a symlink to the rest, anything else is a file with that content.
func build(t *testing.T, root string, spec map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(spec))
	for k := range spec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := spec[k]
		p := filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(k, "/")))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(k, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(v, "@"):
			err = os.Symlink(v[1:], p)
		default:
			err = os.WriteFile(p, []byte(v), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// listing renders a tree in build's spec notation, one path per element.
func listing(tr *Tree) []string {
	var out []string
	for _, e := range tr.Entries {
		switch e.Type {
		case TypeDir:
			out = append(out, e.Path+"/")
		case TypeSymlink:
			out = append(out, e.Path+" -> "+e.Link)
		default:
			out = append(out, e.Path)
		}
	}
	return out
}

// comparable strips what a copy legitimately does not keep: the root, sub-second mtimes
// (tar) and symlink mtimes (os.Root has no lutimes).
func comparable(tr *Tree) []Entry {
	out := slices.Clone(tr.Entries)
	for i := range out {
		out[i].ModTime = out[i].ModTime.Truncate(time.Second).UTC()
		if out[i].Type == TypeSymlink {
			out[i].ModTime = time.Time{}
		}
	}
	return out
}

// tarEntry is one member of a hand-made archive.
type tarEntry struct {
	name, link string
	typ        byte
	body       string
}

func makeTar(t *testing.T, entries ...tarEntry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0)}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if e.typ == tar.TypeDir {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// mustBeEmpty fails when anything was written into dir (the "outside" of a refusal test).
func mustBeEmpty(t *testing.T, dir string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(des) != 0 {
		t.Errorf("%s gained %d entries (first %q); something escaped", dir, len(des), des[0].Name())
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
