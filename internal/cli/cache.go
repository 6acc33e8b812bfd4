package cli

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/execution/local"
	"github.com/hmci/hm/internal/registry"
)

func newCacheCmd(stdio IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect and free the snapshot cache",
		Args:  usageArgs(cobra.NoArgs),
	}
	var backend string
	cmd.PersistentFlags().StringVar(&backend, "backend", "", "only this backend's entries (default: all)")

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List cache entries, most recently used first",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			reg, _, err := openRegistry(c.Context(), stdio, registry.OpenReadOnly)
			if err != nil || reg == nil {
				return err
			}
			defer reg.Close()
			es, err := reg.List(c.Context(), backend)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BACKEND\tPIPELINE\tSTEP\tKEY\tAGE\tLAST USED\tSIZE")
			now := time.Now()
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Backend, orDash(e.Pipeline), e.StepKey, shortKey(e.Key),
					ago(now.Sub(e.Created)), ago(now.Sub(e.LastUsed)), humanSize(e.Size))
			}
			return tw.Flush()
		},
	}

	var keep int
	var olderThan time.Duration
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete all but the most recently used entries (--keep) or entries unused for a while (--older-than)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("keep") && !c.Flags().Changed("older-than") {
				return usage("give --keep N and/or --older-than DURATION (or use `hm cache clean`)", "cache prune needs a limit")
			}
			if !c.Flags().Changed("keep") {
				keep = 0
			}
			return removeEntries(c.Context(), stdio, func(reg *registry.Registry) ([]registry.Entry, error) {
				return reg.Prune(c.Context(), backend, keep, olderThan)
			})
		},
	}
	prune.Flags().IntVar(&keep, "keep", 0, "keep the N most recently used entries")
	prune.Flags().DurationVar(&olderThan, "older-than", 0, "delete entries not used for this long, e.g. 168h")

	clean := &cobra.Command{
		Use:   "clean",
		Short: "Delete every cache entry and its snapshot",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			return removeEntries(c.Context(), stdio, func(reg *registry.Registry) ([]registry.Entry, error) {
				return reg.Clean(c.Context(), backend)
			})
		},
	}
	cmd.AddCommand(ls, prune, clean)
	return cmd
}

// openRegistry opens the state dir's registry with open (registry.OpenReadOnly where nothing
// is written: a full disk or a read-only state dir must not stop `hm cache ls`); nil (no
// error) when there is none yet.
func openRegistry(ctx context.Context, stdio IO, open func(context.Context, string) (*registry.Registry, error)) (*registry.Registry, string, error) {
	stateDir, err := config.StateDir(getenvOr(stdio))
	if err != nil {
		return nil, "", err
	}
	path := local.RegistryPath(stateDir)
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintln(stdio.Err, "the cache is empty")
		return nil, stateDir, nil
	}
	reg, err := open(ctx, path)
	return reg, stateDir, err
}

// removeEntries deletes registry rows with del, then their snapshots. A snapshot whose backend
// cannot be opened now stays until that backend's next reconcile (it is unreferenced).
func removeEntries(ctx context.Context, stdio IO, del func(*registry.Registry) ([]registry.Entry, error)) error {
	reg, stateDir, err := openRegistry(ctx, stdio, registry.Open)
	if err != nil || reg == nil {
		return err
	}
	defer reg.Close()
	es, err := del(reg)
	if err != nil {
		return err
	}
	var freed int64
	left := 0
	for _, e := range es {
		b, err := openVM(ctx, e.Backend, stateDir, vmOptions{})
		if err == nil {
			err = b.RemoveSnapshot(ctx, e.Snapshot)
			closeVM(b)
		}
		if err != nil {
			left++
			continue
		}
		freed += e.Size
	}
	fmt.Fprintf(stdio.Err, "removed %d cache entries (%s)\n", len(es), humanSize(freed))
	if left > 0 {
		fmt.Fprintf(stdio.Err, "%d snapshots could not be deleted now; the next run of their backend removes them\n", left)
	}
	return nil
}

func shortKey(k string) string {
	if len(k) > 12 {
		return k[:12]
	}
	return k
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func humanSize(n int64) string {
	if n <= 0 {
		return "-"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
