package imagestore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/statedir"
)

// archive is a tar's entries in order.
type archive struct {
	names []string
	data  map[string][]byte
}

func (a *archive) add(name string, data []byte) {
	if a.data == nil {
		a.data = map[string][]byte{}
	}
	a.names = append(a.names, name)
	a.data[name] = data
}

func (a *archive) bytes(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range a.names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(a.data[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(a.data[n])
	}
	tw.Close()
	return buf.Bytes()
}

func readArchive(t *testing.T, file string) *archive {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := &archive{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return a
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			a.add(cleanName(h.Name), b)
		}
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// uncompressedLayers are testImage's layers as plain tars, as docker save writes them.
func uncompressedLayers(t *testing.T) [][]byte {
	t.Helper()
	layers, err := testImage(t).Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		out = append(out, b)
	}
	return out
}

func dockerConfig(t *testing.T, layers [][]byte) []byte {
	cfg := v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"}}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, v1.Hash{Algorithm: "sha256", Hex: sha(l)})
	}
	return mustJSON(t, cfg)
}

// dockerLegacy is `docker save` before 25: HEX.json config, ID/layer.tar layers.
func dockerLegacy(t *testing.T) *archive {
	layers := uncompressedLayers(t)
	cfg := dockerConfig(t, layers)
	a := &archive{}
	var paths []string
	for i, l := range layers {
		p := sha([]byte{byte(i)}) + "/layer.tar" // a v1 layer id, not a digest
		a.add(p, l)
		paths = append(paths, p)
	}
	a.add(sha(cfg)+".json", cfg)
	a.add("manifest.json", mustJSON(t, []map[string]any{{"Config": sha(cfg) + ".json", "RepoTags": []string{"example.com/app:v1"}, "Layers": paths}}))
	return a
}

// dockerOCI is `docker save` from 25 on: an OCI layout whose blobs manifest.json names too.
func dockerOCI(t *testing.T) *archive {
	layers := uncompressedLayers(t)
	cfg := dockerConfig(t, layers)
	a := &archive{}
	a.add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha(cfg)}}}
	var paths []string
	for _, l := range layers {
		a.add("blobs/sha256/"+sha(l), l)
		paths = append(paths, "blobs/sha256/"+sha(l))
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: int64(len(l)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha(l)}})
	}
	a.add("blobs/sha256/"+sha(cfg), cfg)
	mb := mustJSON(t, m)
	a.add("blobs/sha256/"+sha(mb), mb)
	a.add("index.json", mustJSON(t, v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex,
		Manifests: []v1.Descriptor{{MediaType: types.OCIManifestSchema1, Size: int64(len(mb)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha(mb)},
			Annotations: map[string]string{annotationContainerdName: "example.com/app:v1"}}}}))
	a.add("manifest.json", mustJSON(t, []map[string]any{{"Config": "blobs/sha256/" + sha(cfg), "RepoTags": []string{"example.com/app:v1"}, "Layers": paths}}))
	return a
}

// ggcrDocker is go-containerregistry's docker tarball: sha256:HEX config, gzip layers.
func ggcrDocker(t *testing.T) *archive {
	file := filepath.Join(t.TempDir(), "saved.tar")
	if err := tarball.WriteToFile(file, name.MustParseReference("example.com/app:v1"), testImage(t)); err != nil {
		t.Fatal(err)
	}
	return readArchive(t, file)
}

// ociLayout is an OCI image layout with gzip layers.
func ociLayout(t *testing.T) *archive {
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(testImage(t), layout.WithAnnotations(map[string]string{annotationRefName: "example.com/app:v1"})); err != nil {
		t.Fatal(err)
	}
	a := &archive{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			a.add(rel, b)
		}
		return nil
	})
	return a
}

