package buildlog

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hmci/hm/internal/events"
)

var t0 = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)

func start(id string, at time.Time) events.Event {
	return events.Event{Kind: events.KindBuildStart, BuildStart: &events.BuildStart{RunID: id, StartedAt: at}}
}

func logLine(step, line string) events.Event {
	return events.Event{Kind: events.KindStepLog, StepLog: &events.StepLog{StepID: step, Stream: events.Stdout, Line: line, TS: t0}}
}

func end(code int) events.Event {
	return events.Event{Kind: events.KindBuildEnd, BuildEnd: &events.BuildEnd{ExitCode: code, DurationMS: 42}}
}

// hangGuard is a context that ends shortly before the test's deadline, so a blocked follow
// fails the test with a message instead of hanging the run.
func hangGuard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-5*time.Second))
	}
	t.Cleanup(cancel)
	return ctx
}

// record writes a whole build through Record, as hm run does.
func record(t *testing.T, s *Store, info Info, evs ...events.Event) []events.Event {
	t.Helper()
	in := make(chan events.Event, len(evs))
	for _, ev := range evs {
		in <- ev
	}
	close(in)
	r, err := s.Record(in, info)
	if err != nil {
		t.Fatal(err)
	}
	var got []events.Event
	for ev := range r.C() {
		got = append(got, ev)
	}
	r.Wait()
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func lines(t *testing.T, s *Store, id string) []string {
	t.Helper()
	var out []string
	if err := s.Replay(context.Background(), id, false, func(l []byte) error {
		out = append(out, string(l))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func encode(t *testing.T, evs ...events.Event) []string {
	var out []string
	for _, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// The record is the stream byte for byte, passed through unchanged, and meta says how it ended.
func TestRecordReplaysTheStream(t *testing.T) {
	for _, tt := range []struct {
		name string
		code int
		want Status
	}{{"passed", 0, Passed}, {"failed", 1, Failed}, {"timed out", 124, TimedOut}, {"canceled", 130, Canceled}} {
		t.Run(tt.name, func(t *testing.T) {
			s := Open(t.TempDir())
			evs := []events.Event{start("b1", t0), logLine("s1", "hello"), end(tt.code)}
			passed := record(t, s, Info{Pipeline: "p", SourceDir: "/src", Backend: "host"}, evs...)
			// Passed on with the bytes written (Wire) for the NDJSON output, the same bytes.
			if diff := cmp.Diff(evs, passed, cmpopts.IgnoreFields(events.Event{}, "Wire")); diff != "" {
				t.Errorf("passed through (-want +got):\n%s", diff)
			}
			for i, ev := range passed {
				if ev.BuildEnd == nil && string(ev.Wire) != encode(t, evs[i])[0] {
					t.Errorf("event %d passed on with wire form %q", i, ev.Wire)
				}
			}
			if diff := cmp.Diff(encode(t, evs...), lines(t, s, "b1")); diff != "" {
				t.Errorf("replay (-want +got):\n%s", diff)
			}
			m, err := s.Get("b1")
			if err != nil {
				t.Fatal(err)
			}
			code := tt.code
			want := Meta{ID: "b1", Pipeline: "p", SourceDir: "/src", Backend: "host", StartedAt: t0,
				Status: tt.want, ExitCode: &code, DurationMS: 42}
			if diff := cmp.Diff(want, m, cmpopts.IgnoreFields(Meta{}, "EndedAt")); diff != "" || m.EndedAt == nil {
				t.Errorf("meta (-want +got):\n%s\nended_at %v", diff, m.EndedAt)
			}
		})
	}
}

// A record whose writer holds its lock is running; once the writer is gone without build_end
// it is interrupted, whether hm closed it or died (a "running" meta left behind).
func TestRunningAndInterrupted(t *testing.T) {
	s := Open(t.TempDir())
	w, err := s.Create(Meta{ID: "live", StartedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Get("live"); m.Status != Running {
		t.Errorf("while written: %q, want running", m.Status)
	}
	if _, err := s.Create(Meta{ID: "live"}); err == nil {
		t.Error("a second writer of the same build was allowed")
	}
	// A dead hm: its meta says running and nobody holds the lock.
	dead := Meta{ID: "dead", StartedAt: t0, Status: Running}
	if err := os.MkdirAll(filepath.Join(s.Dir(), "dead"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.EventsPath("dead"), []byte(encode(t, start("dead", t0))[0]+"\n{\"kind\":\"step_lo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.writeMeta(dead); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Get("dead"); m.Status != Interrupted {
		t.Errorf("dead writer: %q, want interrupted", m.Status)
	}
	if got := lines(t, s, "dead"); len(got) != 1 {
		t.Errorf("replay of a crashed record passed the partial line: %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Get("live"); m.Status != Interrupted || m.ExitCode != nil {
		t.Errorf("closed without build_end: %q exit %v, want interrupted and no exit code", m.Status, m.ExitCode)
	}
}

func TestFindAndPrune(t *testing.T) {
	s := Open(t.TempDir())
	for i, id := range []string{"aaa1", "aab2", "bbb3", "ccc4"} {
		record(t, s, Info{}, start(id, t0.Add(time.Duration(i)*time.Hour)), end(0))
	}
	for _, tt := range []struct {
		ref, want string
		err       error
	}{
		{ref: "", want: "ccc4"},
		{ref: "bbb3", want: "bbb3"},
		{ref: "aab", want: "aab2"},
		{ref: "aa", err: ErrAmbiguous},
		{ref: "zz", err: ErrNotFound},
		{ref: "../x", err: ErrNotFound},
	} {
		m, err := s.Find(tt.ref)
		if !errors.Is(err, tt.err) || m.ID != tt.want {
			t.Errorf("Find(%q) = %q, %v; want %q, %v", tt.ref, m.ID, err, tt.want, tt.err)
		}
	}

	running, err := s.Create(Meta{ID: "old-but-running", StartedAt: t0.Add(-100 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	ids := func(ms []Meta) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	removed, err := s.Prune(-1, 2*time.Hour+time.Minute, t0.Add(4*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"aab2", "aaa1"}, ids(removed)); diff != "" {
		t.Errorf("pruned by age (-want +got):\n%s", diff)
	}
	// Recording a build with Keep 2 leaves it and the newest other one, and the running build.
	record(t, s, Info{Keep: 2}, start("ddd5", t0.Add(5*time.Hour)), end(0))
	all, _ := s.List()
	if diff := cmp.Diff([]string{"ddd5", "ccc4", "old-but-running"}, ids(all)); diff != "" {
		t.Errorf("after a build with keep 2 (-want +got):\n%s", diff)
	}
}

// Long lines are cut, and past the build's cap log lines are dropped (one notice per step)
// while the other events are still kept.
func TestBounds(t *testing.T) {
	defer func(l, b int64) { maxLineBytes, maxBuildBytes = l, b }(maxLineBytes, maxBuildBytes)
	maxLineBytes, maxBuildBytes = 16, 640
	s := Open(t.TempDir())
	evs := []events.Event{start("big", t0), logLine("s1", strings.Repeat("é", 20))}
	for range 20 {
		evs = append(evs, logLine("s1", "0123456789"))
	}
	evs = append(evs, logLine("s2", "late"), end(1))
	record(t, s, Info{}, evs...)
	got := lines(t, s, "big")
	var logs []string
	for _, l := range got {
		var ev events.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.StepLog != nil {
			logs = append(logs, ev.StepLog.StepID+": "+ev.StepLog.Line)
		}
	}
	notice := "hm: this build's stored log reached its limit of 640 bytes: later lines of this step are not kept"
	want := []string{"s1: " + strings.Repeat("é", 8) + "…"}
	for len(want) < 5 { // the cut line and four whole ones fill 640 bytes with build_start
		want = append(want, "s1: 0123456789")
	}
	want = append(want, "s1: "+notice, "s2: "+notice)
	if diff := cmp.Diff(want, logs); diff != "" {
		t.Errorf("stored log lines (-want +got):\n%s", diff)
	}
	if !isBuildEnd([]byte(got[len(got)-1])) {
		t.Errorf("build_end not kept past the cap: last line %s", got[len(got)-1])
	}
	m, _ := s.Get("big")
	if m.CutLines != 1 || m.DroppedLines != 17 || m.Status != Failed {
		t.Errorf("meta: cut %d dropped %d status %q; want 1, 17, failed", m.CutLines, m.DroppedLines, m.Status)
	}
}

// Follow delivers lines as they are written and ends at build_end, or with ErrInterrupted
// when the writer goes away without one.
func TestFollow(t *testing.T) {
	for _, tt := range []struct {
		name    string
		last    *events.Event
		wantErr error
	}{{name: "to build_end", last: ptr(end(0))}, {name: "writer gone", wantErr: ErrInterrupted}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := hangGuard(t)
			s := Open(t.TempDir())
			w, err := s.Create(Meta{ID: "f", StartedAt: t0})
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan string)
			done := make(chan error, 1)
			go func() {
				done <- s.Replay(ctx, "f", true, func(l []byte) error {
					select {
					case got <- string(l):
					case <-ctx.Done():
					}
					return nil
				})
			}()
			next := func(want events.Event) {
				t.Helper()
				if err := w.Write(want); err != nil {
					t.Fatal(err)
				}
				select {
				case l := <-got:
					if l != encode(t, want)[0] {
						t.Errorf("followed %s, want %s", l, encode(t, want)[0])
					}
				case <-ctx.Done():
					t.Fatal("follow did not deliver a written line")
				}
			}
			next(start("f", t0))
			next(logLine("s", "one"))
			if tt.last != nil {
				next(*tt.last)
			}
			w.Close()
			select {
			case err := <-done:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("follow ended with %v, want %v", err, tt.wantErr)
				}
			case <-ctx.Done():
				t.Fatal("follow did not end")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// A state dir that cannot be written still passes the stream through, and says so up front.
func TestUnwritableStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "builds"), nil, 0o644); err != nil { // not a directory
		t.Fatal(err)
	}
	s := Open(dir)
	in := make(chan events.Event, 2)
	in <- start("x", t0)
	in <- end(0)
	close(in)
	r, err := s.Record(in, Info{})
	if err == nil {
		t.Fatal("no error for an unwritable store")
	}
	n := 0
	for range r.C() {
		n++
	}
	r.Wait()
	if n != 2 || r.ID() != "" {
		t.Errorf("passed %d events, id %q; want 2 and none", n, r.ID())
	}
}

// Build records hold step output: nobody but their owner reads them.
func TestRecordIsPrivate(t *testing.T) {
	s := Open(t.TempDir())
	dir := s.Dir()
	record(t, s, Info{Pipeline: "p", SourceDir: "/src", Backend: "host"}, start("b1", t0), logLine("s1", "hello"), end(0))
	for _, p := range []string{dir, filepath.Join(dir, "b1"), s.EventsPath("b1"), filepath.Join(dir, "b1", "meta.json")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other access", p, perm)
		}
	}
}

// A remote build's stream begins with build_accepted: passed on, not recorded, whether it
// arrives apart or in one batch with build_start (a channel holding the whole stream).
func TestRecordStartsAtBuildStart(t *testing.T) {
	s := Open(t.TempDir())
	acc := events.Event{Kind: events.KindBuildAccepted, BuildAccepted: &events.BuildAccepted{Build: events.AcceptedBuild{RunID: "b1", Number: 1}}}
	evs := []events.Event{acc, start("b1", t0), logLine("s1", "hello"), end(0)}
	passed := record(t, s, Info{Pipeline: "p"}, evs...)
	if len(passed) != len(evs) || passed[0].BuildAccepted == nil {
		t.Fatalf("passed on %d events (first %+v), want all %d", len(passed), passed[0], len(evs))
	}
	if diff := cmp.Diff(encode(t, evs[1:]...), lines(t, s, "b1")); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
}
