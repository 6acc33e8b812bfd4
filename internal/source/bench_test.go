package source

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// genTree writes ~10k small files in 100 directories, with a .gitignore at both levels.
func genTree(b *testing.B) string {
	b.Helper()
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, ".gitignore"), []byte("*.o\nbuild/\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	for d := range 100 {
		dir := filepath.Join(root, fmt.Sprintf("pkg%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("*.tmp\n!keep.tmp\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		for f := range 100 {
			name := filepath.Join(dir, fmt.Sprintf("file%03d.go", f))
			if err := os.WriteFile(name, []byte("package x\n"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return root
}

func BenchmarkPack(b *testing.B) {
	b.Setenv("HOME", b.TempDir())
	b.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	root := genTree(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Pack(context.Background(), root, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteTar(b *testing.B) {
	b.Setenv("HOME", b.TempDir())
	b.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	tree, err := Pack(context.Background(), genTree(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := tree.WriteTar(io.Discard, "workspace/"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteArchive is what a remote build pays once, and a local one never does.
func BenchmarkWriteArchive(b *testing.B) {
	b.Setenv("HOME", b.TempDir())
	b.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	tree, err := Pack(context.Background(), genTree(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	for b.Loop() {
		a, err := tree.WriteArchive(context.Background(), dir)
		if err != nil {
			b.Fatal(err)
		}
		_ = a.Remove()
	}
}
