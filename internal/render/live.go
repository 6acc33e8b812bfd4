package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/hmci/hm/internal/events"
)

// batchMsg carries events for the model to apply, in stream order.
type batchMsg []events.Event

// closedMsg says the event stream has ended.
type closedMsg struct{}

// liveModel is the Bubble Tea model of the progress area: one line per step, nested under its
// builds_in parent, the last lines of each running step's log (as BuildKit's progress shows
// them), and a footer while the build runs.
type liveModel struct {
	b      *build
	st     styles
	spin   spinner.Model
	height int
	closed bool
	// tails is how many of a running step's last log lines are drawn under it; 0 with
	// Verbose, where every line already scrolls above the view.
	tails int
}

// RunningTail is how many of a running step's last log lines the live view draws under it.
const RunningTail = 5

func (m *liveModel) Init() tea.Cmd { return m.spin.Tick }

func (m *liveModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.height = msg.Height
	case spinner.TickMsg:
		if m.closed {
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case batchMsg:
		for i := range msg {
			m.b.apply(msg[i])
		}
	case closedMsg:
		m.closed = true
		return m, tea.Quit
	}
	return m, nil
}

// View draws the progress area. Once the stream has ended it draws a blank line: the full
// final report is then written below by runLive, where it can scroll.
func (m *liveModel) View() string {
	if m.closed {
		return " "
	}
	now := m.b.now()
	spin := strings.TrimRight(m.spin.View(), " ") // Dot frames carry a trailing space
	limit := m.height - 2
	lines, keep, running, done := m.stepLines(spin, now, m.tails)
	if limit > 0 && len(lines) > limit && m.tails > 0 {
		// Steps before their logs: without the tails, the area may fit.
		lines, keep, running, done = m.stepLines(spin, now, 0)
	}
	if limit > 0 && len(lines) > limit {
		lines = elide(m.st, lines, keep, limit)
	}
	if !m.b.started.IsZero() && m.b.end == nil {
		total := ""
		if m.b.planned >= done+running {
			total = fmt.Sprintf(" of %d", m.b.planned)
		}
		lines = append(lines, m.st.dim.Render(fmt.Sprintf("%d running, %d%s done · %s",
			running, done, total, formatDuration(now.Sub(m.b.started)))))
	}
	return strings.Join(lines, "\n") + "\n"
}

// stepLines draws every step in tree order and, under each running one, its last tails log
// lines. keep marks the lines worth keeping when the area is taller than the terminal.
func (m *liveModel) stepLines(spin string, now time.Time, tails int) (lines []string, keep []bool, running, done int) {
	m.b.walk(func(s *step, depth int) {
		switch s.status {
		case statusQueued:
		case statusRunning:
			running++
		default:
			done++
		}
		lines = append(lines, stepLine(m.st, s, depth, false, spin, now))
		keep = append(keep, s.status == statusRunning || s.status == statusFailed)
		if s.status != statusRunning || tails == 0 {
			return
		}
		indent := strings.Repeat("  ", depth+1)
		for _, l := range s.logs.last(tails) {
			lines = append(lines, indent+m.st.dim.Render("│ "+printable(l)))
			keep = append(keep, true)
		}
	})
	return lines, keep, running, done
}

