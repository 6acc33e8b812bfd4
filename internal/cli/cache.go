package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
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
		Long: `List cache entries, most recently used first. ID is the entry's id, as the cache miss and
hit lines of hm run show it and hm cache rm takes it.`,
		Args: usageArgs(cobra.NoArgs),
	}
	asJSON := listFormat(ls)
	ls.RunE = func(c *cobra.Command, _ []string) error {
		jsonOut, err := asJSON()
		if err != nil {
			return err
		}
		reg, _, err := openRegistry(c.Context(), stdio, openForListing, !jsonOut)
		if err != nil {
			return err
		}
		var es []registry.Entry
		if reg != nil {
			defer reg.Close()
			if es, err = reg.List(c.Context(), backend); err != nil {
				return err
			}
		}
		if jsonOut {
			return writeJSONList(stdio.Out, entriesJSON(es))
		}
		if reg == nil {
			return nil
		}
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSOURCE\tPIPELINE\tSTEP\tIMAGE\tBACKEND\tSIZE\tAGE\tLAST USED")
		now := time.Now()
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID(), orDash(e.SourceDir), orDash(e.Pipeline),
				e.StepKey, orDash(e.Image), e.Backend, humanSize(e.Size), ago(now.Sub(e.Created)), ago(now.Sub(e.LastUsed)))
		}
		return tw.Flush()
	}

	rm := &cobra.Command{
		Use:   "rm ID...",
		Short: "Delete cache entries (by the id hm cache ls shows, or a unique prefix of it) and their snapshots",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, ids []string) error {
			return removeEntries(c.Context(), stdio, func(reg *registry.Registry) ([]registry.Entry, error) {
				es, err := reg.List(c.Context(), backend)
				if err != nil {
					return nil, err
				}
				chosen, err := selectByID(es, ids)
				if err != nil {
					return nil, err
				}
				return reg.Delete(c.Context(), chosen)
			})
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
	cmd.AddCommand(ls, rm, prune, clean, newCacheDirsCmd(stdio, &backend))
	return cmd
}

// cacheEntryJSON is an entry in hm cache ls --format json. Field names are stable.
type cacheEntryJSON struct {
	ID          string    `json:"id"`
	SourceDir   string    `json:"source_dir"` // "" when unknown (entries of an older hm)
	Pipeline    string    `json:"pipeline"`
	Step        string    `json:"step"`
	Image       string    `json:"image"` // the chain root's image as written; "" when unknown
	Backend     string    `json:"backend"`
	Base        string    `json:"base"` // the resolved root image
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"` // "" for entries of an older hm: they never hit
	Snapshot    string    `json:"snapshot"`
	SizeBytes   int64     `json:"size_bytes"` // 0 when unknown
	Created     time.Time `json:"created"`
	LastUsed    time.Time `json:"last_used"`
}

func entriesJSON(es []registry.Entry) []cacheEntryJSON {
	out := make([]cacheEntryJSON, len(es))
	for i, e := range es {
		out[i] = cacheEntryJSON{ID: e.ID(), SourceDir: e.SourceDir, Pipeline: e.Pipeline, Step: e.StepKey,
			Image: e.Image, Backend: e.Backend, Base: e.Base, Key: e.Key, Fingerprint: e.Fingerprint,
			Snapshot: e.Snapshot, SizeBytes: e.Size, Created: e.Created.UTC(), LastUsed: e.LastUsed.UTC()}
	}
	return out
}

// selectByID returns the entries named by ids (whole ids or unique prefixes), in es's order.
func selectByID(es []registry.Entry, ids []string) ([]registry.Entry, error) {
	chosen := map[int]bool{}
	for _, id := range ids {
		var match []int
		for i, e := range es {
			if strings.HasPrefix(e.ID(), strings.ToLower(id)) {
				match = append(match, i)
			}
		}
		switch {
		case id == "" || len(match) == 0:
			return nil, usage("see the entries and their ids with `hm cache ls`", "no cache entry has the id %q", id)
		case len(match) > 1:
			return nil, usage("give more of the id (hm cache ls shows it whole)", "%d cache entries have ids starting with %q", len(match), id)
		}
		chosen[match[0]] = true
	}
	var out []registry.Entry
	for i, e := range es {
		if chosen[i] {
			out = append(out, e)
		}
	}
	return out, nil
}

// openForListing opens the registry read-only, so that listing works on a read-only or full
// state dir; a registry of an older schema, which that cannot read, is migrated when the
// state dir is writable.
func openForListing(ctx context.Context, path string) (*registry.Registry, error) {
	reg, err := registry.OpenReadOnly(ctx, path)
	if err == nil {
		return reg, nil
	}
	if reg, err2 := registry.Open(ctx, path); err2 == nil {
		return reg, nil
	}
	return nil, err
}

// openRegistry opens the state dir's registry; nil (no error) when there is none yet, said on
// stderr when say is set.
func openRegistry(ctx context.Context, stdio IO, open func(context.Context, string) (*registry.Registry, error), say bool) (*registry.Registry, string, error) {
	stateDir, err := config.StateDir(getenvOr(stdio))
	if err != nil {
		return nil, "", err
	}
	path := local.RegistryPath(stateDir)
	if _, err := os.Stat(path); err != nil {
		if say {
			fmt.Fprintln(stdio.Err, "the cache is empty")
		}
		return nil, stateDir, nil
	}
	reg, err := open(ctx, path)
	return reg, stateDir, err
}

// removeEntries deletes registry rows with del, then their snapshots. A snapshot whose backend
// cannot be opened now stays until that backend's next reconcile (it is unreferenced).
func removeEntries(ctx context.Context, stdio IO, del func(*registry.Registry) ([]registry.Entry, error)) error {
	reg, stateDir, err := openRegistry(ctx, stdio, registry.Open, true)
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
		fmt.Fprintf(stdio.Err, "removed %s  %s/%s (%s)\n", e.ID(), orDash(e.Pipeline), e.StepKey, e.Backend)
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
