package sandbox

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hmci/hm/internal/statedir"
)

// Commit renames the upper directory: the layer is the same inode, whatever the step wrote.
func TestCommitIsRename(t *testing.T) {
	b := newBackend(t, Options{})
	const n = 100_000
	m, _ := mustRun(t, b, spec(`mkdir /data && cd /data && seq 1 `+strconv.Itoa(n)+` | xargs touch`))
	before := inode(t, filepath.Join(m.dir, "upper"))
	id := commit(t, b, m, false)
	rec, err := b.readSnap(id)
	if err != nil {
		t.Fatal(err)
	}
	if after := inode(t, b.layerDir(rec.Layers[0])); after != before {
		t.Errorf("layer inode %v, upper inode %v: Commit copied instead of renaming", after, before)
	}
	_, out := mustRun(t, b, childSpec(id, `ls /data | wc -l`))
	if strings.TrimSpace(out) != strconv.Itoa(n) {
		t.Errorf("child sees %s files, want %d", out, n)
	}
}

type devIno struct{ dev, ino uint64 }

func inode(t *testing.T, p string) devIno {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return devIno{st.Dev, st.Ino}
}

// A chain longer than MaxChain is flattened at commit and still shows exactly what the
// chain did: deletions of image files (whiteouts), directories replaced wholesale (opaque)
// and a directory recreated over an earlier deletion.
func TestFlatten(t *testing.T) {
	b := newBackend(t, Options{MaxChain: 3})
	steps := []string{
		`mkdir -p /opt/d/sub && echo 1 > /opt/d/sub/f && echo keep > /opt/keep && rm /etc/imgfile`,
		`rm -rf /etc/imgdir && mkdir /etc/imgdir && echo b > /etc/imgdir/b && rm -r /etc/imgdir2`,
		`mkdir /etc/imgdir2 && echo n > /etc/imgdir2/n && echo 2 > /opt/d/sub/f && rm /opt/keep`,
		`rm -rf /opt/d && mkdir -p /opt/d && echo fresh > /opt/d/x && echo file > /opt/keep`,
		`echo last > /workspace/last`,
	}
	want := "b\n/etc/imgdir2/n\nimgfile-gone\nfile\nx\nlast\n"
	check := `ls /etc/imgdir; find /etc/imgdir2 -type f; test -e /etc/imgfile || echo imgfile-gone; cat /opt/keep; ls /opt/d; cat /workspace/last`
	parent := ""
	for i, cmd := range steps {
		s := spec(cmd)
		if parent != "" {
			s = childSpec(parent, cmd)
		}
		m, _ := mustRun(t, b, s)
		parent = commit(t, b, m, i%2 == 0)
		rec, err := b.readSnap(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Layers) > 3 {
			t.Fatalf("step %d: chain of %d layers, want at most MaxChain 3", i, len(rec.Layers))
		}
		if i == 3 && len(rec.Layers) != 1 {
			t.Fatalf("step %d: chain of %d layers, want 1 (flattened)", i, len(rec.Layers))
		}
	}
	_, out := mustRun(t, b, childSpec(parent, check))
	if out != want {
		t.Errorf("after flattening:\n%s\nwant:\n%s", out, want)
	}
}

// A chain well past overlayfs' comfortable depth keeps working: at most MaxChain layers are
// ever mounted, and the first step's file is still there.
func TestDeepChain(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 120 steps")
	}
	b := newBackend(t, Options{})
	m, _ := mustRun(t, b, spec(`echo 0 > /workspace/first`))
	parent := commit(t, b, m, true)
	for i := 1; i < 120; i++ {
		m, _ := mustRun(t, b, childSpec(parent, `echo `+strconv.Itoa(i)+` > /workspace/n`))
		next := commit(t, b, m, true)
		if err := m.Destroy(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := b.RemoveSnapshot(context.Background(), parent); err != nil {
			t.Fatal(err)
		}
		parent = next
	}
	_, out := mustRun(t, b, childSpec(parent, `cat /workspace/first /workspace/n`))
	if out != "0\n119\n" {
		t.Errorf("end of chain sees %q", out)
	}
	rec, _ := b.readSnap(parent)
	if len(rec.Layers) > DefaultMaxChain {
		t.Errorf("chain of %d layers, over DefaultMaxChain", len(rec.Layers))
	}
	// Removed snapshots' layers are collected once nothing uses them.
	names, _ := statedir.List(filepath.Join(b.dir, "layers"))
	if len(names) > len(rec.Layers) {
		t.Errorf("%d layers stored for a chain of %d: removed snapshots' layers were kept", len(names), len(rec.Layers))
	}
}

// Removing a parent snapshot leaves its children usable; its layers go once unused.
func TestRemoveParentKeepsChild(t *testing.T) {
	b := newBackend(t, Options{})
	m, _ := mustRun(t, b, spec(`echo p > /p`))
	parent := commit(t, b, m, false)
	m, _ = mustRun(t, b, childSpec(parent, `echo c > /c`))
	child := commit(t, b, m, false)
	// The child's machine uses the parent's layer until destroyed.
	if err := m.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveSnapshot(context.Background(), parent); err != nil {
		t.Fatal(err)
	}
	g, out := mustRun(t, b, childSpec(child, `cat /p /c`))
	if out != "p\nc\n" {
		t.Errorf("grandchild sees %q", out)
	}
	if err := g.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveSnapshot(context.Background(), child); err != nil {
		t.Fatal(err)
	}
	if names, _ := statedir.List(filepath.Join(b.dir, "layers")); len(names) != 0 {
		t.Errorf("layers left after removing every snapshot: %v", names)
	}
}