// printable drops what would move the cursor or restyle the view from a log line: escape
// sequences and control characters (a tab becomes a space). Bubble Tea cuts the line to the
// terminal's width.
func printable(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == 0x1b: // ESC: skip a CSI sequence (ESC [ params final), or the one byte after
			if i+1 < len(line) && line[i+1] == '[' {
				i += 2
				for i < len(line) && (line[i] < 0x40 || line[i] > 0x7e) {
					i++
				}
			} else {
				i++
			}
		case c == '\t':
			b.WriteByte(' ')
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// elide fits lines into limit rows: it keeps the running and failed steps and counts the rest.
func elide(st styles, lines []string, keep []bool, limit int) []string {
	var kept []string
	for i, l := range lines {
		if keep[i] {
			kept = append(kept, l)
		}
	}
	if len(kept) > limit-1 {
		kept = kept[len(kept)-(limit-1):]
	}
	hidden := len(lines) - len(kept)
	return append([]string{st.dim.Render(fmt.Sprintf("… %s not shown", plural(hidden, "step")))}, kept...)
}

// stepLine is one step's line, e.g. "  ✗ test  go test ./...  0.4s exit 1".
func stepLine(st styles, s *step, depth int, canceled bool, spin string, now time.Time) string {
	var b strings.Builder
	b.WriteString(strings.Repeat("  ", depth))
	key := Escape(s.key)
	name := key
	if s.name != "" && s.name != s.key {
		name += "  " + st.dim.Render(Escape(s.name))
	}
	switch s.status {
	case statusRunning:
		fmt.Fprintf(&b, "%s %s  %s", spin, name, st.dim.Render(formatDuration(now.Sub(s.started))+attemptNote(s)))
	case statusPassed:
		fmt.Fprintf(&b, "%s %s  %s", st.ok.Render("✓"), name, st.dim.Render(formatDuration(s.duration)+attemptNote(s)))
	case statusCached:
		fmt.Fprintf(&b, "%s %s  %s", st.cached.Render("✓"), name,
			st.cached.Render("cached")+" "+st.dim.Render(formatDuration(s.duration)))
	case statusFailed:
		if canceled {
			b.WriteString(st.dim.Render(fmt.Sprintf("○ %s  canceled %s", key, formatDuration(s.duration))))
			break
		}
		fmt.Fprintf(&b, "%s %s  %s %s", st.fail.Render("✗"), name,
			st.dim.Render(formatDuration(s.duration)+attemptNote(s)), st.fail.Render(fmt.Sprintf("exit %d", s.exitCode)))
	case statusSkipped:
		b.WriteString(st.dim.Render(fmt.Sprintf("○ %s  %s", key, skipText(s.skipReason))))
	default: // queued (waiting for a free slot), or still running when the stream ended
		fmt.Fprintf(&b, "%s %s  %s", st.dim.Render("·"), name, st.dim.Render("queued"))
	}
	return b.String()
}

// writeReport writes what stays on screen after the live view: every step in tree order, the
// kept logs of failed steps under a header each, and the summary line.
func writeReport(w io.Writer, b *build, st styles, hint func(runID, key string) string) error {
	var buf bytes.Buffer
	b.walk(func(s *step, depth int) {
		if s.status != statusQueued {
			buf.WriteString(stepLine(st, s, depth, b.canceled(s), "", time.Time{}))
			buf.WriteByte('\n')
		}
	})
	b.walk(func(s *step, _ int) {
		if s.status != statusFailed || b.canceled(s) {
			return
		}
		buf.WriteByte('\n')
		buf.WriteString(st.bold.Render(fmt.Sprintf("── logs: %s (exit %d) ──", Escape(s.key), s.exitCode)))
		buf.WriteByte('\n')
		if s.logs != nil && s.logs.dropped > 0 {
			buf.WriteString(st.dim.Render(fmt.Sprintf("… %s not shown", plural(s.logs.dropped, "earlier line"))))
			buf.WriteByte('\n')
		}
		for _, l := range s.logs.all() {
			buf.WriteString(l)
			buf.WriteByte('\n')
		}
		for _, msg := range s.messages {
			buf.WriteString(st.fail.Render(EscapeText(msg)))
			buf.WriteByte('\n')
		}
		if hint == nil {
			return
		}
		if cmd := hint(b.runID, s.key); cmd != "" {
			buf.WriteString(st.dim.Render("full log: " + Escape(cmd)))
			buf.WriteByte('\n')
		}
	})
	if b.end != nil {
		buf.WriteByte('\n')
		buf.WriteString(summary(b, st))
		buf.WriteByte('\n')
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func runLive(ctx context.Context, w io.Writer, evs <-chan events.Event, opts Options) error {
	st := newStyles(w, opts.NoColor)
	m := &liveModel{
		b:    newBuild(true, time.Now),
		st:   st,
		spin: spinner.New(spinner.WithSpinner(spinner.Dot)),
	}
	if !opts.Verbose {
		m.tails = RunningTail
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// hm owns SIGINT and stdin; the view only draws on w, below whatever was printed before.
	p := tea.NewProgram(m,
		tea.WithContext(ctx),
		tea.WithOutput(w),
		tea.WithInput(nil),
		tea.WithoutSignalHandler(),
		tea.WithoutBracketedPaste(),
	)

	// The reader batches events into messages and prints above the view what must scroll
	// (build_accepted, and with Verbose every log line), in stream order: p.Send is ordered,
	// unlike commands returned from Update, which run on goroutines of their own.
	above := &lineWriter{b: newBuild(false, time.Now), st: st, logs: opts.Verbose}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		var buf bytes.Buffer
		for {
			batch, open, err := nextBatch(ctx, evs, nil)
			if err != nil {
				return
			}
			for i := range batch {
				above.write(&buf, batch[i])
			}
			if buf.Len() > 0 {
				p.Send(tea.Println(strings.TrimSuffix(buf.String(), "\n"))())
				buf.Reset()
			}
			if len(batch) > 0 {
				p.Send(batchMsg(batch))
			}
			if !open {
				p.Send(closedMsg{})
				return
			}
		}
	}()

	_, err := p.Run()
	cancel()
	<-readDone
	if !m.closed {
		go discard(evs)
		if perr := parent.Err(); perr != nil {
			return perr
		}
		if err == nil {
			err = errors.New("ended before the event stream")
		}
		return fmt.Errorf("render: live view: %w", err)
	}
	return writeReport(w, m.b, st, opts.LogHint)
}
