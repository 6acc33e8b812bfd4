package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
	"github.com/hmci/hm/internal/vm"
)

// A step's command is a script: "print TEXT;...;exit N" words separated by ';':
// print X (a stdout line), sleep D, block (until stopped), exit N, failbefore K N (exit N
// while the retry policy's attempt is below K), and for the fake agent only: infrabefore K
// (an infrastructure failure while the attempt is below K), lost (the job ends agent_lost).

type step struct {
	key, cmd string
	parent   string
	after    []string
	timeout  time.Duration
	cache    bool
	retry    *ir.Retry
}

func buildPlan(steps []step, timeout time.Duration) *plan.Plan {
	p := &ir.Pipeline{Version: "0", DefaultImage: "img"}
	idx := map[string]int{}
	for i, s := range steps {
		idx[s.key] = i
		st := ir.Step{Key: s.key, Cmd: s.cmd}
		if s.cache {
			st.Cache = &ir.Cache{Policy: ir.PolicyForever}
		}
		st.Retry = s.retry
		p.Nodes = append(p.Nodes, ir.Node{Step: st, Env: map[string]string{}})
	}
	for i, s := range steps {
		if s.parent != "" {
			p.Edges = append(p.Edges, ir.Edge{From: idx[s.parent], To: i, Kind: ir.BuildsIn})
		}
		for _, a := range s.after {
			p.Edges = append(p.Edges, ir.Edge{From: idx[a], To: i, Kind: ir.DependsOn})
		}
	}
	pl := plan.New(p)
	for i, s := range steps {
		pl.Steps[i].Timeout = s.timeout
	}
	pl.Timeout = timeout
	return pl
}

const (
	exitInfra = -3
	exitLost  = -4
)

// script runs cmd as policy attempt try; stopped reports a stop request. It returns the
// exit code.
func script(cmd string, try int, out func(string), stopped func() bool) int {
	for _, w := range strings.Split(cmd, ";") {
		f := strings.Fields(w)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "print":
			out(strings.Join(f[1:], " "))
		case "sleep":
			d, _ := time.ParseDuration(f[1])
			for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
				if stopped() {
					return -2
				}
			}
		case "block":
			for !stopped() {
				time.Sleep(5 * time.Millisecond)
			}
			return -2
		case "exit":
			n, _ := strconv.Atoi(f[1])
			return n
		case "failbefore":
			k, _ := strconv.Atoi(f[1])
			n, _ := strconv.Atoi(f[2])
			if try < k {
				return n
			}
		case "infrabefore": // the fake agent reports an infrastructure failure
			k, _ := strconv.Atoi(f[1])
			if try < k {
				return exitInfra
			}
		case "lost": // the fake agent reports what the reaper records for a lost agent
			return exitLost
		}
	}
	return 0
}

// localVM runs scripts in process: the reference the remote build must match.
type localVM struct{}

func (localVM) Name() string                                                        { return "fake" }
func (localVM) ResolveImage(_ context.Context, r string) (string, error)            { return r, nil }
func (localVM) SnapshotExists(context.Context, string) (bool, error)                { return true, nil }
func (localVM) RemoveSnapshot(context.Context, string) error                        { return nil }
func (localVM) Reconcile(context.Context) error                                     { return nil }
func (localVM) PruneSnapshots(context.Context, func(string) bool) ([]string, error) { return nil, nil }
func (localVM) SnapshotSize(context.Context, string) (int64, error)                 { return 0, nil }
func (localVM) Create(_ context.Context, s vm.Spec) (vm.Machine, error)             { return &localM{s: s}, nil }

type localM struct{ s vm.Spec }

func (*localM) Inject(context.Context, *source.Tree) error { return nil }
func (*localM) Destroy(context.Context) error              { return nil }
func (m *localM) Commit(context.Context, bool) (string, error) {
	return "snap-" + m.s.Owner.StepKey, nil
}
func (m *localM) Run(ctx context.Context, out, _ io.Writer) (int, error) {
	try := 1
	for _, kv := range m.s.Env {
		if v, ok := strings.CutPrefix(kv, "HM_ATTEMPT="); ok {
			try, _ = strconv.Atoi(v)
		}
	}
	code := script(m.s.Cmd, try, func(l string) { io.WriteString(out, l+"\n") }, func() bool { return ctx.Err() != nil })
	if ctx.Err() != nil {
		return 0, vm.RunAborted(ctx, "fake")
	}
	return code, nil
}

// agent is the fake agent: it claims, starts, logs, heartbeats and finishes jobs.
type agent struct {
	st   store.Store
	id   string
	org  string
	mu   sync.Mutex
	runs map[string]int // step key → attempts run
}

