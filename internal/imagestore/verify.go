package imagestore

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hmci/hm/internal/errs"
)

// Digest checks of imported archives. The root of trust is the archive's index (index.json,
// or a `docker save` manifest.json): every blob it reaches must have the digest it is
// referenced by. OCI layouts and docker save ≥ 25 name every blob by its digest
// (blobs/ALG/HEX, referenced from index.json and the manifests), so verifyBlobs checks each
// such entry against its name; an older docker save names its config by its digest
// (verifyDockerConfig), and every layer's uncompressed content must match the config's
// rootfs.diff_ids (unpackLayer, checkLayer).

// digestError is content that does not match the digest it is referenced by.
type digestError struct {
	what      string // "blob blobs/sha256/…", "layer 2", "config …"
	got, want string
	by        string // what names the wanted digest
}

func (e *digestError) Error() string {
	return fmt.Sprintf("%s has digest %s, expected %s (from %s)", e.what, e.got, e.want, e.by)
}

// tamperedArchive is the usage error for an archive whose content does not match its digests.
func tamperedArchive(file string, err error) error {
	return errs.New(errs.ErrUsage, "image_digest_mismatch",
		"the archive is corrupt or was changed after it was written: save or export the image again from a source you trust",
		"%s: %v; nothing was imported", file, err)
}

// digester returns a hash for a digest algorithm of the OCI image spec.
func digester(alg string) (hash.Hash, error) {
	switch alg {
	case "sha256":
		return sha256.New(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported digest algorithm %q", alg)
}

// verifyBlobs reads the archive at file and checks every content-addressed entry
// (blobs/ALG/HEX) against its name.
func verifyBlobs(ctx context.Context, file string) error {
	rc, err := openMaybeGzip(file)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: reading the archive: %v", file, err)
		}
		p := cleanName(hdr.Name)
		dir, want := path.Split(p)
		alg, ok := strings.CutPrefix(strings.TrimSuffix(dir, "/"), "blobs/")
		if !ok || strings.Contains(alg, "/") || hdr.Typeflag != tar.TypeReg {
			continue
		}
		h, err := digester(alg)
		if err != nil {
			return errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: blob %s: %v", file, p, err)
		}
		if _, err := io.Copy(h, tr); err != nil {
			return errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: reading blob %s: %v", file, p, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return tamperedArchive(file, &digestError{what: "blob " + p, got: alg + ":" + got, want: alg + ":" + want, by: "its path"})
		}
	}
}

// verifyDockerConfig checks a docker save config against the digest its file name carries
// ("HEX.json" in docker save < 25, "blobs/sha256/HEX" after, "sha256:HEX" from
// go-containerregistry).
func verifyDockerConfig(file, configPath string, img v1.Image) error {
	base := path.Base(configPath)
	want, ok := strings.CutSuffix(base, ".json")
	if !ok {
		want = strings.TrimPrefix(base, "sha256:")
	}
	if len(want) != sha256.Size*2 || strings.Trim(want, "0123456789abcdef") != "" {
		return nil // not named by a digest
	}
	got, err := img.ConfigName()
	if err != nil {
		return errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: config %s: %v", file, configPath, err)
	}
	if got.Hex != want {
		return tamperedArchive(file, &digestError{what: "config " + configPath, got: got.String(), want: "sha256:" + want, by: "its file name"})
	}
	return nil
}

// layerMismatch is a layer whose uncompressed content is not its diff id.
func layerMismatch(got string, diff v1.Hash) *digestError {
	return &digestError{what: "the content", got: diff.Algorithm + ":" + got, want: diff.String(), by: "the image config's rootfs.diff_ids"}
}

// readError is a failure to read a layer's content (a broken compressed stream), as opposed
// to one writing it out.
type readError struct{ err error }

func (e *readError) Error() string { return "reading the content: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// sourceReader tags the errors of r but io.EOF as readErrors.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// checkLayer hashes a layer's uncompressed content against its diff id without unpacking it.
func checkLayer(l v1.Layer, diff v1.Hash) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return &readError{err}
	}
	defer rc.Close()
	h, err := digester(diff.Algorithm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(h, sourceReader{rc}); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diff.Hex {
		return layerMismatch(got, diff)
	}
	return nil
}
