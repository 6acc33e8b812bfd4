package driver

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

// noWake hides the store's Watcher: every wake-up is lost and only the fallback poll is left.
type noWake struct{ store.Store }

// TestWakeUps: the driver learns of a job's start, logs and end by the store's wake-ups (with
// a poll of an hour nothing else could, before the hang guard), and when every wake-up is
// lost, by its fallback poll; either way the build is the local one.
func TestWakeUps(t *testing.T) {
	steps := []step{{key: "a", cmd: "print hello; print world"}, {key: "b", cmd: "print b", parent: "a"},
		{key: "c", cmd: "exit 3", after: []string{"b"}}, {key: "d", cmd: "print d", after: []string{"c"}}}
	for _, c := range []struct {
		name string
		lost bool
	}{{"woken", false}, {"lost wake-ups fall back to polling", true}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := hang(t)
			want, wantExit := byStep(local(ctx, steps, Options{}, 0))
			f := newFixture(t, ctx, steps, Options{}, 0)
			cfg := f.cfg("r1", steps, Options{}, 0)
			cfg.Poll = time.Hour
			if c.lost {
				cfg.Store, cfg.Poll = noWake{f.st}, 20*time.Millisecond
			}
			actx, stop := context.WithCancel(ctx)
			defer stop()
			go f.agent.run(actx, t)
			if _, err := Drive(ctx, cfg, f.build.ID); err != nil {
				t.Fatal(err)
			}
			got, gotExit := byStep(f.stored(t, ctx))
			if d := cmp.Diff(want, got); d != "" || gotExit != wantExit {
				t.Errorf("events differ from local (-local +remote), exit %d vs %d:\n%s", wantExit, gotExit, d)
			}
		})
	}
}
