package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/cachedir"
	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/vm"
)

// hm cache dirs: the steps' cache_dirs (package cachedir), beside the snapshot entries of
// hm cache ls. A listing of their own, so that hm cache ls --format json keeps its one kind
// of object. The snapshot cache's size cap and LRU do not count them: an entry is evicted
// whole by the cap, while a cache directory is in use by the very builds that grow it, and
// deleting it under them would only make every step slow; prune --older-than (unused for a
// while) and rm are how they are bounded, and hm cache dirs ls shows what they hold.
func newCacheDirsCmd(stdio IO, backend *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dirs",
		Short: "Inspect and free the steps' cache directories (cache_dirs)",
		Args:  usageArgs(cobra.NoArgs),
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List cache directories, most recently used first",
		Args:  usageArgs(cobra.NoArgs),
	}
	asJSON := listFormat(ls)
	ls.RunE = func(c *cobra.Command, _ []string) error {
		jsonOut, err := asJSON()
		if err != nil {
			return err
		}
		es, err := listCacheDirs(c.Context(), stdio, *backend, true)
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSONList(stdio.Out, cacheDirsJSON(es))
		}
		if len(es) == 0 {
			fmt.Fprintln(stdio.Err, "no cache directories")
			return nil
		}
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tORG\tPIPELINE\tPATH\tBACKEND\tSIZE\tLAST USED")
		now := time.Now()
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortKey(e.ID), e.Org, orDash(e.Pipeline), e.Path, e.Backend,
				humanSize(e.Size), ago(now.Sub(e.LastUsed)))
		}
		return tw.Flush()
	}

	rm := &cobra.Command{
		Use:   "rm ID...",
		Short: "Delete cache directories (by the id hm cache dirs ls shows, or a unique prefix of it)",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, ids []string) error {
			es, err := listCacheDirs(c.Context(), stdio, *backend, true)
			if err != nil {
				return err
			}
			chosen, err := selectCacheDirs(es, ids)
			if err != nil {
				return err
			}
			return removeCacheDirs(c.Context(), stdio, chosen)
		},
	}

	var keep int
	var olderThan time.Duration
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete all but the most recently used cache directories (--keep) or those unused for a while (--older-than)",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("keep") && !c.Flags().Changed("older-than") {
				return usage("give --keep N and/or --older-than DURATION (or use `hm cache dirs clean`)", "cache dirs prune needs a limit")
			}
			es, err := listCacheDirs(c.Context(), stdio, *backend, true)
			if err != nil {
				return err
			}
			var chosen []cachedir.Entry
			for i, e := range es { // most recently used first
				old := c.Flags().Changed("older-than") && time.Since(e.LastUsed) > olderThan
				beyond := c.Flags().Changed("keep") && i >= keep
				if old || beyond {
					chosen = append(chosen, e)
				}
			}
			return removeCacheDirs(c.Context(), stdio, chosen)
		},
	}
	prune.Flags().IntVar(&keep, "keep", 0, "keep the N most recently used cache directories")
	prune.Flags().DurationVar(&olderThan, "older-than", 0, "delete cache directories not used for this long, e.g. 168h")

	clean := &cobra.Command{
		Use:   "clean",
		Short: "Delete every cache directory not in use",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			es, err := listCacheDirs(c.Context(), stdio, *backend, true)
			if err != nil {
				return err
			}
			return removeCacheDirs(c.Context(), stdio, es)
		},
	}
	cmd.AddCommand(ls, rm, prune, clean)
	return cmd
}

// cacheDirJSON is a cache directory in hm cache dirs ls --format json. Field names are
// stable.
type cacheDirJSON struct {
	ID        string    `json:"id"`
	Backend   string    `json:"backend"`
	Org       string    `json:"org"`
	Pipeline  string    `json:"pipeline"`
	Path      string    `json:"path"`
	SizeBytes int64     `json:"size_bytes"` // 0 when unknown (a daemon that does not answer)
	Created   time.Time `json:"created"`
	LastUsed  time.Time `json:"last_used"`
}

func cacheDirsJSON(es []cachedir.Entry) []cacheDirJSON {
	out := make([]cacheDirJSON, len(es))
	for i, e := range es {
		out[i] = cacheDirJSON{ID: e.ID, Backend: e.Backend, Org: e.Org, Pipeline: e.Pipeline, Path: e.Path,
			SizeBytes: e.Size, Created: e.Created.UTC(), LastUsed: e.LastUsed.UTC()}
	}
	return out
}

