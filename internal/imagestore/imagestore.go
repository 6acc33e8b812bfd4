// Package imagestore keeps the root filesystem images of the sandbox backend under the state
// dir: imported from a rootfs tarball, an OCI image layout tarball or a `docker save`
// tarball, or pulled from a registry, each unpacked once into overlayfs lower directories.
//
// # State
//
// Everything lives under STATE/images:
//
//	layers/HEX    one image layer, unpacked in overlayfs form (whiteouts are 0/0 character
//	              devices, opaque directories carry trusted.overlay.opaque=y); HEX is the
//	              layer's diff id, the sha256 of its uncompressed tar, so images share layers
//	meta/HEX.json an image record (Image); HEX is the image id's digest
//	tmp/COOKIE    a layer being unpacked by the hm process COOKIE names
//	trash/COOKIE  something being deleted
//	lock          flock(2) serialising record and layer changes across hm processes
//
// A layer appears by a rename once fully unpacked and verified, a record by a rename once
// written, so a crash leaves only tmp/ and trash/ entries, which Reconcile removes.
//
// The pseudo-image "host" (HostID) is the host's root filesystem, read-only, as the only
// layer: Resolve("host") returns "/" as its layer directory. It is not stored.
package imagestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
)

// HostID is the id (and reference) of the pseudo-image made of the host's root filesystem.
const HostID = "host"

// Store is the image store. It is safe for concurrent use, also by several hm processes
// sharing one state dir.
type Store struct {
	dir string
}

// Open returns the store keeping its state under stateDir/images. Nothing is created until
// the first import.
func Open(stateDir string) *Store {
	return &Store{dir: filepath.Join(stateDir, "images")}
}

// Dir is the store's directory (STATE/images).
func (s *Store) Dir() string { return s.dir }

// Image is one stored image.
type Image struct {
	// ID is "sha256:HEX": the config digest of an OCI or Docker image, the digest of the
	// uncompressed tar of a rootfs tarball; HostID for the host pseudo-image.
	ID string `json:"id"`
	// Names are the references the image answers to, as given ("busybox:latest").
	Names []string `json:"names"`
	// Layers are the layers' diff ids ("sha256:HEX"), lowest first.
	Layers []string `json:"layers"`
	// Size is the total size of the unpacked layers' tar streams, in bytes.
	Size int64 `json:"size"`
	// Source says where the image came from: "rootfs", "docker-archive", "oci-layout",
	// "registry" or "host".
	Source string `json:"source"`
	// Created is when the image was imported or pulled.
	Created time.Time `json:"created"`
}

// Resolved is what an image reference names now: the image id and its layer directories.
type Resolved struct {
	ID string
	// Dirs are the layers' directories, lowest first, ready to be overlayfs lower layers.
	Dirs []string
}

// hostImage is the record Resolve and List show for HostID.
func hostImage() Image {
	return Image{ID: HostID, Names: []string{HostID}, Layers: []string{"/"}, Source: "host"}
}

// notFound is the error for a reference the store does not hold.
func notFound(ref string) error {
	return &errs.ImageError{Ref: ref, Where: errs.InStore, Class: errs.ErrImageNotFound,
		Msg: fmt.Sprintf("image %q is not in the image store", ref)}
}

// Resolve maps a reference (a name, an image id "sha256:HEX", a unique prefix of at least 12
// hex digits of one, or HostID) to the image and its layer directories. Unknown references
// fail with errs.ErrImageNotFound; so does an image whose layers have gone missing.
func (s *Store) Resolve(ctx context.Context, ref string) (Resolved, error) {
	img, err := s.Get(ctx, ref)
	if err != nil {
		return Resolved{}, err
	}
	if img.ID == HostID {
		return Resolved{ID: HostID, Dirs: []string{"/"}}, nil
	}
	dirs := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		dirs[i] = s.layerDir(l)
		if _, err := os.Stat(dirs[i]); err != nil {
			return Resolved{}, fmt.Errorf("imagestore: image %s: layer %s: %w: %w", img.ID, l, errs.ErrImageNotFound, err)
		}
	}
	return Resolved{ID: img.ID, Dirs: dirs}, nil
}

// Get returns the record of the image ref names; see Resolve for the forms of ref.
func (s *Store) Get(ctx context.Context, ref string) (Image, error) {
	if ref == HostID {
		return hostImage(), nil
	}
	imgs, err := s.records()
	if err != nil {
		return Image{}, err
	}
	if img, ok := match(imgs, ref); ok {
		return img, nil
	}
	return Image{}, notFound(ref)
}

// match finds the image ref names among imgs: by id, by name, then by unique id prefix.
func match(imgs []Image, ref string) (Image, bool) {
	hex := strings.TrimPrefix(ref, "sha256:")
	for _, img := range imgs {
		if img.ID == ref || img.ID == "sha256:"+ref {
			return img, true
		}
	}
	key := refKey(ref)
	for _, img := range imgs {
		for _, n := range img.Names {
			if refKey(n) == key {
				return img, true
			}
		}
	}
	if len(hex) >= 12 && isHex(hex) {
		var found []Image
		for _, img := range imgs {
			if strings.HasPrefix(strings.TrimPrefix(img.ID, "sha256:"), hex) {
				found = append(found, img)
			}
		}
		if len(found) == 1 {
			return found[0], true
		}
	}
	return Image{}, false
}

