package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/sdk"
)

func newSDKCmd(stdio IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sdk",
		Short: "The Go SDK that renders .hm/*.go",
		Long: `hm renders .hm/*.go against the Go SDK (github.com/hmci/hm/pipeline) built into it, from
any repository and offline; see the README for editor completion.`,
		Args: usageArgs(cobra.NoArgs),
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "path",
		Short: "Print the directory of the SDK module (written under the state dir if needed)",
		Long: `Print the directory of the Go module github.com/hmci/hm that holds this hm's SDK, for a
go.work that gives editors completion:

  go work init . && go work use "$(hm sdk path)"`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			stateDir, err := config.StateDir(getenvOr(stdio))
			if err != nil {
				return err
			}
			dir, err := sdk.Dir(stateDir)
			if err != nil {
				return errs.New(errs.ErrUnavailable, "state_dir", "set HM_STATE_DIR to a writable directory",
					"cannot write the Go SDK under %s: %v", stateDir, err)
			}
			_, err = fmt.Fprintln(stdio.Out, dir)
			return err
		},
	})
	return cmd
}
