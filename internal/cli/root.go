// Package cli implements hm's command line (spec/cli.md) on top of the engine packages.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/errs"
)

// IO are the process's streams; tests substitute them.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
	Getenv   func(string) string
}

// Main runs hm with args and returns the process exit code.
func Main(ctx context.Context, args []string, stdio IO) int {
	root := newRoot(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if ec, ok := err.(exitCode); ok {
		return int(ec)
	}
	if strings.HasPrefix(err.Error(), "unknown command") {
		err = errs.New(errs.ErrUsage, "usage", "see `hm --help` for the commands", "%v", err)
	}
	printError(stdio.Err, err)
	return errs.ExitCode(err)
}

// exitCode ends a command with a code after it already reported what happened.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func newRoot(stdio IO) *cobra.Command {
	root := &cobra.Command{
		Use:           "hm",
		Short:         "hm runs CI pipelines in sandboxes, with copy-on-write snapshots and a cache",
		SilenceErrors: true,
		SilenceUsage:  true,
		CompletionOptions: cobra.CompletionOptions{
			DisableDefaultCmd: true,
		},
		Version: buildVersion(),
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			return discoverDir(c)
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return errs.New(errs.ErrUsage, "usage", fmt.Sprintf("see `%s --help`", c.CommandPath()), "%v", err)
	})
	root.AddCommand(newRunCmd(stdio), newRenderCmd(stdio), newPipelinesCmd(stdio), newInitCmd(stdio), newCacheCmd(stdio), newImageCmd(stdio), newVersionCmd(stdio), newSDKCmd(stdio))
	root.AddCommand(newLogsCmd(stdio), newBuildsCmd(stdio), newServerCmd(stdio), newAgentCmd(stdio))
	return root
}

// usageArgs wraps cobra's positional-argument checks into usage errors.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := check(c, args); err != nil {
			return errs.New(errs.ErrUsage, "usage", fmt.Sprintf("see `%s --help`", c.CommandPath()), "%v", err)
		}
		return nil
	}
}

func getenvOr(stdio IO) func(string) string {
	if stdio.Getenv != nil {
		return stdio.Getenv
	}
	return os.Getenv
}
