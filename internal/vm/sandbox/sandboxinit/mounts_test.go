package sandboxinit

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Paths are resolved inside the root: an image's absolute symlinks point into the image,
// never at the host's files, and a dangling one is replaced by a file to mount onto.
func TestRootfsResolvesInside(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "data"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"etc/resolv.conf": "/run/systemd/resolve/stub-resolv.conf", // dangling inside the root
		"etc/hosts":       "/data/hosts",                           // exists inside the root
		"tmp":             "/etc",                                  // a hostile directory link
	}
	if err := os.WriteFile(filepath.Join(root, "data/hosts"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := openRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(r.fd)

	fd, err := r.file("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if fi, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("dangling /etc/resolv.conf link not replaced by a file: %v, %v", fi, err)
	}

	fd, err = r.file("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	var got, want unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if err := unix.Stat(filepath.Join(root, "data/hosts"), &want); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Error("/etc/hosts -> /data/hosts not resolved to the root's /data/hosts")
	}

	fd, err = r.dir("/tmp/sub")
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if _, err := os.Stat(filepath.Join(root, "etc/sub")); err != nil {
		t.Errorf("/tmp -> /etc not resolved inside the root: %v", err)
	}
	if _, err := os.Stat("/etc/sub"); err == nil {
		t.Error("a directory was created on the host through the root's symlink")
	}
}
