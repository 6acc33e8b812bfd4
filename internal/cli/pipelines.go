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
			if _, err := parseIR(data, p.Path); err != nil {
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
	}
	asJSON := listFormat(cmd)
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		jsonOut, err := asJSON()
		if err != nil {
			return err
		}
		all, err := frontend.Discover(c.Context(), dir)
		if err != nil {
			return err
		}
		list := make([]pipelineJSON, len(all))
		for i, p := range all {
			list[i] = pipelineJSON{Slug: p.Slug, Name: p.Name, Source: relPath(dir, p.Path), Kind: string(p.Kind)}
			data, err := frontend.Render(c.Context(), p)
			if err == nil {
				var pl *ir.Pipeline
				if pl, err = parseIR(data, p.Path); err == nil {
					n := len(pl.Nodes)
					list[i].Steps = &n
				}
			}
			if err != nil {
				// Say why, so a broken pipeline is not a silent "?" next to working ones.
				msg := firstLine(err.Error())
				list[i].Error = &msg
			}
		}
		if jsonOut {
			return writeJSONList(stdio.Out, list)
		}
		if len(all) == 0 {
			fmt.Fprintf(stdio.Err, "no pipelines under %s/.hm\n", dir)
			return nil
		}
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLUG\tSOURCE\tSTEPS")
		for _, p := range list {
			steps := "?"
			switch {
			case p.Error != nil:
				steps = "error: " + *p.Error
			case p.Steps != nil:
				steps = fmt.Sprint(*p.Steps)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Slug, p.Source, steps)
		}
		return tw.Flush()
	}
	cmd.Flags().StringVarP(&dir, "dir", "d", ".", "source directory")
	return cmd
}

// pipelineJSON is a pipeline in hm pipelines --format json. Field names are stable.
type pipelineJSON struct {
	Slug   string  `json:"slug"`
	Name   string  `json:"name"`   // "" when the pipeline has none
	Source string  `json:"source"` // the file, relative to the source directory
	Kind   string  `json:"kind"`
	Steps  *int    `json:"steps"` // null when it does not render
	Error  *string `json:"error"` // why it does not render, else null
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
