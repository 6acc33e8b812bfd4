package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/buildlog"
	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/render"
)

// buildRecord is hm run's side of the build records: the events tee and the one warning a
// build gets when its record cannot be written (the build itself goes on).
type buildRecord struct {
	rec    *buildlog.Recording
	errw   io.Writer
	warned bool
}

func recordBuild(stdio IO, stateDir string, lim config.Builds, pipeline, dir, backend, artifacts string, evs <-chan events.Event) *buildRecord {
	rec, err := buildlog.Open(stateDir).Record(evs, buildlog.Info{
		Pipeline: pipeline, SourceDir: dir, Backend: backend, Keep: lim.Keep, MaxAge: lim.MaxAge.Duration,
		Artifacts: artifacts,
	})
	br := &buildRecord{rec: rec, errw: stdio.Err}
	if err != nil {
		br.warn(err)
	}
	return br
}

func (br *buildRecord) warn(err error) {
	if !br.warned {
		br.warned = true
		fmt.Fprintf(br.errw, "hm: warning: this build's log is not kept (`hm logs` will not show it): %v\n", err)
	}
}

func (br *buildRecord) events() <-chan events.Event { return br.rec.C() }

// hint names the command that prints a step's whole log, for the live view's failed steps.
func (br *buildRecord) hint(runID, key string) string {
	if br.rec.ID() != runID || runID == "" {
		return ""
	}
	return fmt.Sprintf("hm logs %s %s", buildlog.Short(runID), key)
}

// finish waits for the record to be complete; a write that failed mid-build is warned about
// here, after the build's report, not in the middle of it.
func (br *buildRecord) finish() {
	br.rec.Wait()
	if err := br.rec.Err(); err != nil {
		br.warn(err)
	}
}

func openBuilds(stdio IO) (*buildlog.Store, error) {
	stateDir, err := config.StateDir(getenvOr(stdio))
	if err != nil {
		return nil, err
	}
	return buildlog.Open(stateDir), nil
}

func findBuild(store *buildlog.Store, ref string) (buildlog.Meta, error) {
	m, err := store.Find(ref)
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, buildlog.ErrNotFound) && ref == "":
		return m, &errs.Error{Code: "build_not_found", Exit: errs.ExitNotFound, Err: err,
			Msg: "no builds recorded under " + store.Dir(), Fix: "run a build with `hm run` first"}
	case errors.Is(err, buildlog.ErrNotFound):
		return m, &errs.Error{Code: "build_not_found", Exit: errs.ExitNotFound, Err: err,
			Msg: fmt.Sprintf("no build %q", ref), Fix: "see `hm builds` for the recorded builds"}
	case errors.Is(err, buildlog.ErrAmbiguous):
		return m, usage("give more characters of the id (see `hm builds`)", "build id prefix %q matches several builds", ref)
	}
	return m, err
}

func newLogsCmd(stdio IO) *cobra.Command {
	var format string
	var follow, noColor bool
	cmd := &cobra.Command{
		Use:   "logs [BUILD] [STEP]",
		Short: "Print a recorded build's log (default: the last build)",
		Long: `Print the log of a recorded build: BUILD is an id or a unique prefix of one (see hm builds),
default the last build; STEP (a step key) keeps only that step. --format json replays the
NDJSON events exactly as hm run --format json streamed them. -f follows a running build until
it ends.`,
		Args: usageArgs(cobra.MaximumNArgs(2)),
		RunE: func(c *cobra.Command, args []string) error {
			if format != "human" && format != "json" {
				return usage("--format human|json", "unknown output format %q", format)
			}
			store, err := openBuilds(stdio)
			if err != nil {
				return err
			}
			ref, stepRef := "", ""
			if len(args) > 0 {
				ref = args[0]
			}
			if len(args) > 1 {
				stepRef = args[1]
			}
			m, err := findBuild(store, ref)
			if err != nil {
				return err
			}
			return printLog(c.Context(), stdio, store, m, stepRef, format == "json", follow, noColor)
		},
	}
	cmd.Flags().StringVar(&format, "format", "human", "human ([key] lines, as hm run prints them) or json (the NDJSON events)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow a running build until it ends")
	cmd.Flags().BoolVar(&noColor, "no-color", false, "no colours")
	return cmd
}

