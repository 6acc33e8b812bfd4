package imagestore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
)

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	xattr            map[string]string
}

func tarOf(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)),
			Format: tar.FormatPAX}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		for k, v := range e.xattr {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, data []byte, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func gz(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// describe lists a layer directory as "path kind detail" lines, for comparison.
func describe(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		var line string
		switch m := fi.Mode(); {
		case m.IsDir():
			line = rel + " dir " + m.Perm().String()[1:]
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(p, OpaqueXattr, buf); err == nil {
				line += " opaque=" + string(buf[:n])
			}
		case m&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line = rel + " -> " + target
		case m&fs.ModeCharDevice != 0:
			line = rel + " chardev " + strings.Join([]string{itoa(unix.Major(st.Rdev)), itoa(unix.Minor(st.Rdev))}, ":")
		case m&fs.ModeNamedPipe != 0:
			line = rel + " fifo"
		case m.IsRegular():
			b, _ := os.ReadFile(p)
			line = rel + " file " + fi.Mode().String() + " " + string(b)
			if st.Nlink > 1 {
				line += " links=" + itoa(st.Nlink)
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func itoa[T uint32 | uint64](v T) string { return strconv.FormatUint(uint64(v), 10) }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: device nodes, owners and trusted.* xattrs")
	}
}

var rootfsEntries = []entry{
	{name: "./", typ: tar.TypeDir, mode: 0o755},
	{name: "bin/", typ: tar.TypeDir, mode: 0o755},
	{name: "bin/tool", typ: tar.TypeReg, mode: 0o4755, body: "tool"},
	{name: "bin/alias", typ: tar.TypeLink, link: "bin/tool"},
	{name: "bin/sh", typ: tar.TypeSymlink, link: "/bin/tool"},
	{name: "etc/", typ: tar.TypeDir, mode: 0o700},
	{name: "etc/conf", typ: tar.TypeReg, body: "c", xattr: map[string]string{"user.hm": "v"}},
	{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
	{name: "run/fifo", typ: tar.TypeFifo},
	{name: "opq/.wh..wh..opq", typ: tar.TypeReg},
	{name: "opq/kept", typ: tar.TypeReg, body: "k"},
	{name: "gone/.wh.file", typ: tar.TypeReg},
	// Hostile entries: none may write outside the layer.
	{name: "../escape", typ: tar.TypeReg, body: "x"},
	{name: "/abs", typ: tar.TypeReg, body: "a"},
	{name: "out", typ: tar.TypeSymlink, link: "/tmp"},
	{name: "out/hm-imagestore-escape", typ: tar.TypeReg, body: "x"},
	{name: "hard", typ: tar.TypeLink, link: "../../etc/passwd"},
}

func TestImportRootfs(t *testing.T) {
	needRoot(t)
	data := tarOf(t, rootfsEntries[:12])
	for _, compressed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gzip"}[compressed], func(t *testing.T) {
			s := Open(t.TempDir())
			file := writeFile(t, data, "my-rootfs.tar")
			if compressed {
				file = writeFile(t, gz(t, data), "my-rootfs.tar.gz")
			}
			img, err := s.Import(t.Context(), file, "")
			if err != nil {
				t.Fatal(err)
			}
			if img.Source != FormatRootfs || len(img.Layers) != 1 || img.ID != img.Layers[0] {
				t.Errorf("image %+v", img)
			}
			if diff := cmp.Diff([]string{"my-rootfs:latest"}, img.Names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			r, err := s.Resolve(t.Context(), "my-rootfs")
			if err != nil {
				t.Fatal(err)
			}
			want := []string{
				"bin dir rwxr-xr-x",
				"bin/alias file urwxr-xr-x tool links=2",
				"bin/sh -> /bin/tool",
				"bin/tool file urwxr-xr-x tool links=2",
				"dev dir rwxr-xr-x",
				"dev/null chardev 0:0",
				"etc dir rwx------",
				"etc/conf file -rw-r--r-- c",
				"gone dir rwxr-xr-x",
				"gone/file chardev 0:0",
				"opq dir rwxr-xr-x opaque=y",
				"opq/kept file -rw-r--r-- k",
				"run dir rwxr-xr-x",
				"run/fifo fifo",
			}
			if diff := cmp.Diff(want, describe(t, r.Dirs[0])); diff != "" {
				t.Errorf("layer (-want +got):\n%s", diff)
			}
			buf := make([]byte, 8)
			if n, err := unix.Lgetxattr(filepath.Join(r.Dirs[0], "etc/conf"), "user.hm", buf); err != nil || string(buf[:n]) != "v" {
				t.Errorf("xattr user.hm = %q, %v", buf[:n], err)
			}
		})
	}
}

func TestImportConfined(t *testing.T) {
	needRoot(t)
	s := Open(t.TempDir())
	// The hard link to ../../etc/passwd must fail the import rather than link a host file.
	if _, err := s.Import(t.Context(), writeFile(t, tarOf(t, rootfsEntries), "evil.tar"), ""); err == nil {
		t.Error("import of a hard link leaving the layer succeeded")
	}
	if _, err := os.Stat("/tmp/hm-imagestore-escape"); err == nil {
		os.Remove("/tmp/hm-imagestore-escape")
		t.Error("an entry was written through a symlink to /tmp")
	}
	s = Open(t.TempDir())
	img, err := s.Import(t.Context(), writeFile(t, tarOf(t, rootfsEntries[:16]), "evil.tar"), "evil")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/tmp/hm-imagestore-escape"); err == nil {
		os.Remove("/tmp/hm-imagestore-escape")
		t.Error("an entry was written through a symlink to /tmp")
	}
	r, _ := s.Resolve(t.Context(), img.ID)
	got := describe(t, r.Dirs[0])
	for _, want := range []string{"escape file -rw-r--r-- x", "abs file -rw-r--r-- a", "out/hm-imagestore-escape file -rw-r--r-- x"} {
		if !contains(got, want) {
			t.Errorf("layer lacks %q (names must be confined to the layer): %v", want, got)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// testImage is a two-layer image: the second layer deletes a file and replaces a directory.
func testImage(t *testing.T) v1.Image {
	t.Helper()
	l1 := tarOf(t, []entry{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/a", typ: tar.TypeReg, body: "a"},
		{name: "bin/b", typ: tar.TypeReg, body: "b"},
		{name: "data/", typ: tar.TypeDir, mode: 0o755},
		{name: "data/old", typ: tar.TypeReg, body: "old"},
	})
	l2 := tarOf(t, []entry{
		{name: "bin/.wh.b", typ: tar.TypeReg},
		{name: "data/", typ: tar.TypeDir, mode: 0o755},
		{name: "data/.wh..wh..opq", typ: tar.TypeReg},
		{name: "data/new", typ: tar.TypeReg, body: "new"},
	})
	var layers []v1.Layer
	for _, data := range [][]byte{l1, l2} {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkImage checks that img was stored with its two layers in overlayfs form.
func checkImage(t *testing.T, s *Store, ref string, src v1.Image, want Image) {
	t.Helper()
	got, err := s.Get(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := src.ConfigName()
	want.ID = id.String()
	layers, _ := src.Layers()
	for _, l := range layers {
		d, _ := l.DiffID()
		want.Layers = append(want.Layers, d.String())
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".Created" || p.Last().String() == ".Size"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("image (-want +got):\n%s", diff)
	}
	r, err := s.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Dirs) != 2 {
		t.Fatalf("Resolve dirs %v, want 2", r.Dirs)
	}
	if diff := cmp.Diff([]string{"bin dir rwxr-xr-x", "bin/a file -rw-r--r-- a", "bin/b file -rw-r--r-- b",
		"data dir rwxr-xr-x", "data/old file -rw-r--r-- old"}, describe(t, r.Dirs[0])); diff != "" {
		t.Errorf("lower layer (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"bin dir rwxr-xr-x", "bin/b chardev 0:0", "data dir rwxr-xr-x opaque=y",
		"data/new file -rw-r--r-- new"}, describe(t, r.Dirs[1])); diff != "" {
		t.Errorf("upper layer (-want +got):\n%s", diff)
	}
}

func TestImportDockerArchive(t *testing.T) {
	needRoot(t)
	img := testImage(t)
	file := filepath.Join(t.TempDir(), "saved.tar")
	if err := tarball.WriteToFile(file, name.MustParseReference("example.com/team/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	s := Open(t.TempDir())
	if _, err := s.Import(t.Context(), file, ""); err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, "example.com/team/app:v1", img, Image{Names: []string{"example.com/team/app:v1"}, Source: FormatDocker})
	// Also gzip-compressed, under a name of our choosing (the same image gets both names).
	data, _ := os.ReadFile(file)
	if _, err := s.Import(t.Context(), writeFile(t, gz(t, data), "saved.tar.gz"), "mine"); err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, "mine", img, Image{Names: []string{"mine:latest", "example.com/team/app:v1"}, Source: FormatDocker})
}

func TestImportOCILayout(t *testing.T) {
	needRoot(t)
	img := testImage(t)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{annotationRefName: "example.com/oci/app:v2"})); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "oci.tar")
	if out, err := exec.Command("tar", "-cf", file, "-C", dir, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	s := Open(t.TempDir())
	if _, err := s.Import(t.Context(), file, ""); err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, "example.com/oci/app:v2", img, Image{Names: []string{"example.com/oci/app:v2"}, Source: FormatOCI})
	names, _ := statedir.List(filepath.Join(s.dir, "tmp"))
	if len(names) != 0 {
		t.Errorf("tmp/ left behind: %v", names)
	}
}

func TestResolveListRemove(t *testing.T) {
	needRoot(t)
	s := Open(t.TempDir())
	ctx := t.Context()
	if r, err := s.Resolve(ctx, HostID); err != nil || r.ID != HostID || !cmp.Equal(r.Dirs, []string{"/"}) {
		t.Errorf("Resolve(host) = %+v, %v", r, err)
	}
	_, err := s.Resolve(ctx, "nope")
	var e *errs.ImageError
	if !errors.Is(err, errs.ErrImageNotFound) || !errors.As(err, &e) || e.Ref != "nope" || e.Where != errs.InStore {
		t.Errorf("Resolve(nope) = %#v, want an *errs.ImageError for nope in the store", err)
	} else if strings.Contains(e.Msg, "hm image") {
		t.Errorf("Resolve(nope) = %q: CLI advice in the image store's error", e.Msg)
	}
	a, err := s.Import(ctx, writeFile(t, tarOf(t, []entry{{name: "a", typ: tar.TypeReg, body: "a"}}), "a.tar"), "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, writeFile(t, tarOf(t, []entry{{name: "a", typ: tar.TypeReg, body: "a"}}), "a.tar"), "docker.io/library/alias:1"); err != nil {
		t.Fatal(err)
	}
	b, err := s.Import(ctx, writeFile(t, tarOf(t, []entry{{name: "b", typ: tar.TypeReg, body: "b"}}), "b.tar"), "beta")
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"alpha": a.ID, "alpha:latest": a.ID, "docker.io/library/alpha:latest": a.ID, "alias:1": a.ID,
		a.ID: a.ID, strings.TrimPrefix(a.ID, "sha256:")[:12]: a.ID, "beta": b.ID,
	} {
		if r, err := s.Resolve(ctx, ref); err != nil || r.ID != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", ref, r.ID, err, want)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v", list, err)
	}
	// The name moves: importing another image as "beta" untags the first.
	if _, err := s.Import(ctx, writeFile(t, tarOf(t, []entry{{name: "c", typ: tar.TypeReg, body: "c"}}), "c.tar"), "beta"); err != nil {
		t.Fatal(err)
	}
	if old, _ := s.Get(ctx, b.ID); len(old.Names) != 0 {
		t.Errorf("old beta still named %v", old.Names)
	}
	// Untag one of two names: the image stays.
	if err := s.Remove(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "alpha"); !errors.Is(err, errs.ErrImageNotFound) {
		t.Errorf("alpha resolves after its removal: %v", err)
	}
	if _, err := s.Resolve(ctx, "alias:1"); err != nil {
		t.Errorf("alias:1 gone with alpha: %v", err)
	}
	// Removing the last name removes the image and its layer.
	if err := s.Remove(ctx, "alias:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.layerDir(a.Layers[0])); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("layer of a removed image kept: %v", err)
	}
	if err := s.Remove(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "alias:1"); !errors.Is(err, errs.ErrImageNotFound) {
		t.Errorf("second Remove = %v, want ErrImageNotFound", err)
	}
	if err := s.Remove(ctx, HostID); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("Remove(host) = %v, want ErrUsage", err)
	}
	if list, _ := s.List(ctx); len(list) != 1 {
		t.Errorf("List after removals = %v, want the third image", list)
	}
	if names, _ := statedir.List(filepath.Join(s.dir, "trash")); len(names) != 0 {
		t.Errorf("trash left: %v", names)
	}
}

