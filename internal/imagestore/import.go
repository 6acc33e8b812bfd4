package imagestore

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
)

// Formats Import recognises.
const (
	FormatRootfs = "rootfs"         // a tar of a root filesystem, optionally gzip-compressed
	FormatDocker = "docker-archive" // `docker save` output (manifest.json)
	FormatOCI    = "oci-layout"     // a tar of an OCI image layout (oci-layout, index.json)
)

// Import imports the image in the tarball at file, detecting its format: a `docker save`
// tarball, an OCI image layout tarball, or else a root filesystem tarball. Any of them may be
// gzip-compressed. The image is named name; with name empty, the archive's own tags are used
// (docker), its ref.name annotation (OCI), or the file's base name (rootfs). A name taken by
// another image moves to this one. A docker or OCI archive whose content does not match the
// digests naming it (see verify.go) is refused with a usage error (code
// image_digest_mismatch) before anything is stored.
func (s *Store) Import(ctx context.Context, file, name string) (Image, error) {
	if name != "" {
		n, err := normalizeName(name)
		if err != nil {
			return Image{}, err
		}
		name = n
	}
	format, err := detect(file)
	if err != nil {
		return Image{}, err
	}
	switch format {
	case FormatDocker:
		return s.importDocker(ctx, file, name)
	case FormatOCI:
		return s.importOCI(ctx, file, name)
	}
	return s.importRootfs(ctx, file, name)
}

// Pull fetches ref from its registry and stores it, after which it resolves offline. It
// fails with errs.ErrImageNotFound when the registry does not know ref and with
// errs.ErrUnavailable when no registry answers.
func (s *Store) Pull(ctx context.Context, ref string) (Image, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, errs.New(errs.ErrUsage, "image_name_invalid", "use a reference like NAME[:TAG] or NAME@sha256:DIGEST",
			"image reference %q: %v", ref, err)
	}
	img, err := remote.Image(r,
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return Image{}, pullError(ref, err)
	}
	n := ref
	if _, ok := r.(name.Tag); ok {
		n, _ = normalizeName(ref)
	}
	out, err := s.importImage(ctx, img, []string{n}, "registry", "")
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) || isNetError(err) {
			return Image{}, pullError(ref, err)
		}
		return Image{}, err
	}
	return out, nil
}

func pullError(ref string, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusNotFound || terr.StatusCode == http.StatusUnauthorized) {
		return &errs.ImageError{Ref: ref, Where: errs.InRegistry, Class: errs.ErrImageNotFound, Err: err,
			Msg: fmt.Sprintf("the registry does not have image %q: %v", ref, err)}
	}
	return &errs.ImageError{Ref: ref, Where: errs.InRegistry, Class: errs.ErrUnavailable, Err: err,
		Msg: fmt.Sprintf("pulling image %q: %v", ref, err)}
}

func isNetError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "dial tcp") || strings.Contains(s, "no such host") || strings.Contains(s, "connection")
}

// detect tells an archive's format by its top-level entries.
func detect(file string) (string, error) {
	rc, err := openMaybeGzip(file)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	format := FormatRootfs
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return format, nil
		}
		if err != nil {
			return "", errs.New(errs.ErrUsage, "image_archive_invalid",
				"give a rootfs, `docker save` or OCI image layout tarball", "%s is not a tar archive: %v", file, err)
		}
		switch cleanName(hdr.Name) {
		case "manifest.json":
			return FormatDocker, nil // newer `docker save` also writes an OCI layout; manifest.json names the tags
		case "oci-layout":
			format = FormatOCI
		}
	}
}

// openMaybeGzip opens file, decompressing it when it is gzip-compressed.
func openMaybeGzip(file string) (io.ReadCloser, error) {
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errs.New(errs.ErrUsage, "file_not_found", "", "%s: no such file", file)
		}
		return nil, fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
	}
	br := bufio.NewReader(f)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: bad gzip stream: %v", file, err)
		}
		return readCloser{zr, f}, nil
	}
	return readCloser{br, f}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

func (s *Store) importDocker(ctx context.Context, file, want string) (Image, error) {
	if err := verifyBlobs(ctx, file); err != nil {
		return Image{}, err
	}
	opener := func() (io.ReadCloser, error) { return openMaybeGzip(file) }
	m, err := tarball.LoadManifest(opener)
	if err != nil || len(m) == 0 {
		return Image{}, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: docker archive manifest: %v", file, err)
	}
	// With several images in the archive, the one tagged with the wanted name, else the first.
	d := m[0]
	if want != "" {
		for _, cand := range m {
			if slices.ContainsFunc(cand.RepoTags, func(t string) bool { return refKey(t) == refKey(want) }) {
				d = cand
				break
			}
		}
	}
	var tag *name.Tag
	if len(d.RepoTags) > 0 {
		t, err := name.NewTag(d.RepoTags[0])
		if err == nil {
			tag = &t
		}
	}
	if tag == nil && len(m) > 1 {
		return Image{}, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: several untagged images in one archive", file)
	}
	img, err := tarball.Image(opener, tag)
	if err != nil {
		return Image{}, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: %v", file, err)
	}
	if err := verifyDockerConfig(file, d.Config, img); err != nil {
		return Image{}, err
	}
	names := []string{want}
	if want == "" {
		names = d.RepoTags
	}
	return s.importImage(ctx, img, names, FormatDocker, file)
}

