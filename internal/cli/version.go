package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version and Commit are the fallbacks for a build without module or VCS information (`go
// run`, a tarball, -buildvcs=false):
//
//	go build -ldflags "-X github.com/hmci/hm/internal/cli.Version=v1.2.3 -X github.com/hmci/hm/internal/cli.Commit=$(git rev-parse HEAD)" ./cmd/hm
//
// What the Go toolchain stamped wins over them: it cannot go stale.
var (
	Version = ""
	Commit  = ""
)

// versionLine is what `hm version` and `hm --version` print: hm, the module version ("devel"
// when unknown), the commit ("+dirty" when the tree had changes) and the toolchain.
func versionLine(bi *debug.BuildInfo, ok bool) string {
	version, commit, dirty := Version, Commit, false
	goVersion := runtime.Version()
	if ok {
		goVersion = bi.GoVersion
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if version == "" {
		version = "devel"
	}
	if len(commit) > 12 {
		commit = commit[:12]
	}
	switch {
	case commit == "":
		commit = "unknown"
	case dirty:
		commit += "+dirty"
	}
	return fmt.Sprintf("hm %s (commit %s) %s %s/%s", version, commit, goVersion, runtime.GOOS, runtime.GOARCH)
}

func buildVersion() string { return versionLine(debug.ReadBuildInfo()) }

func newVersionCmd(stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print hm's version and commit",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(stdio.Out, buildVersion())
			return err
		},
	}
}