// cacheDirBackends are the backends whose cache directories a state dir records.
var cacheDirBackends = []string{"docker", "host", "sandbox"}

// listCacheDirs lists the state dir's cache directories of one backend ("" for all), most
// recently used first; sized, when sized is set, docker's by asking the daemon.
func listCacheDirs(ctx context.Context, stdio IO, backend string, sized bool) ([]cachedir.Entry, error) {
	stateDir, err := config.StateDir(getenvOr(stdio))
	if err != nil {
		return nil, err
	}
	var out []cachedir.Entry
	for _, name := range cacheDirBackends {
		if backend != "" && backend != name {
			continue
		}
		es, err := cachedir.Open(stateDir, name).List()
		if err != nil {
			return nil, err
		}
		if sized && len(es) > 0 && name == "docker" {
			if sizes, err := volumeSizes(ctx, name, stateDir); err == nil {
				for i := range es {
					es[i].Size = sizes[es[i].ID]
				}
			}
		}
		out = append(out, es...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

func volumeSizes(ctx context.Context, backend, stateDir string) (map[string]int64, error) {
	b, err := openVM(ctx, backend, stateDir, vmOptions{})
	if err != nil {
		return nil, err
	}
	defer closeVM(b)
	v, ok := b.(vm.CacheDirVolumes)
	if !ok {
		return nil, errors.New("no volumes")
	}
	return v.CacheDirSizes(ctx)
}

// selectCacheDirs returns the entries named by ids (whole ids or unique prefixes).
func selectCacheDirs(es []cachedir.Entry, ids []string) ([]cachedir.Entry, error) {
	var out []cachedir.Entry
	for _, id := range ids {
		var match []cachedir.Entry
		for _, e := range es {
			if strings.HasPrefix(e.ID, strings.ToLower(id)) {
				match = append(match, e)
			}
		}
		switch {
		case id == "" || len(match) == 0:
			return nil, usage("see the cache directories and their ids with `hm cache dirs ls`", "no cache directory has the id %q", id)
		case len(match) > 1:
			return nil, usage("give more of the id (hm cache dirs ls --format json shows it whole)", "%d cache directories have ids starting with %q", len(match), id)
		}
		out = append(out, match[0])
	}
	return out, nil
}

// removeCacheDirs deletes es, sparing (and saying so) those a running step uses.
func removeCacheDirs(ctx context.Context, stdio IO, es []cachedir.Entry) error {
	stateDir, err := config.StateDir(getenvOr(stdio))
	if err != nil {
		return err
	}
	var freed int64
	removed, busy := 0, 0
	var firstErr error
	backends := map[string]vm.Backend{}
	defer func() {
		for _, b := range backends {
			closeVM(b)
		}
	}()
	for _, e := range es {
		store := cachedir.Open(stateDir, e.Backend)
		var also func() error
		if e.Backend == "docker" {
			also = func() error {
				b, ok := backends[e.Backend]
				if !ok {
					var err error
					if b, err = openVM(ctx, e.Backend, stateDir, vmOptions{}); err != nil {
						return err
					}
					backends[e.Backend] = b
				}
				if v, ok := b.(vm.CacheDirVolumes); ok {
					return v.RemoveCacheDir(ctx, e.ID)
				}
				return nil
			}
		}
		err := store.Remove(e.ID, also)
		switch {
		case errors.Is(err, cachedir.ErrBusy):
			busy++
			fmt.Fprintf(stdio.Err, "kept %s  %s %s (%s): in use by a running step\n", shortKey(e.ID), orDash(e.Pipeline), e.Path, e.Backend)
		case err != nil:
			if firstErr == nil {
				firstErr = err
			}
		default:
			removed++
			freed += e.Size
			fmt.Fprintf(stdio.Err, "removed %s  %s %s (%s)\n", shortKey(e.ID), orDash(e.Pipeline), e.Path, e.Backend)
		}
		store.CleanTrash()
	}
	fmt.Fprintf(stdio.Err, "removed %d cache directories (%s)\n", removed, humanSize(freed))
	if busy > 0 {
		fmt.Fprintf(stdio.Err, "%d in use were kept; remove them once their builds end\n", busy)
	}
	return firstErr
}
