package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarDir packs dir into a tar file with its entries in a stable order, applying change to
// each file's content.
func tarDir(t *testing.T, dir string, change func(rel string, b []byte) []byte) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b = change(rel, b)
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// `hm image import` refuses an archive whose content does not match its digests, exit 2,
// and imports nothing of it.
func TestImageImportTampered(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("importing image layers needs root (device nodes, owners)")
	}
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layerDigest, _ := layers[1].Digest()
	configDigest, _ := img.ConfigName()

	ociDir := t.TempDir()
	p, err := layout.Write(ociDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	dockerDir := t.TempDir()
	if err := tarball.WriteToFile(filepath.Join(dockerDir, "x.tar"), name.MustParseReference("example.com/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	unpacked := t.TempDir()
	untar(t, filepath.Join(dockerDir, "x.tar"), unpacked)
	var m []struct{ Config string }
	b, _ := os.ReadFile(filepath.Join(unpacked, "manifest.json"))
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 || m[0].Config != configDigest.String() {
		t.Fatalf("docker tarball manifest %s: %v", b, err)
	}

	flip := func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 0xff; return b }
	space := func(b []byte) []byte { return append(bytes.Clone(b), ' ') }
	tests := []struct {
		name   string
		dir    string
		target string // the file changed
		change func([]byte) []byte
	}{
		{"oci layer", ociDir, "blobs/sha256/" + layerDigest.Hex, flip},
		{"oci config", ociDir, "blobs/sha256/" + configDigest.Hex, space},
		{"docker config", unpacked, configDigest.String(), space},
		{"docker layer", unpacked, layerDigest.Hex + ".tar.gz", flip},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			changed := false
			file := tarDir(t, tt.dir, func(rel string, b []byte) []byte {
				if rel == tt.target {
					changed = true
					return tt.change(b)
				}
				return b
			})
			if !changed {
				t.Fatalf("no %s in the archive", tt.target)
			}
			r := e.run("image", "import", file, "tampered")
			if r.code != 2 || !strings.HasPrefix(r.stderr, "error[image_digest_mismatch]: ") || !strings.Contains(r.stderr, "\n  fix    ") {
				t.Errorf("hm image import: exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if ls := e.run("image", "ls"); strings.Contains(ls.stdout, "tampered") {
				t.Errorf("hm image ls after a refused import:\n%s", ls.stdout)
			}
			// The untampered archive imports.
			good := tarDir(t, tt.dir, func(_ string, b []byte) []byte { return b })
			if r := e.run("image", "import", good, "good"); r.code != 0 {
				t.Errorf("untampered: exit %d\n%s", r.code, r.stderr)
			}
		})
	}
}

// untar unpacks the regular files of a tar into dir.
func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return
		}
		var buf bytes.Buffer
		buf.ReadFrom(tr)
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