func (s *Store) importOCI(ctx context.Context, file, want string) (Image, error) {
	if err := verifyBlobs(ctx, file); err != nil {
		return Image{}, err
	}
	tmp, cleanup, err := s.tmpDir()
	if err != nil {
		return Image{}, err
	}
	defer cleanup()
	rc, err := openMaybeGzip(file)
	if err != nil {
		return Image{}, err
	}
	err = unpack(ctx, rc, tmp)
	rc.Close()
	if err != nil {
		return Image{}, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: unpacking the OCI layout: %v", file, err)
	}
	idx, err := layout.ImageIndexFromPath(tmp)
	if err != nil {
		return Image{}, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: OCI layout: %v", file, err)
	}
	img, refName, err := pickImage(idx, want)
	if err != nil {
		return Image{}, errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: %v", file, err)
	}
	names := []string{want}
	if want == "" && refName != "" {
		names = []string{refName}
	}
	return s.importImage(ctx, img, names, FormatOCI, file)
}

// Annotations naming an image in an OCI index.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// pickImage chooses the image of an OCI index: the one annotated with the wanted name, else
// the first for this platform. Nested indexes (multi-platform images) are searched too.
func pickImage(idx v1.ImageIndex, want string) (v1.Image, string, error) {
	type cand struct {
		img  v1.Image
		name string
	}
	var found []cand
	var walk func(idx v1.ImageIndex, name string) error
	walk = func(idx v1.ImageIndex, inherited string) error {
		im, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			n := inherited
			if v := d.Annotations[annotationContainerdName]; v != "" {
				n = v
			} else if v := d.Annotations[annotationRefName]; v != "" && strings.ContainsAny(v, "/:") {
				n = v // a bare tag ("latest") names no image
			}
			if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != runtime.GOARCH) {
				continue
			}
			switch {
			case d.MediaType.IsIndex():
				child, err := idx.ImageIndex(d.Digest)
				if err != nil {
					return err
				}
				if err := walk(child, n); err != nil {
					return err
				}
			case d.MediaType.IsImage():
				img, err := idx.Image(d.Digest)
				if err != nil {
					return err
				}
				found = append(found, cand{img, n})
			}
		}
		return nil
	}
	if err := walk(idx, ""); err != nil {
		return nil, "", err
	}
	if len(found) == 0 {
		return nil, "", fmt.Errorf("no image for linux/%s in the layout", runtime.GOARCH)
	}
	for _, c := range found {
		if want != "" && c.name != "" && refKey(c.name) == refKey(want) {
			return c.img, c.name, nil
		}
	}
	return found[0].img, found[0].name, nil
}

func (s *Store) importRootfs(ctx context.Context, file, want string) (Image, error) {
	rc, err := openMaybeGzip(file)
	if err != nil {
		return Image{}, err
	}
	defer rc.Close()
	tmp, cleanup, err := s.tmpDir()
	if err != nil {
		return Image{}, err
	}
	defer cleanup()
	h := sha256.New()
	if err := unpack(ctx, io.TeeReader(rc, h), filepath.Join(tmp, "0")); err != nil {
		return Image{}, unpackError(ctx, file, err)
	}
	diff := "sha256:" + hex.EncodeToString(h.Sum(nil))
	size := int64(0)
	if fi, err := os.Stat(file); err == nil {
		size = fi.Size()
	}
	names := []string{want}
	if want == "" {
		n, err := normalizeName(defaultName(file))
		if err != nil {
			return Image{}, err
		}
		names = []string{n}
	}
	img := Image{ID: diff, Names: names, Layers: []string{diff}, Size: size, Source: FormatRootfs, Created: time.Now().UTC()}
	return img, s.commit(img, map[string]string{diff: filepath.Join(tmp, "0")})
}

// defaultName derives an image name from an archive's file name: "busybox.tar.gz" → "busybox".
func defaultName(file string) string {
	n := strings.ToLower(filepath.Base(file))
	for _, ext := range []string{".gz", ".tgz", ".tar"} {
		n = strings.TrimSuffix(n, ext)
	}
	return n
}

