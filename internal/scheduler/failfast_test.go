package scheduler

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// slowCopyVM is prepVM whose artifact copy fires "copying", then fails once "copy-go" fires.
type slowCopyVM struct{ *prepVM }

func (b slowCopyVM) CopyArtifacts(ctx context.Context, _ string, _ vm.Owner, _ []string, _ *os.Root) (artifact.Result, error) {
	b.fire("copying")
	select {
	case <-b.signal("copy-go"):
	case <-ctx.Done():
		return artifact.Result{}, ctx.Err()
	}
	return artifact.Result{}, errors.New("disk full")
}

// A step that fails keeps its parallelism slot until the main loop has recorded the failure:
// fail-fast halts first, and a step waiting for that slot ends canceled without starting. When
// the worker freed the slot itself, the waiting step took it and started in the moment
// between the failure and the loop's halt, and was then killed (exit 130).
//
// The test forces that moment: with one slot, "breaker" holds it and "waiter" is held on its
// way to the slot (resolving its image). The loop is held too, inside the publish of
// "holder"'s step_queued (the recorder's hook runs on the loop's goroutine), while breaker
// fails and its worker hands the completion over; only then is waiter let go, and the loop
// waits until waiter has either started (it found the slot free: the bug) or begun preparing
// a machine (it found the slot taken: a vm.Preparer backend prepares while it waits). Both
// are positive events, so the test needs no timing to tell the two apart.
func TestFailFastBeforeSlotIsFreed(t *testing.T) {
	for _, tc := range []struct {
		name           string
		breaker        step
		artifacts      bool   // breaker has some (it is a cache hit that copies them out)
		running, fails string // signals: breaker holds the slot; make it fail
	}{
		{
			name:    "the command fails",
			breaker: step{key: "breaker", cmd: "signal running wait breaker-go fail 1"},
			running: "running", fails: "breaker-go",
		},
		{
			// A cache hit takes a slot only to copy its artifacts out; a failed copy fails it.
			name:    "a cache hit's artifact copy fails",
			breaker: step{key: "breaker", cmd: "ok", cache: true}, artifacts: true,
			running: "copying", fails: "copy-go",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps := []step{tc.breaker, {key: "waiter", cmd: "block"}, {key: "holder", cmd: "ok"}}
			pl := build(t, steps)
			pl.Steps[1].Image = "slow"
			if tc.artifacts {
				pl.Steps[0].Artifacts = []string{"dist"}
			}
			p := slowCopyVM{newPrepVM()}
			p.slowImage = "slow"
			cache := &fakeCache{entries: map[string]string{"id:img/key-breaker": "snap-cached"}}
			rec := &recorder{}
			opts := Options{Parallelism: 1, Keys: keysFor(steps), Cache: cache, ArtifactsDir: t.TempDir(),
				Workspace: &source.Tree{}, Publish: rec.publish}
			r := newRun(pl, p, opts)
			waiterID := r.steps[1].id
			started := make(chan struct{})
			rec.on = func(e events.Event) {
				if e.StepStart != nil && e.StepStart.StepID == waiterID {
					close(started)
				}
				if e.StepQueued == nil || e.StepQueued.Key != "holder" {
					return
				}
				// On the loop's goroutine, breaker's and waiter's workers running.
				<-p.signal(tc.running)
				<-p.signal("slow-resolving")
				p.fire(tc.fails)
				for len(r.done) == 0 { // breaker's worker has ended; the loop cannot take it
					time.Sleep(time.Millisecond)
				}
				p.fire("slow-release")
				select {
				case <-started:
				case <-p.signal("prepared"):
				}
			}
			res := guard(t, func() Result { return r.run(context.Background()) })

			want := map[string]Status{"breaker": Failed, "waiter": Skipped, "holder": Skipped}
			if d := cmp.Diff(want, statuses(pl, res)); d != "" {
				t.Errorf("statuses (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]string{"step_queued", "step_skipped:canceled"}, rec.byStep()["waiter"]); d != "" {
				t.Errorf("waiter's events (-want +got):\n%s", d)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, m := range p.machines {
				if m.spec.Cmd == "block" && (m.ran || !m.destroyed) {
					t.Errorf("waiter's machine ran %v, destroyed %v; want never run, destroyed", m.ran, m.destroyed)
				}
			}
			checkBuildEvents(t, rec, res)
		})
	}
}
