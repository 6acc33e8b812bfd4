package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

func contextCanceled(e *env) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	return ctx, cancel
}

var buildCases = []testCase{
	{"BuildCreateVerbatim", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		ir := "{\"version\":0,  \"steps\":[{\"key\":\"a\"}]}\n" // kept byte for byte, spaces and newline too
		nb := store.NewBuild{OrgID: o.ID, PipelineID: p.ID, Branch: "main", Commit: "abc", Message: "msg", IR: ir,
			Env: map[string]string{"A": "1"}, Options: json.RawMessage(`{"parallelism":2,"keep_going":true}`),
			SourceDigest: "sha256:00", Now: e.t0,
			Jobs: []store.NewJob{
				{ID: "00000000-0000-4000-8000-000000000001", StepKey: "deps", Name: "deps", Command: "make deps", Labels: []string{"linux"}},
				{ID: "00000000-0000-4000-8000-000000000002", StepKey: "test", Command: "make test", ParentID: "00000000-0000-4000-8000-000000000001",
					DependsOn: []string{"00000000-0000-4000-8000-000000000001"}, Backend: "sandbox"},
			}}
		b, jobs := must2(t)(e.s.CreateBuild(e.ctx, nb))
		if b.Number != 1 || b.State != store.BuildScheduled || b.IR != ir || b.Source != "api" || b.Canceled ||
			!cmp.Equal(b.Env, nb.Env) || string(b.Options) != string(nb.Options) || b.SourceDigest != "sha256:00" ||
			!b.CreatedAt.Equal(e.t0) || !b.StartedAt.IsZero() {
			t.Errorf("created build = %+v", b)
		}
		if diff := cmp.Diff(b, get(e.s.GetBuild(e.ctx, b.ID))(t)); diff != "" {
			t.Errorf("GetBuild (-created +got):\n%s", diff)
		}
		if diff := cmp.Diff(b, get(e.s.GetBuildByNumber(e.ctx, p.ID, 1))(t)); diff != "" {
			t.Errorf("GetBuildByNumber (-created +got):\n%s", diff)
		}
		listed := get(e.s.ListJobs(e.ctx, b.ID))(t)
		if diff := cmp.Diff(jobs, listed); diff != "" {
			t.Errorf("ListJobs (-created +listed):\n%s", diff)
		}
		j := listed[1]
		if j.StepKey != "test" || j.State != store.JobPending || j.Attempt != 0 || j.ParentID != listed[0].ID ||
			!cmp.Equal(j.DependsOn, []string{listed[0].ID}) || j.Backend != "sandbox" || j.Ordinal != 1 || j.ExitCode != nil {
			t.Errorf("job = %+v", j)
		}
		if !cmp.Equal(listed[0].Labels, []string{"linux"}) || listed[0].DependsOn == nil {
			t.Errorf("job 0 labels %v depends_on %v, want [linux] and []", listed[0].Labels, listed[0].DependsOn)
		}
		_, _, err := e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}",
			Jobs: []store.NewJob{{StepKey: "x", DependsOn: []string{"later"}}}})
		if err == nil {
			t.Error("a job depending on an unknown job was accepted")
		}
		other, _ := e.org(t, "other")
		_, _, err = e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: other.ID, PipelineID: p.ID, IR: "{}"})
		isNotFound(t, err, "a build of another org's pipeline")
		_, err = e.s.GetBuildByNumber(e.ctx, p.ID, 99)
		isNotFound(t, err, "unknown build number")
	}},
	{"BuildNumbersConcurrent", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		const n = 24
		var mu sync.Mutex
		var nums []int64
		parallel(t, n, func(int) {
			b, _, err := e.s.CreateBuild(e.ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}",
				Jobs: []store.NewJob{{StepKey: "a"}}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			nums = append(nums, b.Number)
			mu.Unlock()
		})
		slices.Sort(nums)
		for i, n := range nums {
			if n != int64(i+1) {
				t.Fatalf("build numbers %v: want 1…%d, each once", nums, len(nums))
			}
		}
		page := get(e.s.ListBuilds(e.ctx, p.ID, 0, 10))(t)
		if len(page) != 10 || page[0].Number != n || page[9].Number != n-9 {
			t.Fatalf("first page: %d builds from %d, want 10 from %d", len(page), page[0].Number, n)
		}
		page = get(e.s.ListBuilds(e.ctx, p.ID, page[9].Number, 100))(t)
		if len(page) != n-10 || page[0].Number != n-10 {
			t.Errorf("second page: %d builds, want %d", len(page), n-10)
		}
	}},
	{"BuildTransitions", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		b = get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildRunning, store.BuildUpdate{Now: e.at(time.Second)}))(t)
		if b.State != store.BuildRunning || !b.StartedAt.Equal(e.at(time.Second)) {
			t.Errorf("running build = %+v", b)
		}
		_, err := e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildScheduled}, store.BuildRunning, store.BuildUpdate{})
		isConflict(t, err, "a transition from a state the build has left")
		_, err = e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildPassed}, store.BuildRunning, store.BuildUpdate{})
		if !errors.Is(err, store.ErrInvalidTransition) {
			t.Errorf("passed → running = %v, want ErrInvalidTransition", err)
		}
		b = get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildRunning}, store.BuildFailing, store.BuildUpdate{Now: e.at(2 * time.Second)}))(t)
		b = get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildRunning, store.BuildFailing}, store.BuildFailed,
			store.BuildUpdate{ErrorCode: "pipeline_timeout", ErrorMessage: "timed out after 1s", Now: e.at(3 * time.Second)}))(t)
		if b.State != store.BuildFailed || b.ErrorCode != "pipeline_timeout" || b.ErrorMessage == "" ||
			!b.StartedAt.Equal(e.at(time.Second)) || !b.FinishedAt.Equal(e.at(3*time.Second)) {
			t.Errorf("failed build = %+v", b)
		}
		// A terminal build ignores cancel (remote.md) and is not unfinished any more.
		c := get(e.s.CancelBuild(e.ctx, b.ID, e.at(time.Hour)))(t)
		if c.State != store.BuildFailed || c.Canceled {
			t.Errorf("cancel of a failed build changed it: %+v", c)
		}
		if us := get(e.s.ListUnfinishedBuilds(e.ctx))(t); len(us) != 0 {
			t.Errorf("unfinished = %d builds, want 0", len(us))
		}
	}},
	{"BuildCancel", func(t *testing.T, e *env) {
		o, p := e.org(t, "acme")
		b, _ := e.build(t, o, p)
		b2, _ := e.build(t, o, p)
		c := get(e.s.CancelBuild(e.ctx, b.ID, e.at(time.Second)))(t)
		if c.State != store.BuildCanceling || !c.Canceled {
			t.Errorf("canceled build = %+v, want canceling with the flag", c)
		}
		if again := get(e.s.CancelBuild(e.ctx, b.ID, e.at(2*time.Second)))(t); !cmp.Equal(c, again) {
			t.Errorf("a second cancel changed the build: %+v → %+v", c, again)
		}
		c = get(e.s.TransitionBuild(e.ctx, b.ID, []store.BuildState{store.BuildCanceling}, store.BuildCanceled, store.BuildUpdate{Now: e.at(3 * time.Second)}))(t)
		if c.State != store.BuildCanceled || !c.FinishedAt.Equal(e.at(3*time.Second)) {
			t.Errorf("build = %+v, want canceled", c)
		}
		us := get(e.s.ListUnfinishedBuilds(e.ctx))(t)
		if len(us) != 1 || us[0].ID != b2.ID {
			t.Errorf("unfinished = %+v, want only build 2", us)
		}
		_, err := e.s.CancelBuild(e.ctx, "nope", e.t0)
		isNotFound(t, err, "cancel of an unknown build")
	}},
	{"BuildStateEnum", func(t *testing.T, e *env) {
		// Every edge of the machine ends in a state of the closed enum, and the terminal
		// states have no way out.
		for _, from := range store.BuildStates {
			for _, to := range store.BuildStates {
				if from.CanTransition(to) && (from.Terminal() || !slices.Contains(store.BuildStates, to)) {
					t.Errorf("edge %s → %s leaves a terminal state", from, to)
				}
			}
		}
	}},
}

// must2 is get for a call returning two values and an error.
func must2(t *testing.T) func(store.Build, []store.Job, error) (store.Build, []store.Job) {
	return func(b store.Build, js []store.Job, err error) (store.Build, []store.Job) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b, js
	}
}
