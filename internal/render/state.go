package render

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/hmci/hm/internal/events"
)

// Bounds on what the live view keeps in memory: a step can print millions of lines, and the
// event stream is unbounded, so only the tail of each unfinished or failed step is kept.
const (
	// LogTail is how many of a step's last log lines are kept for the failed-log replay.
	LogTail = 200
	// maxKeptLine caps one kept line; a 4 MiB line would be useless in a replay anyway.
	maxKeptLine = 4096
)

type status int

const (
	statusQueued status = iota
	statusRunning
	statusPassed
	statusFailed
	statusCached
	statusSkipped
)

// step is what the renderers know about one step, built from its events.
type step struct {
	id, key, name string
	parentKey     string
	children      []*step
	status        status
	exitCode      int
	duration      time.Duration
	started       time.Time // local clock at step_start, for the live elapsed time
	skipReason    string
	cacheTag      string
	chainFailed   bool     // a chain_failed named it: it failed, rather than being canceled
	messages      []string // chain_failed messages naming this step
	logs          *tail    // nil unless the build keeps logs (live mode)
	// lastLog is the step's last log line the plain renderer printed: the engine logs why a
	// step could not run ("hm: " + the chain_failed message), which is then not repeated.
	lastLog string
	// attempt is the attempt running or that ended the step, attempts the most it may
	// have; both 0 until a step_retry says the step is retried.
	attempt, attempts int
}

// build is the state of one build, folded from its event stream in order.
type build struct {
	keepLogs bool
	now      func() time.Time

	steps    map[string]*step // by step_id
	byKey    map[string]*step
	roots    []*step // steps without a known builds_in parent, in queue order
	runID    string
	started  time.Time // local clock at build_start; zero before it
	planned  int       // step_count of the plan
	accepted *events.BuildAccepted
	end      *events.BuildEnd
}

func newBuild(keepLogs bool, now func() time.Time) *build {
	return &build{keepLogs: keepLogs, now: now, steps: map[string]*step{}, byKey: map[string]*step{}}
}

// stepFor returns the step of id, creating a root placeholder for an id that was never queued,
// so a malformed or truncated stream still renders something sensible.
func (b *build) stepFor(id string) *step {
	if s, ok := b.steps[id]; ok {
		return s
	}
	key := id
	if len(key) > 8 {
		key = key[:8]
	}
	s := &step{id: id, key: key, name: key}
	b.add(s)
	return s
}

func (b *build) add(s *step) {
	b.steps[s.id] = s
	if _, dup := b.byKey[s.key]; !dup {
		b.byKey[s.key] = s
	}
	if p, ok := b.byKey[s.parentKey]; ok && s.parentKey != "" && p != s {
		p.children = append(p.children, s)
	} else {
		b.roots = append(b.roots, s)
	}
	if b.keepLogs {
		s.logs = &tail{max: LogTail}
	}
}