// parts names an archive's config, first layer and (OCI) image manifest entries.
func parts(t *testing.T, a *archive) (config, layer, manifest string) {
	t.Helper()
	if b, ok := a.data["manifest.json"]; ok {
		var m []struct {
			Config string
			Layers []string
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		config, layer = m[0].Config, m[0].Layers[0]
	}
	if b, ok := a.data["index.json"]; ok {
		var idx v1.IndexManifest
		if err := json.Unmarshal(b, &idx); err != nil {
			t.Fatal(err)
		}
		manifest = "blobs/sha256/" + idx.Manifests[0].Digest.Hex
		var m v1.Manifest
		if err := json.Unmarshal(a.data[manifest], &m); err != nil {
			t.Fatal(err)
		}
		config, layer = "blobs/sha256/"+m.Config.Digest.Hex, "blobs/sha256/"+m.Layers[0].Digest.Hex
	}
	return config, layer, manifest
}

// Tampering changes bytes and leaves every digest that names them as it was.
type tamper func(t *testing.T, b []byte) []byte

// inLayer changes a layer's tar, through its compression if it has one.
func inLayer(change func(tarball []byte)) tamper {
	return func(t *testing.T, b []byte) []byte {
		out := bytes.Clone(b)
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil { // a plain tar
			change(out)
			return out
		}
		raw, _ := io.ReadAll(zr)
		change(raw)
		return gz(t, raw)
	}
}

var (
	layerBody   = inLayer(func(b []byte) { b[1024] ^= 1 }) // the body of bin/a, the layer's second entry
	layerHeader = inLayer(func(b []byte) { b[0] ^= 1 })    // the first entry's name: the tar breaks
	layerCut    = func(t *testing.T, b []byte) []byte { return b[:len(b)/2] }
	jsonSpace   = func(t *testing.T, b []byte) []byte { return append(bytes.Clone(b), ' ') } // still valid JSON
)

// storeState lists what an image store holds: records, layers and scratch directories.
func storeState(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	for _, d := range []string{"images", "layers", "tmp"} {
		names, _ := statedir.List(filepath.Join(s.dir, d))
		for _, n := range names {
			out = append(out, d+"/"+n)
		}
	}
	sort.Strings(out)
	return out
}

// A tampered archive is refused as a usage error (exit 2), whatever its format and whatever
// part was changed, and leaves the store as it was, also when the store already has the
// image's layers.
func TestImportVerifiesDigests(t *testing.T) {
	needRoot(t)
	formats := []struct {
		name  string
		build func(t *testing.T) *archive
	}{
		{"docker save", dockerLegacy},
		{"docker save 25", dockerOCI},
		{"go-containerregistry tarball", ggcrDocker},
		{"oci layout", ociLayout},
	}
	tampers := []struct {
		name  string
		part  string // config, layer or manifest
		apply tamper
	}{
		{"layer body", "layer", layerBody},
		{"layer header", "layer", layerHeader},
		{"layer truncated", "layer", layerCut},
		{"config", "config", jsonSpace},
		{"image manifest", "manifest", jsonSpace},
	}
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			good := f.build(t)
			goodFile := writeFile(t, good.bytes(t), "good.tar")
			if _, err := Open(t.TempDir()).Import(t.Context(), goodFile, ""); err != nil {
				t.Fatalf("the untampered archive: %v", err)
			}
			for _, tt := range tampers {
				for _, preloaded := range []bool{false, true} {
					config, layer, manifest := parts(t, good)
					target := map[string]string{"config": config, "layer": layer, "manifest": manifest}[tt.part]
					if target == "" {
						continue // no image manifest in this format
					}
					t.Run(tt.name+map[bool]string{true: " layers in store"}[preloaded], func(t *testing.T) {
						s := Open(t.TempDir())
						if preloaded {
							if _, err := s.Import(t.Context(), goodFile, "other"); err != nil {
								t.Fatal(err)
							}
						}
						before := storeState(t, s)
						bad := &archive{names: good.names, data: map[string][]byte{}}
						for n, b := range good.data {
							bad.data[n] = b
						}
						bad.data[target] = tt.apply(t, good.data[target])
						_, err := s.Import(t.Context(), writeFile(t, bad.bytes(t), "bad.tar"), "")
						var e *errs.Error
						if !errors.As(err, &e) || !errors.Is(err, errs.ErrUsage) || errs.ExitCode(err) != 2 || e.Fix == "" {
							t.Fatalf("Import = %v, want a usage error with a fix", err)
						}
						if e.Code != "image_digest_mismatch" && e.Code != "image_archive_invalid" {
							t.Errorf("error code %q", e.Code)
						}
						t.Logf("%s: %v", e.Code, err)
						if diff := cmp.Diff(before, storeState(t, s)); diff != "" {
							t.Errorf("store changed (-before +after):\n%s", diff)
						}
					})
				}
			}
		})
	}
}