func printLog(ctx context.Context, stdio IO, store *buildlog.Store, m buildlog.Meta, stepRef string, asJSON, follow, noColor bool) error {
	// The human form is the plain renderer's, fed from the record as the engine fed it live.
	var evs chan events.Event
	var rendered chan error
	if !asJSON {
		evs = make(chan events.Event)
		rendered = make(chan error, 1)
		go func() {
			rendered <- render.Run(context.WithoutCancel(ctx), stdio.Out, evs, render.Options{NoColor: noColor})
		}()
	}
	steps := map[string]bool{} // step ids kept by the STEP filter
	found := stepRef == ""
	var writeErr error
	err := store.Replay(ctx, m.ID, follow, func(line []byte) error {
		var ev events.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil // a record written by another hm version: skip what this one cannot read
		}
		if stepRef != "" {
			if q := ev.StepQueued; q != nil && (q.Key == stepRef || q.StepID == stepRef) {
				steps[q.StepID], found = true, true
			}
			if id := ev.StepID(); id == "" || !steps[id] {
				return nil
			}
		}
		if asJSON {
			if writeErr == nil {
				_, writeErr = stdio.Out.Write(append(line, '\n'))
			}
			return writeErr
		}
		evs <- ev
		return nil
	})
	if evs != nil {
		close(evs)
		if rerr := <-rendered; writeErr == nil {
			writeErr = rerr
		}
	}
	switch {
	case errors.Is(err, buildlog.ErrInterrupted):
		fmt.Fprintf(stdio.Err, "hm: build %s was interrupted: its hm ended before the build did\n", buildlog.Short(m.ID))
	case err != nil && !errors.Is(err, writeErr):
		return err
	case !follow && m.Status == buildlog.Interrupted:
		fmt.Fprintf(stdio.Err, "hm: build %s was interrupted: its hm ended before the build did\n", buildlog.Short(m.ID))
	}
	if !found {
		return usage(fmt.Sprintf("see `hm logs %s` for its steps", buildlog.Short(m.ID)), "build %s has no step %q", buildlog.Short(m.ID), stepRef)
	}
	if m.DroppedLines > 0 && stepRef == "" {
		fmt.Fprintf(stdio.Err, "hm: %d log lines of this build were not kept (the record's limit is %d MiB)\n",
			m.DroppedLines, buildlog.MaxBuildBytes>>20)
	}
	return nil // a closed pipe (| head) is not an error of hm logs
}

func newBuildsCmd(stdio IO) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "builds",
		Short: "List recorded builds, newest first",
		Long: `List the builds recorded under the state dir (newest first) with their status and duration.
The newest [builds] keep builds (default 50) younger than [builds] max_age (default 720h) are
kept; hm builds prune frees the rest sooner.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			if format != "human" && format != "json" {
				return usage("--format human|json", "unknown output format %q", format)
			}
			store, err := openBuilds(stdio)
			if err != nil {
				return err
			}
			all, err := store.List()
			if err != nil {
				return err
			}
			if format == "json" {
				if all == nil {
					all = []buildlog.Meta{}
				}
				enc := json.NewEncoder(stdio.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			if len(all) == 0 {
				fmt.Fprintln(stdio.Err, "no builds recorded yet")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUILD\tPIPELINE\tSTATUS\tDURATION\tSTARTED\tSOURCE")
			for _, m := range all {
				d := time.Duration(m.DurationMS) * time.Millisecond
				if m.Status == buildlog.Running {
					d = now.Sub(m.StartedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", buildlog.Short(m.ID), orDash(m.Pipeline), m.Status,
					shortDuration(d), ago(now.Sub(m.StartedAt)), orDash(m.SourceDir))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", "human", "human (a table) or json (an array of build records)")

	var keep int
	var olderThan time.Duration
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete all but the newest builds' records (--keep) or those older than --older-than",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("keep") && !c.Flags().Changed("older-than") {
				return usage("give --keep N and/or --older-than DURATION", "builds prune needs a limit")
			}
			if !c.Flags().Changed("keep") {
				keep = -1
			} else if keep < 0 {
				return usage("give --keep a number >= 0", "invalid --keep %d", keep)
			}
			store, err := openBuilds(stdio)
			if err != nil {
				return err
			}
			removed, err := store.Prune(keep, olderThan, time.Now())
			fmt.Fprintf(stdio.Err, "removed %d build records\n", len(removed))
			return err
		},
	}
	prune.Flags().IntVar(&keep, "keep", 0, "keep the N newest builds")
	prune.Flags().DurationVar(&olderThan, "older-than", 0, "delete builds started longer ago than this, e.g. 168h")
	cmd.AddCommand(prune)
	return cmd
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