// importImage unpacks the layers of img the store does not have yet and records it. Each
// unpacked layer's content is checked against its diff id; with archive (the file imported)
// set, so are the layers the store has already, and a mismatch is a usage error naming it.
func (s *Store) importImage(ctx context.Context, img v1.Image, names []string, source, archive string) (Image, error) {
	invalid := func(what string, err error) error {
		if archive != "" {
			return errs.New(errs.ErrUsage, "image_archive_invalid", "", "%s: %s: %v", archive, what, err)
		}
		return fmt.Errorf("imagestore: %s: %w: %w", what, errs.ErrInfra, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return Image{}, invalid("image config", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return Image{}, invalid("image layers", err)
	}
	// The layers' diff ids come from the config, which its digest pins: a layer's own
	// DiffID may be computed from its content (go-containerregistry does, for compressed
	// layers in a docker tarball), which would make any content match.
	cfg, err := img.ConfigFile()
	if err != nil {
		return Image{}, invalid("image config", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return Image{}, invalid("image config", fmt.Errorf("%d layers, but %d rootfs.diff_ids", len(layers), len(cfg.RootFS.DiffIDs)))
	}
	tmp, cleanup, err := s.tmpDir()
	if err != nil {
		return Image{}, err
	}
	defer cleanup()
	out := Image{ID: id.String(), Names: slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "" }),
		Source: source, Created: time.Now().UTC()}
	fresh := map[string]string{}
	for i, l := range layers {
		diff := cfg.RootFS.DiffIDs[i]
		out.Layers = append(out.Layers, diff.String())
		if sz, err := l.Size(); err == nil {
			out.Size += sz
		}
		if _, ok := fresh[diff.String()]; ok {
			continue
		}
		if _, err := os.Stat(s.layerDir(diff.String())); err == nil {
			// The store's copy is used, but the archive must still hold what it claims.
			if archive != "" {
				if err := checkLayer(l, diff); err != nil {
					return Image{}, layerError(ctx, archive, i, diff, err)
				}
			}
			continue
		}
		dir := filepath.Join(tmp, fmt.Sprint(i))
		if err := unpackLayer(ctx, l, diff, dir); err != nil {
			return Image{}, layerError(ctx, archive, i, diff, err)
		}
		fresh[diff.String()] = dir
	}
	return out, s.commit(out, fresh)
}

// layerError reports a failure with layer i: a digest mismatch in an archive is a usage
// error, any other an unpack error.
func layerError(ctx context.Context, archive string, i int, diff v1.Hash, err error) error {
	var de *digestError
	var re *readError
	if archive != "" && (errors.As(err, &de) || errors.As(err, &re)) && ctx.Err() == nil {
		return tamperedArchive(archive, fmt.Errorf("layer %d: %w", i+1, err))
	}
	return unpackError(ctx, "layer "+diff.String(), err)
}

func unpackError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("imagestore: %s: %w", what, ctx.Err())
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("imagestore: %s: %w: %w", what, errs.ErrInfra, err)
}

// unpackLayer unpacks one layer into dir, checking that its content matches its diff id.
func unpackLayer(ctx context.Context, l v1.Layer, diff v1.Hash, dir string) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return &readError{err}
	}
	defer rc.Close()
	h, err := digester(diff.Algorithm)
	if err != nil {
		return err
	}
	src := sourceReader{rc}
	if err := unpack(ctx, io.TeeReader(src, h), dir); err != nil {
		// Changed bytes may break the tar before the digest can tell: say which it is.
		if ctx.Err() == nil {
			var re *readError
			if _, cerr := io.Copy(h, src); errors.As(cerr, &re) {
				return cerr
			} else if got := hex.EncodeToString(h.Sum(nil)); cerr == nil && got != diff.Hex {
				return layerMismatch(got, diff)
			}
		}
		return err
	}
	// The tar reader stops at the end-of-archive marker; hash the padding after it too.
	if _, err := io.Copy(h, src); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diff.Hex {
		return layerMismatch(got, diff)
	}
	return nil
}

// commit moves freshly unpacked layers into place and writes the image's record, taking its
// names from the images that had them.
func (s *Store) commit(img Image, fresh map[string]string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	for diff, dir := range fresh {
		dst := s.layerDir(diff)
		if err := os.Rename(dir, dst); err != nil {
			if _, serr := os.Stat(dst); serr == nil {
				continue // unpacked meanwhile by another import; the tmp copy goes with tmp
			}
			return fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
		}
	}
	imgs, err := s.records()
	if err != nil {
		return err
	}
	keys := map[string]bool{}
	for _, n := range img.Names {
		keys[refKey(n)] = true
	}
	for _, other := range imgs {
		if other.ID == img.ID {
			for _, n := range other.Names {
				if !keys[refKey(n)] {
					img.Names = append(img.Names, n)
					keys[refKey(n)] = true
				}
			}
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(other.Names), func(n string) bool { return keys[refKey(n)] })
		if len(kept) != len(other.Names) {
			other.Names = kept
			if err := s.writeRecord(other); err != nil {
				return err
			}
		}
	}
	return s.writeRecord(img)
}

// tmpDir makes a scratch directory named for this process, which reconcile removes should the
// process die before cleanup runs.
func (s *Store) tmpDir() (string, func(), error) {
	if err := os.MkdirAll(filepath.Join(s.dir, "tmp"), 0o755); err != nil {
		return "", nil, fmt.Errorf("imagestore: state dir: %w: %w", errs.ErrInfra, err)
	}
	dir := filepath.Join(s.dir, "tmp", proc.NewCookie(proc.Self()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
	}
	return dir, func() { _ = statedir.RemoveAll(dir) }, nil
}