func TestPull(t *testing.T) {
	needRoot(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	host := strings.TrimPrefix(srv.URL, "http://")
	img := testImage(t)
	ref := host + "/team/app:v1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	s := Open(t.TempDir())
	got, err := s.Pull(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	var ie *errs.ImageError
	if _, err := s.Pull(t.Context(), host+"/team/app:missing"); !errors.Is(err, errs.ErrImageNotFound) ||
		!errors.As(err, &ie) || ie.Where != errs.InRegistry || ie.Ref != host+"/team/app:missing" {
		t.Errorf("Pull of a missing tag = %v, want an ImageError of class ErrImageNotFound from the registry", err)
	}
	srv.Close()
	// Offline now: the pulled image still resolves.
	checkImage(t, s, ref, img, Image{Names: []string{ref}, Source: "registry"})
	if got.Source != "registry" {
		t.Errorf("Pull = %+v", got)
	}
	if _, err := s.Pull(t.Context(), host+"/team/app:v1"); !errors.Is(err, errs.ErrUnavailable) ||
		!errors.As(err, &ie) || ie.Where != errs.InRegistry {
		t.Errorf("Pull with the registry gone = %v, want an ImageError of class ErrUnavailable from the registry", err)
	}
}

func TestImportErrors(t *testing.T) {
	s := Open(t.TempDir())
	if _, err := s.Import(t.Context(), "/nonexistent.tar", ""); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("missing file: %v, want ErrUsage", err)
	}
	if _, err := s.Import(t.Context(), writeFile(t, []byte("not a tar at all, not at all"), "x.tar"), ""); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("not a tar: %v, want ErrUsage", err)
	}
	if _, err := s.Import(t.Context(), writeFile(t, tarOf(t, nil), "x.tar"), "Bad Name"); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("bad name: %v, want ErrUsage", err)
	}
}

func TestReconcile(t *testing.T) {
	s := Open(t.TempDir())
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ghost, err := proc.OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadTmp := filepath.Join(s.dir, "tmp", proc.NewCookie(ghost))
	liveTmp := filepath.Join(s.dir, "tmp", proc.NewCookie(proc.Self()))
	deadTrash := filepath.Join(s.dir, "trash", proc.NewCookie(ghost))
	for _, d := range []string{deadTmp, liveTmp, deadTrash} {
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{deadTmp: false, liveTmp: true, deadTrash: false} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", d, err == nil, want)
		}
	}
}
