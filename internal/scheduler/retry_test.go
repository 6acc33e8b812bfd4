package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
)

func TestRetry(t *testing.T) {
	tests := []struct {
		name     string
		steps    []step
		want     BuildStatus
		statuses map[string]Status
		// attempts is the retried step's attempt numbers as its events carry them, in order:
		// "log N", "retry N exit", "end N exit".
		key      string
		attempts []string
		runs     int  // machines created for key
		noRetry  bool // Options.NoRetry
	}{
		{
			name:     "NoRetry runs a retried step once",
			steps:    []step{{key: "x", cmd: "print hi flaky 2 1", retry: &ir.Retry{Limit: 2}}},
			want:     BuildFailed,
			statuses: map[string]Status{"x": Failed},
			key:      "x",
			attempts: []string{"log 1", "end 1 1"},
			runs:     1,
			noRetry:  true,
		},
		{
			name:     "fails twice then passes within the limit",
			steps:    []step{{key: "x", cmd: "print hi flaky 2 1", retry: &ir.Retry{Limit: 2}}},
			want:     BuildPassed,
			statuses: map[string]Status{"x": Passed},
			key:      "x",
			attempts: []string{"log 1", "retry 1 1", "log 2", "retry 2 1", "log 3", "end 3 0"},
			runs:     3,
		},
		{
			name:     "the build counts the final attempt",
			steps:    []step{{key: "x", cmd: "fail 1", retry: &ir.Retry{Limit: 2}}},
			want:     BuildFailed,
			statuses: map[string]Status{"x": Failed},
			key:      "x",
			attempts: []string{"retry 1 1", "retry 2 1", "end 3 1"},
			runs:     3,
		},
		{
			name:     "a listed code is retried",
			steps:    []step{{key: "x", cmd: "flaky 1 3", retry: &ir.Retry{Limit: 1, On: []int{3}}}},
			want:     BuildPassed,
			statuses: map[string]Status{"x": Passed},
			key:      "x",
			attempts: []string{"retry 1 3", "end 2 0"},
			runs:     2,
		},
		{
			name:     "an unlisted code is not",
			steps:    []step{{key: "x", cmd: "flaky 1 4", retry: &ir.Retry{Limit: 1, On: []int{3}}}},
			want:     BuildFailed,
			statuses: map[string]Status{"x": Failed},
			key:      "x",
			attempts: []string{"end 1 4"},
			runs:     1,
		},
		{
			name:     "no policy: an exit code is final",
			steps:    []step{{key: "x", cmd: "flaky 1 1"}},
			want:     BuildFailed,
			statuses: map[string]Status{"x": Failed},
			key:      "x",
			attempts: []string{"end 1 1"},
			runs:     1,
		},
		{
			name:     "no policy: an infrastructure error is retried once",
			steps:    []step{{key: "x", cmd: "flaky 1 infra"}},
			want:     BuildPassed,
			statuses: map[string]Status{"x": Passed},
			key:      "x",
			attempts: []string{"log 1", "retry 1 -1", "end 2 0"},
			runs:     2,
		},
		{
			name:     "an infrastructure error uses the limit when the policy lists no codes",
			steps:    []step{{key: "x", cmd: "flaky 2 infra", retry: &ir.Retry{Limit: 2}}},
			want:     BuildPassed,
			statuses: map[string]Status{"x": Passed},
			key:      "x",
			attempts: []string{"log 1", "retry 1 -1", "log 2", "retry 2 -1", "end 3 0"},
			runs:     3,
		},
		{
			name:     "a step timeout is not retried",
			steps:    []step{{key: "x", cmd: "block", timeout: 20 * time.Millisecond, retry: &ir.Retry{Limit: 2}}},
			want:     BuildFailed,
			statuses: map[string]Status{"x": TimedOut},
			key:      "x",
			attempts: []string{"end 1 124"},
			runs:     1,
		},
		{
			name: "a child's attempts start from its parent's snapshot",
			steps: []step{{key: "p", cmd: "ok"},
				{key: "c", cmd: "flaky 1 1", parent: "p", retry: &ir.Retry{Limit: 1}}},
			want:     BuildPassed,
			statuses: map[string]Status{"p": Passed, "c": Passed},
			key:      "c",
			attempts: []string{"retry 1 1", "end 2 0"},
			runs:     2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := build(t, tt.steps)
			f := newFakeVM()
			res, rec := runPlan(t, context.Background(), pl, f, Options{NoRetry: tt.noRetry})
			if res.Status != tt.want {
				t.Errorf("build status = %s, want %s", res.Status, tt.want)
			}
			if diff := cmp.Diff(tt.statuses, statuses(pl, res)); diff != "" {
				t.Errorf("step statuses (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.attempts, attempts(rec, tt.key)); diff != "" {
				t.Errorf("attempts (-want +got):\n%s", diff)
			}
			var specs []string
			for _, s := range f.created {
				if s.Owner.StepKey == tt.key {
					specs = append(specs, s.Image+"|"+s.Parent)
				}
			}
			if len(specs) != tt.runs {
				t.Fatalf("%d machines for %s, want %d", len(specs), tt.key, tt.runs)
			}
			for _, s := range specs[1:] {
				if s != specs[0] {
					t.Errorf("attempts started from %q and %q, want the same base", specs[0], s)
				}
			}
			// Nothing of a failed attempt is committed: only the parent's snapshot exists.
			want := 0
			if len(tt.steps) > 1 {
				want = 1
			}
			if len(f.commits) != want {
				t.Errorf("%d snapshots committed, want %d", len(f.commits), want)
			}
			checkBuildEvents(t, rec, res)
		})
	}
}

// attempts lists the attempt numbers the events of step key carry.
func attempts(rec *recorder, key string) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	id := ""
	var out []string
	for _, e := range rec.evs {
		if e.StepQueued != nil && e.StepQueued.Key == key {
			id = e.StepQueued.StepID
		}
		if id == "" || e.StepID() != id {
			continue
		}
		switch e.Kind {
		case events.KindStepLog:
			s := "log " + itoa(e.StepLog.Attempt)
			if len(out) == 0 || out[len(out)-1] != s {
				out = append(out, s)
			}
		case events.KindStepRetry:
			out = append(out, "retry "+itoa(e.StepRetry.Attempt)+" "+itoa(e.StepRetry.ExitCode))
		case events.KindStepEnd:
			out = append(out, "end "+itoa(e.StepEnd.Attempt)+" "+itoa(e.StepEnd.ExitCode))
		}
	}
	return out
}
