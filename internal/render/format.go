package render

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/hmci/hm/internal/events"
)

type styles struct {
	ok, fail, dim, cached, bold lipgloss.Style
}

// newStyles colours for w's terminal: none when w is not a terminal, CI is set (termenv's rule),
// NO_COLOR is set, or noColor asks so. The renderer is bound to w, not to stdout, because
// stdout may be a pipe (--format json) while stderr is a terminal.
func newStyles(w io.Writer, noColor bool) styles {
	r := lipgloss.NewRenderer(w)
	if noColor || os.Getenv("NO_COLOR") != "" {
		r.SetColorProfile(termenv.Ascii)
	}
	return styles{
		ok:     r.NewStyle().Foreground(lipgloss.Color("2")),
		fail:   r.NewStyle().Foreground(lipgloss.Color("1")),
		dim:    r.NewStyle().Faint(true),
		cached: r.NewStyle().Foreground(lipgloss.Color("4")),
		bold:   r.NewStyle().Bold(true),
	}
}

// formatDuration prints 12ms, 1.2s, 3m05s or 1h02m: short, and stable in width while it ticks.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		tenths := d / (100 * time.Millisecond)
		return fmt.Sprintf("%d.%ds", tenths/10, tenths%10)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	default:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	}
}

// shortTag abbreviates a snapshot id: sha256:4c1d9e0f1a2b… keeps the algorithm and 12 digits.
func shortTag(tag string) string {
	const keep = 12
	algo, hex, ok := strings.Cut(tag, ":")
	if !ok {
		algo, hex = "", tag
	} else {
		algo += ":"
	}
	if len(hex) <= keep {
		return tag
	}
	return algo + hex[:keep] + "…"
}

func skipText(reason string) string {
	if reason == "" {
		return "skipped"
	}
	return "skipped (" + strings.ReplaceAll(reason, "_", " ") + ")"
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// summary is the final line, e.g. "✗ Build failed in 6.4s (2 failed, 3 skipped)"; exit codes
// are those of build_end (semantics.md).
func summary(b *build, st styles) string {
	mark, word, style := "✗", "failed", st.fail
	switch b.end.ExitCode {
	case 0:
		mark, word, style = "✓", "passed", st.ok
	case 124:
		word = "timed out"
	case 130:
		word = "canceled"
	}
	line := fmt.Sprintf("%s Build %s in %s", mark, word,
		formatDuration(time.Duration(b.end.DurationMS)*time.Millisecond))
	var counts []string
	failed, canceled, skipped := b.counts()
	for _, c := range []struct {
		n    int
		word string
	}{{failed, "failed"}, {canceled, "canceled"}, {skipped, "skipped"}} {
		if c.n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", c.n, c.word))
		}
	}
	if len(counts) > 0 {
		line += " (" + strings.Join(counts, ", ") + ")"
	}
	return style.Bold(true).Render(line)
}

// lineWriter turns events into plain lines. The plain renderer uses all of them; the live view
// prints only log lines (with Verbose) and announcements above its progress area.
type lineWriter struct {
	b       *build
	st      styles
	status  bool // step status lines and the summary (plain mode)
	logs    bool // step_log lines
	verbose bool // build_start and step_start too
}

