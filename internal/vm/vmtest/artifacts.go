package vmtest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// testArtifacts checks vm.ArtifactCopier, which every backend implements: from a child's
// snapshot (so that a backend merging layers shows what the child deleted, replaced and
// added over its parent's files) exactly the matching regular files come out, with their
// bytes; symlinks (to a file outside the workspace, to a directory outside it, to a file
// inside it) are refused, not followed; nothing else is written.
func testArtifacts(t *testing.T, e *env) {
	c, ok := e.fx.Backend.(vm.ArtifactCopier)
	if !ok {
		t.Fatal("the backend does not implement vm.ArtifactCopier")
	}
	parent, _ := e.rootRun(nil, `mkdir -p dist/sub d keep && echo gone > dist/gone.txt && echo old > dist/a.txt &&
		echo lower > d/lower && echo kept > keep/k && seq 1 20000 > dist/sub/seq`)
	snap := e.commit(parent, true)
	m := e.create(e.child(snap, `echo new > dist/a.txt && rm dist/gone.txt && rm -rf d && mkdir d && echo upper > d/upper &&
		printf 'x\0y' > dist/bin && chmod 755 dist/bin && echo .h > dist/.hidden &&
		ln -s /etc/passwd dist/passwd.txt && ln -s a.txt dist/inside.txt && ln -s /etc etc && mkfifo dist/fifo.txt`))
	if r := e.run(t.Context(), m); r.code != 0 {
		t.Fatalf("child exited %d, stderr %q", r.code, r.stderr)
	}
	child := e.commit(m, true)

	dst := t.TempDir()
	root, err := os.OpenRoot(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	res, err := c.CopyArtifacts(t.Context(), child, e.owner(), []string{"dist/*", "d", "etc/passwd", "missing/*.txt"}, root)
	if err != nil {
		t.Fatalf("CopyArtifacts: %v", err)
	}
	seq := seqOutput(20000)
	want := []artifact.File{
		{Path: "d/upper", Size: 6, SHA256: sum("upper\n")},
		{Path: "dist/a.txt", Size: 4, SHA256: sum("new\n")},
		{Path: "dist/bin", Size: 3, SHA256: sum("x\x00y")},
		{Path: "dist/sub/seq", Size: int64(len(seq)), SHA256: sum(seq)},
	}
	byPath := cmpopts.SortSlices(func(a, b artifact.File) bool { return a.Path < b.Path })
	if d := cmp.Diff(want, res.Files, byPath); d != "" {
		t.Errorf("copied (-want +got):\n%s", d)
	}
	wantWarn := []string{
		`artifact "dist/fifo.txt" is not a regular file: not copied`,
		`artifact "dist/inside.txt" is a symlink: not copied`,
		`artifact "dist/passwd.txt" is a symlink: not copied`,
		`artifact "etc" is a symlink: not copied`,
		`artifact pattern "etc/passwd" matches nothing`,
		`artifact pattern "missing/*.txt" matches nothing`,
	}
	if d := cmp.Diff(wantWarn, slices.Sorted(slices.Values(res.Warnings))); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
	var got []artifact.File
	err = filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			t.Errorf("%s written as %v", p, d.Type())
			return nil
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dst, p)
		got = append(got, artifact.File{Path: rel, Size: int64(len(b)), SHA256: sum(string(b))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, byPath); d != "" {
		t.Errorf("the destination holds (-want +got):\n%s", d)
	}
	if fi, err := os.Stat(filepath.Join(dst, "dist/bin")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("executable artifact: %v, %v", fi, err)
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