func (a *agent) run(ctx context.Context, t *testing.T) {
	if _, err := a.st.UpsertAgent(ctx, store.Agent{ID: a.id, Name: a.id}, time.Now()); err != nil {
		t.Error(err)
		return
	}
	for ctx.Err() == nil {
		j, ok, err := a.st.ClaimJob(ctx, store.Claim{AgentID: a.id, OrgID: a.org, Now: time.Now(), LeaseTTL: time.Minute})
		if err != nil || !ok {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		a.mu.Lock()
		a.runs[j.StepKey]++
		a.mu.Unlock()
		go a.exec(ctx, j)
	}
}

func (a *agent) exec(ctx context.Context, j store.Job) {
	if _, err := a.st.StartJob(ctx, j.ID, j.Attempt, time.Now()); err != nil {
		return
	}
	var seq int64
	code := script(j.Command, j.PolicyAttempt, func(l string) {
		seq++
		a.st.AppendLogs(ctx, j.ID, j.Attempt, []store.LogChunk{{Seq: seq, Stream: store.StreamStdout, Content: l, TS: time.Now()}})
	}, func() bool {
		h, err := a.st.Heartbeat(ctx, j.ID, j.Attempt, time.Now(), time.Minute)
		return err != nil || h.State.Stopping()
	})
	f := store.Finish{ExitCode: code, Now: time.Now()}
	if code == -2 {
		f.ExitCode = 130
	}
	if code == 0 {
		f.Snapshot = "snap-" + j.StepKey
	}
	switch code {
	case exitInfra:
		f.ExitCode, f.ErrorCode, f.ErrorMessage = -1, "image_not_found", "no such image"
	case exitLost:
		f.ExitCode, f.ErrorCode, f.ErrorMessage = -1, store.CodeAgentLost, "agent lost: its lease lapsed"
	}
	a.st.FinishJob(context.WithoutCancel(ctx), j.ID, j.Attempt, f)
}

// byStep maps each step key to its event kinds (skip reasons and exit codes included).
func byStep(evs []events.Event) (map[string][]string, int) {
	keys := map[string]string{}
	out := map[string][]string{}
	exit := -100
	for _, e := range evs {
		if e.StepQueued != nil {
			keys[e.StepQueued.StepID] = e.StepQueued.Key
		}
		if e.BuildEnd != nil {
			exit = e.BuildEnd.ExitCode
		}
		id := e.StepID()
		if id == "" {
			continue
		}
		k := string(e.Kind)
		switch {
		case e.StepSkipped != nil:
			k += ":" + e.StepSkipped.Reason
		case e.StepEnd != nil:
			k += ":" + strconv.Itoa(e.StepEnd.ExitCode) + attemptTag(e.StepEnd.Attempt)
		case e.StepLog != nil:
			k += ":" + e.StepLog.Line + attemptTag(e.StepLog.Attempt)
		case e.StepRetry != nil:
			k += fmt.Sprintf(":%d/%d:%d", e.StepRetry.Attempt, e.StepRetry.Attempts, e.StepRetry.ExitCode)
		}
		out[keys[id]] = append(out[keys[id]], k)
	}
	return out, exit
}

// attemptTag marks an event of a retry: "@n" for attempt n > 1.
func attemptTag(n int) string {
	if n > 1 {
		return "@" + strconv.Itoa(n)
	}
	return ""
}

type fixture struct {
	st    store.Store
	build store.Build
	agent *agent
}

func newFixture(t *testing.T, ctx context.Context, steps []step, o Options, irTimeout time.Duration) *fixture {
	t.Helper()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	org, err := st.CreateOrg(ctx, "o", "O")
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.CreatePipeline(ctx, store.Pipeline{OrgID: org.ID, Slug: "ci", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st, agent: &agent{st: st, id: "agent-1", org: org.ID, runs: map[string]int{}}}
	f.build = f.newBuild(t, ctx, p.ID, steps, o)
	return f
}

// newBuild submits another build of the fixture's org to pipeline: the jobs of steps, and o
// as its hm_options.
func (f *fixture) newBuild(t *testing.T, ctx context.Context, pipeline string, steps []step, o Options) store.Build {
	t.Helper()
	var nj []store.NewJob
	for _, s := range steps {
		nj = append(nj, store.NewJob{StepKey: s.key, Command: s.cmd})
	}
	raw, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := f.st.CreateBuild(ctx, store.NewBuild{OrgID: f.agent.org, PipelineID: pipeline, IR: "{}", Jobs: nj,
		Options: raw, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) cfg(owner string, steps []step, o Options, irTimeout time.Duration) Config {
	return Config{Store: f.st, Owner: owner, Poll: 5 * time.Millisecond, LeaseTTL: 3 * time.Second, Backend: "fake",
		Load: func(store.Build) (*plan.Plan, scheduler.Options, error) {
			pl := buildPlan(steps, irTimeout)
			so := scheduler.Options{Parallelism: o.Parallelism, KeepGoing: o.KeepGoing,
				Timeout: time.Duration(o.TimeoutSeconds) * time.Second}
			so.Keys = make([]string, len(steps))
			for i, s := range steps {
				so.Keys[i] = o.CacheKeys[s.key]
			}
			return pl, so, nil
		}}
}

func (f *fixture) stored(t *testing.T, ctx context.Context) []events.Event {
	t.Helper()
	evs, err := f.st.ListEvents(ctx, f.build.ID, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for _, se := range evs {
		var e events.Event
		if err := e.UnmarshalJSON(se.Payload); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func hang(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func local(ctx context.Context, steps []step, o Options, irTimeout time.Duration) []events.Event {
	var mu sync.Mutex
	var evs []events.Event
	so := scheduler.Options{Parallelism: o.Parallelism, KeepGoing: o.KeepGoing,
		Timeout: time.Duration(o.TimeoutSeconds) * time.Second,
		Publish: func(e events.Event) { mu.Lock(); evs = append(evs, e); mu.Unlock() }}
	scheduler.Run(ctx, buildPlan(steps, irTimeout), localVM{}, so)
	return evs
}
