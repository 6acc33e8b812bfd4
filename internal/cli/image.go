package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/imagestore"
)

// newImageCmd is `hm image`: the sandbox backend's image store.
func newImageCmd(stdio IO) *cobra.Command {
	store := func() (*imagestore.Store, error) {
		stateDir, err := config.StateDir(getenvOr(stdio))
		if err != nil {
			return nil, err
		}
		return imagestore.Open(stateDir), nil
	}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the sandbox backend's images (import, pull, ls, rm)",
		Args:  usageArgs(cobra.NoArgs),
	}
	importCmd := &cobra.Command{
		Use:   "import FILE [NAME]",
		Short: "Import a rootfs tarball, a `docker save` tarball or an OCI image layout tarball",
		Args:  usageArgs(cobra.RangeArgs(1, 2)),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			img, err := st.Import(c.Context(), args[0], name)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "%s %s\n", img.ID, strings.Join(img.Names, ","))
			return nil
		},
	}
	pull := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry (afterwards it works offline)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			img, err := st.Pull(c.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "%s %s\n", img.ID, strings.Join(img.Names, ","))
			return nil
		},
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List images",
		Args:  usageArgs(cobra.NoArgs),
	}
	asJSON := listFormat(ls)
	ls.RunE = func(c *cobra.Command, _ []string) error {
		jsonOut, err := asJSON()
		if err != nil {
			return err
		}
		st, err := store()
		if err != nil {
			return err
		}
		imgs, err := st.List(c.Context())
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSONList(stdio.Out, imagesJSON(imgs))
		}
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAMES\tID\tSOURCE\tLAYERS\tSIZE\tCREATED")
		now := time.Now()
		fmt.Fprintf(tw, "%s\t-\tthe host's root filesystem, read-only (built in)\t\t\t\n", HostImage)
		for _, img := range imgs {
			if img.ID == HostImage {
				continue
			}
			created := "-"
			if !img.Created.IsZero() {
				created = ago(now.Sub(img.Created))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", strings.Join(img.Names, ","), shortKey(strings.TrimPrefix(img.ID, "sha256:")),
				img.Source, len(img.Layers), humanSize(img.Size), created)
		}
		return tw.Flush()
	}
	rm := &cobra.Command{
		Use:   "rm REF...",
		Short: "Remove images (by name or id)",
		Args:  usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := store()
			if err != nil {
				return err
			}
			for _, ref := range args {
				if err := st.Remove(c.Context(), ref); err != nil {
					return err
				}
				fmt.Fprintf(stdio.Err, "removed %s\n", ref)
			}
			return nil
		},
	}
	cmd.AddCommand(importCmd, pull, ls, rm)
	return cmd
}

// imageJSON is an image in hm image ls --format json. Field names are stable.
type imageJSON struct {
	ID        string     `json:"id"` // "sha256:HEX", or "host"
	Names     []string   `json:"names"`
	Source    string     `json:"source"` // rootfs, docker-archive, oci-layout, registry, host
	Layers    int        `json:"layers"`
	SizeBytes int64      `json:"size_bytes"`
	Created   *time.Time `json:"created"` // null when unknown (the host pseudo-image)
}

// imagesJSON lists the host pseudo-image first, as the table does.
func imagesJSON(imgs []imagestore.Image) []imageJSON {
	out := []imageJSON{{ID: HostImage, Names: []string{HostImage}, Source: "host"}}
	for _, img := range imgs {
		if img.ID == HostImage {
			continue
		}
		j := imageJSON{ID: img.ID, Names: img.Names, Source: img.Source, Layers: len(img.Layers), SizeBytes: img.Size}
		if j.Names == nil {
			j.Names = []string{}
		}
		if !img.Created.IsZero() {
			t := img.Created.UTC()
			j.Created = &t
		}
		out = append(out, j)
	}
	return out
}