// write applies ev to the writer's state and appends its lines, each ending in "\n", to buf.
func (lw *lineWriter) write(buf *bytes.Buffer, ev events.Event) {
	s := lw.b.apply(ev)
	prefix := func() {
		buf.WriteByte('[')
		buf.WriteString(Escape(s.key))
		buf.WriteString("] ")
	}
	switch {
	case ev.StepLog != nil:
		if lw.logs {
			prefix()
			if ev.StepLog.Line == "" {
				buf.Truncate(buf.Len() - 1) // "[key]", without a trailing space
			}
			buf.WriteString(ev.StepLog.Line)
			buf.WriteByte('\n')
			s.lastLog = ev.StepLog.Line
		}
		return
	case ev.StepArtifact != nil:
		// Printed whatever the mode (above the live view too): where a build's files went
		// is worth a line each.
		prefix()
		// Unstyled, like log lines: a step may copy thousands, and styling each costs.
		buf.WriteString(artifactText(ev.StepArtifact))
		buf.WriteByte('\n')
		return
	case ev.BuildAccepted != nil:
		a := ev.BuildAccepted
		fmt.Fprintf(buf, "Build #%d accepted (%s/%s)", a.Build.Number, a.Build.Org, a.Build.Pipeline)
		if a.WatchURL != nil {
			fmt.Fprintf(buf, ": watch %s", *a.WatchURL)
		}
		buf.WriteByte('\n')
		return
	}
	if !lw.status {
		return
	}
	switch {
	case ev.BuildStart != nil:
		if lw.verbose {
			p := ev.BuildStart.Plan
			fmt.Fprintf(buf, "Build %s: %s in %s (runner %s)\n", ev.BuildStart.RunID,
				plural(p.StepCount, "step"), plural(p.ChainCount, "chain"), p.DefaultRunner)
		}
	case ev.StepStart != nil:
		if lw.verbose {
			prefix()
			fmt.Fprintf(buf, "started (runner %s", ev.StepStart.Runner)
			if ev.StepStart.Image != nil {
				fmt.Fprintf(buf, ", image %s", *ev.StepStart.Image)
			}
			buf.WriteString(")\n")
		}
	case ev.StepCacheHit != nil:
		prefix()
		// The entry id, when there is one, is what the miss line and hm cache ls show.
		what := shortTag(ev.StepCacheHit.Tag)
		if ev.StepCacheHit.Entry != nil {
			what = "entry " + *ev.StepCacheHit.Entry
		}
		buf.WriteString(lw.st.cached.Render("cached (" + what + ")"))
		buf.WriteByte('\n')
	case ev.StepEnd != nil:
		switch s.status {
		case statusPassed:
			prefix()
			buf.WriteString(lw.st.ok.Render("✓ passed in " + formatDuration(s.duration) + attemptNote(s)))
			buf.WriteByte('\n')
		case statusFailed:
			prefix()
			what := fmt.Sprintf("failed (exit %d)", s.exitCode)
			if s.exitCode == exitInfra {
				what = "could not run" // exit -1 is no process's status
			}
			buf.WriteString(lw.st.fail.Render(fmt.Sprintf("✗ %s in %s%s",
				what, formatDuration(s.duration), attemptNote(s))))
			buf.WriteByte('\n')
		}
	case ev.StepRetry != nil:
		prefix()
		buf.WriteString(lw.st.fail.Render(retryText(ev.StepRetry)))
		buf.WriteByte('\n')
	case ev.StepSkipped != nil:
		prefix()
		buf.WriteString(lw.st.dim.Render(skipText(s.skipReason)))
		buf.WriteByte('\n')
	case ev.ChainFailed != nil:
		if ev.ChainFailed.Message == "" {
			return
		}
		if s == nil {
			s = &step{key: ev.ChainFailed.FailedStepKey}
		}
		if lw.logs && s.lastLog == "hm: "+ev.ChainFailed.Message {
			return // printed just above as the step's log line
		}
		for _, l := range strings.Split(ev.ChainFailed.Message, "\n") {
			prefix()
			buf.WriteString(lw.st.fail.Render(Escape(l)))
			buf.WriteByte('\n')
		}
	case ev.BuildEnd != nil:
		buf.WriteString(summary(lw.b, lw.st))
		buf.WriteByte('\n')
	}
}

// exitInfra is the step_end exit code of a step that could not run (scheduler.ExitInfra).
const exitInfra = -1

// artifactText is a step_artifact's line: the path (escaped: it is the step's file name),
// the size and the digest's first 12 hex digits.
func artifactText(a *events.StepArtifact) string {
	sum := a.SHA256
	if len(sum) > 12 {
		sum = sum[:12]
	}
	return fmt.Sprintf("↓ artifact %s (%s, sha256 %s)", Escape(a.Path), humanBytes(a.Size), sum)
}

func humanBytes(n int64) string {
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
