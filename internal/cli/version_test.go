package cli

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVersionLine(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name            string
		bi              *debug.BuildInfo
		ldVersion, ldRv string
		want            string
	}{
		{"released module", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}}, "", "",
			"hm v1.2.3 (commit unknown) go1.26.8"},
		{"checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")}, "", "",
			"hm devel (commit 0123456789ab) go1.26.8"},
		{"dirty checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")}, "", "",
			"hm devel (commit 0123456789ab+dirty) go1.26.8"},
		{"no VCS stamp, ldflags", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "v2.0.0", "fedcba9876543210",
			"hm v2.0.0 (commit fedcba987654) go1.26.8"},
		{"stamp wins over ldflags", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: vcs("false")}, "v0.0.1", "ffff",
			"hm v1.2.3 (commit 0123456789ab) go1.26.8"},
		{"nothing known", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "",
			"hm devel (commit unknown) go1.26.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldV, oldC := Version, Commit
			Version, Commit = tt.ldVersion, tt.ldRv
			defer func() { Version, Commit = oldV, oldC }()
			want := tt.want + " " + runtime.GOOS + "/" + runtime.GOARCH
			if diff := cmp.Diff(want, versionLine(tt.bi, true)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestFindSourceDir(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{
		"repo/.git", "repo/.hm", "repo/src/deep",
		"repo/nested/.git", "repo/nested/sub", // a repository inside another: its top is a boundary
		"plain/.hm", "plain/a/b", // no repository: up to the filesystem root
		"empty/x",
	} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct{ dir, want string }{
		{"repo", "repo"},
		{"repo/src/deep", "repo"},
		{"repo/nested/sub", "repo/nested/sub"},
		{"repo/nested", "repo/nested"},
		{"plain/a/b", "plain"},
		{"empty/x", "empty/x"},
	}
	for _, tt := range tests {
		got := findSourceDir(filepath.Join(root, tt.dir))
		if want := filepath.Join(root, tt.want); got != want {
			t.Errorf("findSourceDir(%s) = %s, want %s", tt.dir, got, want)
		}
	}
	// Relative in, relative out.
	t.Chdir(filepath.Join(root, "repo", "src", "deep"))
	for dir, want := range map[string]string{".": "../..", "..": "../..", "../../.": "../../.", "x/..": "../.."} {
		if got := findSourceDir(dir); got != want {
			t.Errorf("findSourceDir(%q) in repo/src/deep = %q, want %q", dir, got, want)
		}
	}
}