// apply folds one event into the state and returns the step it concerns, if any.
func (b *build) apply(ev events.Event) *step {
	switch {
	case ev.BuildStart != nil:
		b.started = b.now()
		b.runID = ev.BuildStart.RunID
		b.planned = ev.BuildStart.Plan.StepCount
	case ev.BuildAccepted != nil:
		b.accepted = ev.BuildAccepted
	case ev.StepQueued != nil:
		q := ev.StepQueued
		if s, ok := b.steps[q.StepID]; ok {
			return s
		}
		s := &step{id: q.StepID, key: q.Key, name: q.DisplayName}
		if q.ParentKey != nil {
			s.parentKey = *q.ParentKey
		}
		b.add(s)
		return s
	case ev.StepStart != nil:
		s := b.stepFor(ev.StepStart.StepID)
		s.status = statusRunning
		s.started = b.now()
		return s
	case ev.StepLog != nil:
		s := b.stepFor(ev.StepLog.StepID)
		if s.logs != nil {
			s.logs.add(ev.StepLog.Line)
		}
		return s
	case ev.StepCacheHit != nil:
		s := b.stepFor(ev.StepCacheHit.StepID)
		s.status = statusCached
		s.cacheTag = ev.StepCacheHit.Tag
		return s
	case ev.StepEnd != nil:
		e := ev.StepEnd
		s := b.stepFor(e.StepID)
		s.exitCode = e.ExitCode
		if e.Attempt > 1 {
			s.attempt = e.Attempt
		}
		s.duration = time.Duration(e.DurationMS) * time.Millisecond
		switch {
		case e.ExitCode != 0:
			s.status = statusFailed
		case s.status != statusCached:
			s.status = statusPassed
		}
		if s.status != statusFailed {
			s.logs.drop() // only failed steps are replayed
		}
		return s
	case ev.StepArtifact != nil:
		return b.stepFor(ev.StepArtifact.StepID)
	case ev.StepRetry != nil:
		r := ev.StepRetry
		s := b.stepFor(r.StepID)
		s.attempt, s.attempts = r.Attempt+1, r.Attempts
		if s.logs != nil {
			s.logs.add(retryText(r))
		}
		return s
	case ev.StepSkipped != nil:
		s := b.stepFor(ev.StepSkipped.StepID)
		s.status = statusSkipped
		s.skipReason = ev.StepSkipped.Reason
		return s
	case ev.ChainFailed != nil:
		c := ev.ChainFailed
		var s *step
		if c.FailedStepID != "" {
			s = b.stepFor(c.FailedStepID)
		} else if s = b.byKey[c.FailedStepKey]; s == nil {
			return nil
		}
		s.chainFailed = true
		if c.Message != "" {
			s.messages = append(s.messages, c.Message)
		}
		return s
	case ev.BuildEnd != nil:
		b.end = ev.BuildEnd
	}
	return nil
}

// retryText says that an attempt failed and which one comes next.
func retryText(r *events.StepRetry) string {
	why := fmt.Sprintf("exit %d", r.ExitCode)
	if r.ExitCode == -1 {
		why = "could not run"
	}
	return fmt.Sprintf("↻ attempt %d failed (%s), retrying: attempt %d of %d", r.Attempt, why, r.Attempt+1, r.Attempts)
}

// attemptNote is " (attempt N of M)" for a retried step, else "".
func attemptNote(s *step) string {
	switch {
	case s.attempt <= 1:
		return ""
	case s.attempts >= s.attempt:
		return fmt.Sprintf(" (attempt %d of %d)", s.attempt, s.attempts)
	}
	return fmt.Sprintf(" (attempt %d)", s.attempt)
}

// canceled reports whether s ended non-zero without a chain_failed: semantics.md emits
// chain_failed for every failure, so such a step was running when the build was canceled (by
// the user, a timeout or fail-fast). Only known once the build has ended.
func (b *build) canceled(s *step) bool {
	return b.end != nil && s.status == statusFailed && !s.chainFailed
}

// counts returns how many steps failed, were canceled while running, and were skipped.
func (b *build) counts() (failed, canceled, skipped int) {
	for _, s := range b.steps {
		switch {
		case b.canceled(s):
			canceled++
		case s.status == statusFailed:
			failed++
		case s.status == statusSkipped:
			skipped++
		}
	}
	return failed, canceled, skipped
}

// walk visits the steps in tree order: each step, then its builds_in children, depth first.
func (b *build) walk(visit func(s *step, depth int)) {
	var rec func(ss []*step, depth int)
	rec = func(ss []*step, depth int) {
		for _, s := range ss {
			visit(s, depth)
			rec(s.children, depth+1)
		}
	}
	rec(b.roots, 0)
}

// tail keeps the last max lines of a log in a ring, counting what it dropped.
type tail struct {
	max     int
	lines   []string
	next    int // ring position of the oldest line once full
	dropped int
}

func (t *tail) add(line string) {
	if len(line) > maxKeptLine {
		cut := maxKeptLine
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut] + "…"
	}
	if len(t.lines) < t.max {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % t.max
	t.dropped++
}

// last returns the newest n kept lines, oldest first.
func (t *tail) last(n int) []string {
	all := t.all()
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// all returns the kept lines, oldest first.
func (t *tail) all() []string {
	if t == nil {
		return nil
	}
	out := make([]string, 0, len(t.lines))
	out = append(out, t.lines[t.next:]...)
	return append(out, t.lines[:t.next]...)
}

func (t *tail) drop() {
	if t != nil {
		t.lines, t.next, t.dropped = nil, 0, 0
	}
}
