// Package testutil holds helpers shared by hm's tests: locating the shared spec fixtures and
// gating tests on privileges.
package testutil

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// SharedDir returns the shared/ directory that sits beside the repository (CI and developer
// checkouts lay it there), or HM_SHARED_DIR. The contract fixtures live there, so a test that
// needs them fails rather than skips when it is missing.
func SharedDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("HM_SHARED_DIR"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	for _, cand := range []string{filepath.Join(root, "..", "shared"), filepath.Join(root, "shared")} {
		if st, err := os.Stat(filepath.Join(cand, "testdata")); err == nil && st.IsDir() {
			return cand
		}
	}
	t.Fatalf("shared/ fixtures not found beside %s; set HM_SHARED_DIR", root)
	return ""
}

// RepoRoot returns the repository root.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// NeedRoot skips t unless the process runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts): run the tests as root")
	}
}
