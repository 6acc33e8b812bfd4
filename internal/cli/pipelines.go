package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/frontend"
	"github.com/hmci/hm/internal/ir"
)

func newRenderCmd(stdio IO) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "render [PIPELINE]",
		Short: "Print the IR of a discovered pipeline",
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := selectPipeline(c.Context(), dir, args)
			if err != nil {
				return err
			}
			data, err := frontend.Render(c.Context(), p)
			if err != nil {
				return err
			}
			if _, err := ir.Parse(data); err != nil {
				return err
			}
			_, err = stdio.Out.Write(data)
			return err
		},
	}
	cmd.Flags().StringVarP(&dir, "dir", "d", ".", "source directory")
	return cmd
}

func newPipelinesCmd(stdio IO) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "pipelines",
		Short: "List the pipelines discovered under .hm/",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			all, err := frontend.Discover(c.Context(), dir)
			if err != nil {
				return err
			}
			if len(all) == 0 {
				fmt.Fprintf(stdio.Err, "no pipelines under %s/.hm\n", dir)
				return nil
			}
			tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SLUG\tSOURCE\tSTEPS")
			for _, p := range all {
				steps := "?"
				data, err := frontend.Render(c.Context(), p)
				if err == nil {
					var pl *ir.Pipeline
					if pl, err = ir.Parse(data); err == nil {
						steps = fmt.Sprint(len(pl.Nodes))
					}
				}
				if err != nil {
					// Say why, so a broken pipeline is not a silent "?" next to working ones.
					steps = "error: " + firstLine(err.Error())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Slug, relPath(dir, p.Path), steps)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&dir, "dir", "d", ".", "source directory")
	return cmd
}

func selectPipeline(ctx context.Context, dir string, args []string) (frontend.Pipeline, error) {
	all, err := frontend.Discover(ctx, dir)
	if err != nil {
		return frontend.Pipeline{}, err
	}
	slug := ""
	if len(args) > 0 {
		slug = args[0]
	}
	return frontend.Select(dir, all, slug)
}

func relPath(dir, p string) string {
	if r, err := filepath.Rel(dir, p); err == nil {
		return r
	}
	return p
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
