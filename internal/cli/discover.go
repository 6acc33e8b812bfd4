package cli

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// discovering are the commands that read <dir>/.hm/; started below that directory they use
// it, as git commands do a repository's .git.
var discovering = map[string]bool{"run": true, "render": true, "pipelines": true}

// discoverDir points the command's --dir at the directory holding .hm/ (see findSourceDir).
// It runs before the command, so the config, the pipelines and the workspace overlaid into
// /workspace all come from that directory, never from the subdirectory hm was started in.
func discoverDir(c *cobra.Command) error {
	fl := c.Flags().Lookup("dir")
	if !discovering[c.Name()] || fl == nil {
		return nil
	}
	return fl.Value.Set(findSourceDir(fl.Value.String()))
}

// findSourceDir returns the directory whose .hm/ hm uses when told dir: dir itself or the
// nearest parent that has .hm/. The search stops at a repository's top, a directory holding
// .git, so that a repository nested in another (a submodule, a checkout under a monorepo
// with its own pipelines) never runs its parent's pipelines over the parent's tree; and at
// the filesystem root. With no .hm/ found it returns dir, so that "no pipeline under
// DIR/.hm" names the directory the user meant. A parent of a relative dir is relative too
// ("../.."): file names in messages stay short and valid from where hm was started, as git
// prints them.
func findSourceDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	up := ""
	for d := abs; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, ".hm")); err == nil && st.IsDir() {
			if up == "" {
				return dir
			}
			if filepath.IsAbs(dir) {
				return d
			}
			return filepath.Join(dir, up)
		}
		if _, err := os.Lstat(filepath.Join(d, ".git")); err == nil || d == filepath.Dir(d) {
			return dir
		}
		up = filepath.Join(up, "..")
	}
}