// refKey is the canonical form names are compared in: "busybox", "busybox:latest" and
// "docker.io/library/busybox:latest" are one name.
func refKey(ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ref
	}
	return r.Name()
}

// normalizeName validates a name for an image and adds the ":latest" tag when it has none.
func normalizeName(n string) (string, error) {
	r, err := name.ParseReference(n)
	if err != nil {
		return "", errs.New(errs.ErrUsage, "image_name_invalid",
			"use a name like NAME[:TAG], lower case", "image name %q: %v", n, err)
	}
	if _, ok := r.(name.Tag); ok && !strings.Contains(n[strings.LastIndexByte(n, '/')+1:], ":") {
		return n + ":latest", nil
	}
	return n, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// List returns the stored images, most recently created first. The host pseudo-image is
// not among them.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	imgs, err := s.records()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(imgs, func(a, b Image) int { return b.Created.Compare(a.Created) })
	return imgs, nil
}

// Remove removes a reference. A name is untagged; the image itself goes, with the layers no
// other image uses, once it has no name left or when ref is its id. Removing HostID fails
// with errs.ErrUsage; an unknown ref with errs.ErrImageNotFound.
func (s *Store) Remove(ctx context.Context, ref string) error {
	if ref == HostID {
		return errs.New(errs.ErrUsage, "image_builtin", "", "the host image is built in and cannot be removed")
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	imgs, err := s.records()
	if err != nil {
		return err
	}
	img, ok := match(imgs, ref)
	if !ok {
		return notFound(ref)
	}
	key := refKey(ref)
	kept := slices.DeleteFunc(slices.Clone(img.Names), func(n string) bool { return refKey(n) == key })
	if len(kept) > 0 && len(kept) < len(img.Names) {
		img.Names = kept
		return s.writeRecord(img)
	}
	if err := s.discard(s.recordPath(img.ID)); err != nil {
		return fmt.Errorf("imagestore: remove %s: %w: %w", img.ID, errs.ErrInfra, err)
	}
	return s.gcLayers()
}

// gcLayers deletes the layers no record uses. The caller holds the lock.
func (s *Store) gcLayers() error {
	imgs, err := s.records()
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, img := range imgs {
		for _, l := range img.Layers {
			used[filepath.Base(s.layerDir(l))] = true
		}
	}
	names, err := statedir.List(filepath.Join(s.dir, "layers"))
	if err != nil {
		return fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
	}
	var errList []error
	for _, n := range names {
		if !used[n] {
			errList = append(errList, s.discard(filepath.Join(s.dir, "layers", n)))
		}
	}
	if err := errors.Join(errList...); err != nil {
		return fmt.Errorf("imagestore: removing layers: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// Reconcile removes what crashed imports left behind: half-unpacked layers and trash of hm
// processes that no longer exist.
func (s *Store) Reconcile(ctx context.Context) error {
	var errList []error
	for _, sub := range []string{"tmp", "trash"} {
		names, err := statedir.List(filepath.Join(s.dir, sub))
		if err != nil {
			errList = append(errList, err)
			continue
		}
		for _, n := range names {
			if o, ok := proc.CookieOwner(n); ok && !o.Alive() {
				errList = append(errList, statedir.RemoveAll(filepath.Join(s.dir, sub, n)))
			}
		}
	}
	if err := errors.Join(errList...); err != nil {
		return fmt.Errorf("imagestore: reconcile: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// layerDir maps a diff id to its directory.
func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.dir, "layers", strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Store) recordPath(id string) string {
	return filepath.Join(s.dir, "meta", strings.TrimPrefix(id, "sha256:")+".json")
}

// records reads every image record. Records are replaced by rename, so each read sees a
// whole one.
func (s *Store) records() ([]Image, error) {
	dir := filepath.Join(s.dir, "meta")
	names, err := statedir.List(dir)
	if err != nil {
		return nil, fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
	}
	var imgs []Image
	for _, n := range names {
		if !strings.HasSuffix(n, ".json") {
			continue // a record being written
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
		}
		var img Image
		if err := json.Unmarshal(b, &img); err != nil {
			return nil, fmt.Errorf("imagestore: record %s: %w: %w", n, errs.ErrInfra, err)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// writeRecord writes img's record atomically. The caller holds the lock.
func (s *Store) writeRecord(img Image) error {
	b, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return err
	}
	p := s.recordPath(img.ID)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("imagestore: %w: %w", errs.ErrInfra, err)
	}
	return nil
}

// lock takes the store's lock, creating the store's directories on first use.
func (s *Store) lock() (unlock func(), err error) {
	// Root's alone: image layers hold setuid binaries and device nodes, which must be out
	// of reach of the host's other users.
	// Chmod too: MkdirAll leaves an existing directory's mode alone and applies the umask.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("imagestore: state dir: %w: %w", errs.ErrInfra, err)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("imagestore: state dir: %w: %w", errs.ErrInfra, err)
	}
	for _, d := range []string{"layers", "meta", "tmp", "trash"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("imagestore: state dir: %w: %w", errs.ErrInfra, err)
		}
	}
	return statedir.Lock(filepath.Join(s.dir, "lock"))
}

// discard deletes p: renamed into trash first, so that it stops looking valid at once and a
// crash mid-delete leaves only trash. Absent p is not an error.
func (s *Store) discard(p string) error {
	t := filepath.Join(s.dir, "trash", proc.NewCookie(proc.Self()))
	if err := os.Rename(p, t); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return statedir.RemoveAll(t)
}
