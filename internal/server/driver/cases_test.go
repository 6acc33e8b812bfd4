package driver

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/store"
)

// TestSameAsLocal runs each build locally on a fake VM and remotely through the store with a
// fake agent: the per-step event sequences and the build's exit code must be the same.
func TestSameAsLocal(t *testing.T) {
	cases := []struct {
		name    string
		steps   []step
		o       Options
		timeout time.Duration
		state   store.BuildState
		code    string
	}{
		{name: "chain", steps: []step{{key: "a", cmd: "print hello; print world"}, {key: "b", cmd: "print b", parent: "a"},
			{key: "c", cmd: "print c", parent: "b"}}, state: store.BuildPassed},
		{name: "fan-out", steps: []step{{key: "root", cmd: "print r"}, {key: "x", cmd: "print x", after: []string{"root"}},
			{key: "y", cmd: "print y", after: []string{"root"}}, {key: "z", cmd: "print z", after: []string{"x", "y"}}},
			state: store.BuildPassed},
		{name: "fail-fast", steps: []step{{key: "bad", cmd: "sleep 200ms; exit 3"}, {key: "slow", cmd: "block"},
			{key: "after", cmd: "print no", after: []string{"bad"}}}, state: store.BuildFailed},
		{name: "keep-going", o: Options{KeepGoing: true}, steps: []step{{key: "bad", cmd: "exit 3"},
			{key: "ok", cmd: "sleep 50ms; print yes"}, {key: "dep", cmd: "print no", after: []string{"bad"}}}, state: store.BuildFailed},
		{name: "step timeout", steps: []step{{key: "t", cmd: "block", timeout: 200 * time.Millisecond}}, state: store.BuildFailed},
		{name: "pipeline timeout", timeout: 2 * time.Second, steps: []step{{key: "a", cmd: "print a"},
			{key: "b", cmd: "block", after: []string{"a"}}}, state: store.BuildFailed, code: "pipeline_timeout"},
		{name: "retry passes", steps: []step{{key: "flaky", cmd: "print try; failbefore 3 7", retry: &ir.Retry{Limit: 3, On: []int{7}}},
			{key: "after", cmd: "print after", after: []string{"flaky"}}}, state: store.BuildPassed},
		{name: "retry exhausted", steps: []step{{key: "bad", cmd: "print try; exit 7", retry: &ir.Retry{Limit: 1}},
			{key: "after", cmd: "print no", after: []string{"bad"}}}, state: store.BuildFailed},
		{name: "retry not on this code", steps: []step{{key: "bad", cmd: "exit 5", retry: &ir.Retry{Limit: 2, On: []int{7}}}},
			state: store.BuildFailed},
		{name: "retried child", steps: []step{{key: "base", cmd: "print base"},
			{key: "child", cmd: "print child; failbefore 2 1", parent: "base", retry: &ir.Retry{Limit: 1}}}, state: store.BuildPassed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := hang(t)
			want, wantExit := byStep(local(ctx, c.steps, c.o, c.timeout))
			f := newFixture(t, ctx, c.steps, c.o, c.timeout)
			actx, stop := context.WithCancel(ctx)
			defer stop()
			go f.agent.run(actx, t)
			if _, err := Drive(ctx, f.cfg("r1", c.steps, c.o, c.timeout), f.build.ID); err != nil {
				t.Fatal(err)
			}
			got, gotExit := byStep(f.stored(t, ctx))
			if d := cmp.Diff(want, got); d != "" || gotExit != wantExit {
				t.Errorf("events differ from local (-local +remote), exit %d vs %d:\n%s", wantExit, gotExit, d)
			}
			b, _ := f.st.GetBuild(ctx, f.build.ID)
			if b.State != c.state || b.ErrorCode != c.code {
				t.Errorf("build %s/%q, want %s/%q", b.State, b.ErrorCode, c.state, c.code)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "a", cmd: "block"}, {key: "b", cmd: "print b", after: []string{"a"}}}
	f := newFixture(t, ctx, steps, Options{}, 0)
	go f.agent.run(ctx, t)
	go func() {
		for {
			j, _ := f.st.ListJobs(ctx, f.build.ID)
			if len(j) > 0 && j[0].State == store.JobRunning {
				f.st.CancelBuild(ctx, f.build.ID, time.Now())
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if _, err := Drive(ctx, f.cfg("r1", steps, Options{}, 0), f.build.ID); err != nil {
		t.Fatal(err)
	}
	got, exit := byStep(f.stored(t, ctx))
	want := map[string][]string{"a": {"step_queued", "step_start", "step_end:130"}, "b": {"step_queued", "step_skipped:dependency_failed"}}
	if d := cmp.Diff(want, got); d != "" || exit != 130 {
		t.Errorf("exit %d, events (-want +got):\n%s", exit, d)
	}
	b, _ := f.st.GetBuild(ctx, f.build.ID)
	js, _ := f.st.ListJobs(ctx, f.build.ID)
	if b.State != store.BuildCanceled || js[0].State != store.JobCanceled || js[1].State != store.JobSkipped {
		t.Errorf("build %s, jobs %s %s", b.State, js[0].State, js[1].State)
	}
}

func TestCacheHitWithoutAgent(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "a", cmd: "print a", cache: true}, {key: "b", cmd: "print b", parent: "a"}}
	o := Options{CacheKeys: map[string]string{"a": "k1"}, CacheInputs: map[string]cachekey.Inputs{"a": {Fingerprint: "fp-a"}}}
	f := newFixture(t, ctx, steps, o, 0)
	if _, err := f.st.UpsertAgent(ctx, store.Agent{ID: "agent-1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.PutCacheEntry(ctx, store.CacheEntry{OrgID: f.build.OrgID, Key: "k1", Scope: "fp-a img", Snapshot: "snap-old",
		AgentID: "agent-1", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	go f.agent.run(ctx, t)
	if _, err := Drive(ctx, f.cfg("r1", steps, o, 0), f.build.ID); err != nil {
		t.Fatal(err)
	}
	evs := f.stored(t, ctx)
	got, exit := byStep(evs)
	want := map[string][]string{"a": {"step_queued", "step_cache_hit", "step_end:0"},
		"b": {"step_queued", "step_start", "step_log:b", "step_end:0"}}
	if d := cmp.Diff(want, got); d != "" || exit != 0 {
		t.Errorf("exit %d, events (-want +got):\n%s", exit, d)
	}
	wantEntry := registry.Scope{Backend: "fake", Base: "img", Key: "k1", Fingerprint: "fp-a"}.ID()
	for _, e := range evs {
		if h := e.StepCacheHit; h != nil && (h.Entry == nil || *h.Entry != wantEntry || h.Tag != "snap-old") {
			t.Errorf("step_cache_hit = %+v, want entry %s and tag snap-old", h, wantEntry)
		}
	}
	f.agent.mu.Lock()
	defer f.agent.mu.Unlock()
	if f.agent.runs["a"] != 0 || f.agent.runs["b"] != 1 {
		t.Errorf("agent ran %v", f.agent.runs)
	}
}

// TestCacheExplained runs builds of one pipeline in turn: misses are explained as locally
// (first run, then what differs from the step's last entry), a hit names its entry, an entry
// whose agent is gone is a miss that says so, and a build without fingerprints never hits.
func TestCacheExplained(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "a", cmd: "print a", cache: true}}
	opts := func(key, cmdHash string) Options {
		return Options{CacheKeys: map[string]string{"a": key},
			CacheInputs: map[string]cachekey.Inputs{"a": {Policy: "forever", CmdHash: cmdHash, Fingerprint: "fp-" + cmdHash}}}
	}
	f := newFixture(t, ctx, steps, opts("k1", "c1"), 0)
	go f.agent.run(ctx, t)
	id := func(key, fp string) string {
		return registry.Scope{Backend: "fake", Base: "img", Key: key, Fingerprint: fp}.ID()
	}
	notes := func(b store.Build) (lines []string, entries []string) {
		evs, err := f.st.ListEvents(ctx, b.ID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, se := range evs {
			var e events.Event
			if err := e.UnmarshalJSON(se.Payload); err != nil {
				t.Fatal(err)
			}
			if l := e.StepLog; l != nil && strings.HasPrefix(l.Line, "hm: cache miss: ") {
				lines = append(lines, strings.TrimPrefix(l.Line, "hm: cache miss: "))
			}
			if h := e.StepCacheHit; h != nil && h.Entry != nil {
				entries = append(entries, *h.Entry)
			}
		}
		return lines, entries
	}
	cases := []struct {
		name    string
		o       Options
		before  func()
		lines   []string
		entries []string
	}{
		{name: "first run", o: opts("k1", "c1"), lines: []string{"no entry " + id("k1", "fp-c1") + " (first run of this step)"}},
		{name: "hit", o: opts("k1", "c1"), entries: []string{id("k1", "fp-c1")}},
		{name: "command changed", o: opts("k2", "c2"),
			lines: []string{"no entry " + id("k2", "fp-c2") + ": command changed since the cached snapshot"}},
		{name: "agent gone", o: opts("k2", "c2"), before: func() {
			// The entry of k2 now names a snapshot on an agent that is not there.
			if _, err := f.st.PutCacheEntry(ctx, store.CacheEntry{OrgID: f.build.OrgID, Key: "k2", Scope: "fp-c2 img",
				Snapshot: "snap-elsewhere", AgentID: "ghost", PipelineID: f.build.PipelineID, StepKey: "a"}); err != nil {
				t.Fatal(err)
			}
		}, lines: []string{"entry " + id("k2", "fp-c2") + " points to snapshot snap-elsewhere, which is gone"}},
		{name: "no fingerprint", o: Options{CacheKeys: map[string]string{"a": "k2"}},
			lines: []string{"no entry " + id("k2", "") + " (the client sent no fingerprint of the step)"}},
	}
	for i, tc := range cases {
		b := f.build
		if i > 0 {
			b = f.newBuild(t, ctx, f.build.PipelineID, steps, tc.o)
		}
		if tc.before != nil {
			tc.before()
		}
		if _, err := Drive(ctx, f.cfg("r1", steps, tc.o, 0), b.ID); err != nil {
			t.Fatal(err)
		}
		lines, entries := notes(b)
		if d := cmp.Diff(tc.lines, lines); d != "" {
			t.Errorf("%s: miss lines (-want +got):\n%s", tc.name, d)
		}
		if d := cmp.Diff(tc.entries, entries); d != "" {
			t.Errorf("%s: hit entries (-want +got):\n%s", tc.name, d)
		}
	}
}

// TestDurability stops the driver mid-build and starts another on the same store: the build
// completes, each step ran once, and the stored stream is the uninterrupted one.
func TestDurability(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "a", cmd: "print a1; print a2"}, {key: "b", cmd: "print b1; sleep 300ms; print b2", parent: "a"},
		{key: "c", cmd: "print c", after: []string{"a"}}, {key: "d", cmd: "print d", parent: "b"}}
	want, wantExit := byStep(local(ctx, steps, Options{}, 0))
	f := newFixture(t, ctx, steps, Options{}, 0)
	go f.agent.run(ctx, t)
	d1, stop := context.WithCancel(ctx)
	go func() {
		for {
			evs, _ := f.st.ListEvents(ctx, f.build.ID, 0, 1000)
			for _, e := range evs {
				if bytes.HasPrefix(e.Payload, []byte(`{"kind":"step_log"`)) && bytes.Contains(e.Payload, []byte(`"b1"`)) {
					stop()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if _, err := Drive(d1, f.cfg("r1", steps, Options{}, 0), f.build.ID); err == nil {
		t.Fatal("the first driver was not stopped")
	}
	// r1's lease is still live: r2 takes over once it lapses (3 s), as a replica would.
	var err error
	for {
		_, err = Drive(ctx, f.cfg("r2", steps, Options{}, 0), f.build.ID)
		if !store.IsConflict(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	got, gotExit := byStep(f.stored(t, ctx))
	if d := cmp.Diff(want, got); d != "" || gotExit != wantExit {
		t.Errorf("stored stream differs (-local +remote), exit %d vs %d:\n%s", wantExit, gotExit, d)
	}
	f.agent.mu.Lock()
	for _, s := range steps {
		if f.agent.runs[s.key] != 1 {
			t.Errorf("step %s ran %d times", s.key, f.agent.runs[s.key])
		}
	}
	f.agent.mu.Unlock()
	if b, _ := f.st.GetBuild(ctx, f.build.ID); b.State != store.BuildPassed {
		t.Errorf("build %s", b.State)
	}
}

// TestRetryDurability stops the driver after a step's first attempt failed and starts another
// on the same store: the attempts already made are replayed as they ended (not run again),
// the retry goes on, and the stored stream is the uninterrupted one.
func TestRetryDurability(t *testing.T) {
	ctx := hang(t)
	steps := []step{{key: "flaky", cmd: "print try; sleep 300ms; failbefore 3 7", retry: &ir.Retry{Limit: 3}},
		{key: "after", cmd: "print after", after: []string{"flaky"}}}
	want, wantExit := byStep(local(ctx, steps, Options{}, 0))
	f := newFixture(t, ctx, steps, Options{}, 0)
	go f.agent.run(ctx, t)
	d1, stop := context.WithCancel(ctx)
	go func() {
		for {
			evs, _ := f.st.ListEvents(ctx, f.build.ID, 0, 1000)
			for _, e := range evs {
				if bytes.HasPrefix(e.Payload, []byte(`{"kind":"step_retry"`)) {
					stop()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if _, err := Drive(d1, f.cfg("r1", steps, Options{}, 0), f.build.ID); err == nil {
		t.Fatal("the first driver was not stopped")
	}
	if _, err := Drive(ctx, f.cfg("r2", steps, Options{}, 0), f.build.ID); err != nil {
		t.Fatal(err)
	}
	got, gotExit := byStep(f.stored(t, ctx))
	if d := cmp.Diff(want, got); d != "" || gotExit != wantExit {
		t.Errorf("stored stream differs (-local +remote), exit %d vs %d:\n%s", wantExit, gotExit, d)
	}
	f.agent.mu.Lock()
	defer f.agent.mu.Unlock()
	if f.agent.runs["flaky"] != 3 || f.agent.runs["after"] != 1 {
		t.Errorf("runs per step %v, want flaky 3 (one per attempt) and after 1", f.agent.runs)
	}
}

// TestRetryAndInfrastructure: an infrastructure failure an agent reports is retried as
// locally (once without a policy); a job that ended agent_lost (the store's own retries of a
// lost agent spent) is not retried by the policy, however generous.
func TestRetryAndInfrastructure(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
		want  map[string][]string
		runs  int
	}{
		{name: "infrastructure failure retried once", steps: []step{{key: "s", cmd: "print go; infrabefore 2"}},
			want: map[string][]string{"s": {"step_queued", "step_start", "step_log:go",
				"step_log:hm: step 's' could not run: infrastructure error: image_not_found: no such image", "step_retry:1/2:-1",
				"step_log:go@2", "step_end:0@2"}}, runs: 2},
		{name: "agent lost not retried", steps: []step{{key: "s", cmd: "print go; lost", retry: &ir.Retry{Limit: 3}}},
			want: map[string][]string{"s": {"step_queued", "step_start", "step_log:go",
				"step_log:hm: step 's' could not run: infrastructure error: agent_lost: agent lost: its lease lapsed", "step_end:-1", "chain_failed"}},
			runs: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := hang(t)
			f := newFixture(t, ctx, c.steps, Options{}, 0)
			go f.agent.run(ctx, t)
			if _, err := Drive(ctx, f.cfg("r1", c.steps, Options{}, 0), f.build.ID); err != nil {
				t.Fatal(err)
			}
			got, _ := byStep(f.stored(t, ctx))
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
			f.agent.mu.Lock()
			defer f.agent.mu.Unlock()
			if f.agent.runs["s"] != c.runs {
				t.Errorf("the agent ran the step %d times, want %d", f.agent.runs["s"], c.runs)
			}
		})
	}
}
