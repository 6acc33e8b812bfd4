// Package scheduler executes a plan on a VM backend with the semantics of spec/semantics.md:
// dependency-driven release, a parallelism bound, fail-fast or keep-going, transitive skips,
// continue_on_failure barriers, step and pipeline timeouts, cancellation, snapshots and the
// cache. It reports everything as build events.
package scheduler

import (
	"context"
	"errors"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// Status is a step's final status.
type Status string

const (
	Passed   Status = "passed"
	Failed   Status = "failed"
	TimedOut Status = "timed_out"
	Canceled Status = "canceled"
	Skipped  Status = "skipped"
	CacheHit Status = "cache_hit"
)

// ok reports whether dependents may start from / after a step with this status.
func (s Status) ok() bool { return s == Passed || s == CacheHit }

// BuildStatus is the outcome of a build, in precedence order TimedOut > Canceled > Failed >
// Passed.
type BuildStatus string

const (
	BuildPassed   BuildStatus = "passed"
	BuildFailed   BuildStatus = "failed"
	BuildCanceled BuildStatus = "canceled"
	BuildTimedOut BuildStatus = "timed_out"
)

// ExitCode is hm's process exit code for the build status.
func (b BuildStatus) ExitCode() int {
	switch b {
	case BuildFailed:
		return errs.ExitFailed
	case BuildCanceled:
		return errs.ExitCanceled
	case BuildTimedOut:
		return errs.ExitTimedOut
	}
	return errs.ExitPassed
}

// Exit codes reported in step_end for steps that did not exit by themselves.
const (
	ExitStepTimedOut = 124
	ExitStepCanceled = 130
	// ExitInfra marks a step that could not be run (daemon gone, image missing, ...).
	ExitInfra = -1
)

// ErrPipelineTimeout is the cancellation cause when the whole-build limit is reached.
var ErrPipelineTimeout = errors.New("pipeline timed out")

// Cache is the snapshot cache as the scheduler sees it. The registry implements it; a nil
// Cache disables caching.
type Cache interface {
	// Lookup returns the snapshot registered for q, if any and still present. An error of
	// class errs.ErrUnavailable fails the step without running it (the cache could not keep
	// its result: an unwritable state dir); any other error is a miss.
	Lookup(ctx context.Context, q CacheQuery) (CacheResult, error)
	// Register records snapshot for q and returns the snapshot to use: snapshot itself, or
	// the one another run registered first (the caller then removes its own).
	Register(ctx context.Context, q CacheQuery, snapshot string) (winner string, err error)
}

// CacheResult is a cache lookup's answer.
type CacheResult struct {
	Hit      bool
	Snapshot string // of a hit
	// Entry names the entry (hit) or the one the step will register (miss) as the user sees
	// it everywhere; "" when the cache has no ids.
	Entry string
	// Explain says, for a miss, why (shown to the user); it may be "".
	Explain string
}

// CacheQuery identifies a cache entry: the key scoped by backend and the chain's root image.
type CacheQuery struct {
	Step      int
	StepKey   string
	Key       string
	BaseImage string // resolved id of the chain root's image
}

// Options configure one build.
type Options struct {
	RunID       string
	Parallelism int // <= 0: 1 when 0 was asked for is handled by the caller; here <=0 means NumCPU
	KeepGoing   bool
	NoCache     bool
	// NoRetry runs every step once whatever its retry policy: for an executor that retries
	// by other means (the server re-queues a job whose agent was lost) and whose machines
	// cannot be run twice.
	NoRetry bool
	// Timeout overrides the plan's pipeline timeout when > 0.
	Timeout time.Duration
	// ExtraEnv ("K=V") is applied after the node env (-e flags).
	ExtraEnv []string
	// Secrets are the build's secrets by name. A step sees those it names (plan.Step.Secrets)
	// as environment variables, after ExtraEnv; every value is masked (package secret) in
	// every event published, its output included.
	Secrets map[string]string
	// MapImage substitutes image references (--map-image FROM=TO).
	MapImage map[string]string
	// Keys are the steps' cache keys, index-aligned with the plan; "" = not cached.
	Keys []string
	// Warnings are logged ("hm: warning: ...") at the start of a step that runs, index-aligned
	// with the plan: what the keys could not use (an on_change path matching nothing). A hit
	// logs nothing: its events are step_queued, step_cache_hit, step_end (spec/semantics.md).
	Warnings  [][]string
	Cache     Cache
	Workspace *source.Tree
	// ArtifactsDir is the build's artifacts directory: a step's `artifacts` go to
	// ArtifactsDir/StepDir(key)/, the manifest to ArtifactsDir/manifest.json (artifacts.go).
	// "": not collected (a step naming some warns).
	ArtifactsDir string
	// CacheScope names whose persistent cache_dirs the steps get (vm.CacheDir): the org and
	// pipeline of the build.
	CacheScope vm.CacheDir
	// Publish receives every event; it must not block (events.Queue.Publish).
	Publish func(events.Event)
}

// Result is the outcome of a build.
type Result struct {
	Status   BuildStatus
	Steps    []Status
	Duration time.Duration
	// Err is the infrastructure error (daemon gone, image missing, ...) of the first step that
	// could not run, if any. It keeps the backend's class and fields so the front end can say
	// what to do; Status already counts that step a failure.
	Err error
}

// Run executes pl on backend and returns when every step has ended and every ephemeral
// snapshot has been removed. ctx canceled means the user canceled the build (exit 130).
func Run(ctx context.Context, pl *plan.Plan, backend vm.Backend, opts Options) Result {
	r := newRun(pl, backend, opts)
	return r.run(ctx)
}

type stepState struct {
	id        string
	status    Status
	done      bool
	queued    bool
	waiting   int    // predecessors not yet ended
	snapshot  string // committed or cached snapshot, for children
	ephemeral bool
	liveKids  int // builds_in children not yet ended, for early ephemeral removal
	baseImage string
	cancel    context.CancelFunc
	// handoff is the passed step's machine its one builds_in child continues on
	// (vm.Continuer), until the child's worker takes it or the child is skipped.
	handoff vm.Machine
	// withSource: snapshot has the workspace overlaid already (vm.Reinjector); children
	// inject nothing.
	withSource bool
}

type completion struct {
	step     int
	status   Status
	snapshot string
	eph      bool
	base     string
	err      error      // the infrastructure error that failed the step
	handoff  vm.Machine // see stepState.handoff
	src      bool       // see stepState.withSource
	// slot: the step held a parallelism slot, which the loop frees once it has recorded the
	// completion. Freed by the worker instead, a step waiting for the slot could start in
	// the moment between a failure and the loop's fail-fast halt.
	slot bool
}

type run struct {
	pl      *plan.Plan
	backend vm.Backend
	opts    Options
	steps   []stepState
	gate    *slotGate     // the parallelism slots, in plan order (slots.go)
	prep    chan struct{} // steps preparing a machine while they wait for a slot (prepare.go)
	done    chan completion
	halted  bool // fail-fast triggered: start only protected steps
	// protected steps may start after fail-fast: behind a continue_on_failure barrier, or
	// only after protected steps.
	protected []bool
	nDone     int
	infraErr  error // the first completion's err
	images    imageCache
	pid       int
	mask      *secret.Masker // nil: no secrets
	wg        sync.WaitGroup // ephemeral snapshot removals
	manifest  manifest
	// toMake counts the steps that may still make a machine; made[i] is set once step i
	// no longer counts (madeLast). At zero the backend is told (vm.Drainer).
	toMake atomic.Int64
	made   []atomic.Bool
	// sequential: no two steps can run at once (vm.Spec.Sequential).
	sequential bool
}

// onePath reports whether pl's steps are totally ordered by its edges: a topological order
// in which every step waits for the one before it (Kahn's algorithm never has two steps
// ready at once), so that no two of them can ever run at the same time.
func onePath(pl *plan.Plan) bool {
	waiting := make([]int, len(pl.Steps))
	var ready []int
	for i := range pl.Steps {
		if waiting[i] = len(pl.Steps[i].Preds); waiting[i] == 0 {
			ready = append(ready, i)
		}
	}
	for len(ready) == 1 {
		i := ready[0]
		ready = ready[:0]
		for _, s := range pl.Steps[i].Succs {
			if waiting[s]--; waiting[s] == 0 {
				ready = append(ready, s)
			}
		}
	}
	return len(ready) == 0
}

// madeLast records that step i makes no more machines: it has made the one of its last
// attempt, or it ended. Called from its worker and from the loop; counts once.
func (r *run) madeLast(i int) {
	if r.made[i].CompareAndSwap(false, true) && r.toMake.Add(-1) == 0 {
		if d, ok := r.backend.(vm.Drainer); ok {
			d.Drain(r.opts.RunID)
		}
	}
}

func newRun(pl *plan.Plan, backend vm.Backend, opts Options) *run {
	par := opts.Parallelism
	if par <= 0 {
		par = runtime.NumCPU()
	}
	if opts.RunID == "" {
		opts.RunID = uuid.NewString()
	}
	if opts.Publish == nil {
		opts.Publish = func(events.Event) {}
	}
	mask := secret.NewMasker(slices.Collect(maps.Values(opts.Secrets))...)
	if mask != nil {
		publish := opts.Publish
		opts.Publish = func(e events.Event) { publish(mask.Event(e)) }
	}
	r := &run{
		pl: pl, backend: backend, opts: opts, mask: mask,
		steps: make([]stepState, len(pl.Steps)),
		made:  make([]atomic.Bool, len(pl.Steps)),
		gate:  newSlotGate(par),
		prep:  make(chan struct{}, par),
		done:  make(chan completion, len(pl.Steps)),
		pid:   osPID(),
	}
	r.images.m = map[string]*imageEntry{}
	r.sequential = par == 1 || onePath(pl)
	r.toMake.Store(int64(len(pl.Steps)))
	for i := range r.steps {
		r.steps[i].id = uuid.NewString()
		r.steps[i].waiting = len(pl.Steps[i].Preds)
		r.steps[i].liveKids = len(pl.Steps[i].Children)
	}
	r.protected = make([]bool, len(pl.Steps))
	for _, i := range pl.Order {
		ps := &pl.Steps[i]
		p := ps.BehindBarrier || len(ps.Preds) > 0
		for _, pr := range ps.Preds {
			p = p && (ps.BehindBarrier || r.protected[pr.Step])
		}
		r.protected[i] = p
	}
	return r
}

func (r *run) run(userCtx context.Context) Result {
	start := time.Now()
	r.opts.Publish(events.Event{Kind: events.KindBuildStart, BuildStart: &events.BuildStart{
		RunID:     r.opts.RunID,
		Plan:      events.Plan{StepCount: len(r.pl.Steps), ChainCount: len(r.pl.Chains), DefaultRunner: r.backend.Name()},
		StartedAt: start.UTC(),
	}})

	timeout := r.pl.Timeout
	if r.opts.Timeout > 0 {
		timeout = r.opts.Timeout
	}
	buildCtx := userCtx
	if timeout > 0 {
		var cancel context.CancelFunc
		buildCtx, cancel = context.WithTimeoutCause(userCtx, timeout, ErrPipelineTimeout)
		defer cancel()
	}

	for i := range r.steps {
		if r.steps[i].waiting == 0 {
			r.release(buildCtx, i)
		}
	}
	buildDone := buildCtx.Done()
	for r.nDone < len(r.steps) {
		select {
		case c := <-r.done:
			r.complete(buildCtx, c)
			if c.slot {
				r.gate.release()
			}
		case <-buildDone:
			// Pipeline timeout or user cancel: stop everything, barriers included.
			buildDone = nil
			r.halted = true
			for i := range r.steps {
				if r.steps[i].cancel != nil {
					r.steps[i].cancel()
				}
			}
		}
	}
	for i := range r.steps {
		r.dropHandoff(i) // none is left normally: every child took or dropped its parent's
	}
	r.wg.Wait()
	r.images.wg.Wait()

	res := Result{Steps: make([]Status, len(r.steps)), Duration: time.Since(start), Err: r.infraErr}
	failed := false
	for i, s := range r.steps {
		res.Steps[i] = s.status
		if s.status == Failed || s.status == TimedOut {
			failed = true
		}
	}
	switch {
	case errors.Is(context.Cause(buildCtx), ErrPipelineTimeout):
		res.Status = BuildTimedOut
	case userCtx.Err() != nil:
		res.Status = BuildCanceled
	case failed:
		res.Status = BuildFailed
	default:
		res.Status = BuildPassed
	}
	r.opts.Publish(events.Event{Kind: events.KindBuildEnd, BuildEnd: &events.BuildEnd{
		ExitCode: res.Status.ExitCode(), DurationMS: res.Duration.Milliseconds(),
	}})
	return res
}

// release is called once all predecessors of step i have ended: skip it or start its worker.
func (r *run) release(buildCtx context.Context, i int) {
	st := &r.steps[i]
	ps := &r.pl.Steps[i]
	for _, pr := range ps.Preds {
		if pr.Tolerant {
			continue
		}
		if !r.steps[pr.Step].status.ok() {
			r.skip(buildCtx, i, events.SkipDependencyFailed)
			return
		}
	}
	if buildCtx.Err() != nil || (r.halted && !r.protected[i]) {
		r.skip(buildCtx, i, events.SkipCanceled)
		return
	}
	r.queue(i)
	ctx, cancel := context.WithCancel(buildCtx)
	st.cancel = cancel
	var h vm.Machine
	if ps.Parent >= 0 {
		h, r.steps[ps.Parent].handoff = r.steps[ps.Parent].handoff, nil
	}
	r.gate.expect(i) // before its worker runs: its place among the steps contending for a slot
	go r.work(ctx, i, h)
}

func (r *run) queue(i int) {
	st := &r.steps[i]
	if st.queued {
		return
	}
	st.queued = true
	ps := &r.pl.Steps[i]
	var parent *string
	if ps.Parent >= 0 {
		k := r.pl.Steps[ps.Parent].Key
		parent = &k
	}
	r.opts.Publish(events.Event{Kind: events.KindStepQueued, StepQueued: &events.StepQueued{
		StepID: st.id, Key: ps.Key, ChainIdx: ps.ChainIdx, ParentKey: parent, DisplayName: ps.DisplayName,
	}})
}

// skip ends step i without running it, and releases its dependents.
func (r *run) skip(buildCtx context.Context, i int, reason string) {
	r.queue(i)
	st := &r.steps[i]
	st.status = Skipped
	st.done = true
	if p := r.pl.Steps[i].Parent; p >= 0 {
		r.dropHandoff(p)
	}
	r.nDone++
	r.madeLast(i)
	r.opts.Publish(events.Event{Kind: events.KindStepSkipped, StepSkipped: &events.StepSkipped{
		StepID: st.id, Reason: reason, TS: time.Now().UTC(),
	}})
	r.ended(buildCtx, i)
}

// ended propagates the end of step i to its successors and its parent's ephemeral snapshot.
func (r *run) ended(buildCtx context.Context, i int) {
	ps := &r.pl.Steps[i]
	if ps.Parent >= 0 {
		parent := &r.steps[ps.Parent]
		parent.liveKids--
		if parent.liveKids == 0 && parent.ephemeral && parent.snapshot != "" {
			r.removeSnapshot(parent.snapshot)
			parent.snapshot = ""
		}
	}
	for _, s := range ps.Succs {
		r.steps[s].waiting--
		if r.steps[s].waiting == 0 {
			r.release(buildCtx, s)
		}
	}
}

// complete records a worker's result.
func (r *run) complete(buildCtx context.Context, c completion) {
	st := &r.steps[c.step]
	st.status, st.snapshot, st.ephemeral, st.baseImage = c.status, c.snapshot, c.eph, c.base
	st.handoff, st.withSource = c.handoff, c.src
	st.done = true
	r.nDone++
	r.madeLast(c.step)
	st.cancel()
	if c.err != nil && r.infraErr == nil {
		r.infraErr = c.err
	}
	if (c.status == Failed || c.status == TimedOut) && !r.opts.KeepGoing && !r.halted {
		r.halted = true
		for j := range r.steps {
			if !r.steps[j].done && r.steps[j].cancel != nil && !r.protected[j] {
				r.steps[j].cancel()
			}
		}
	}
	if st.ephemeral && st.liveKids == 0 && st.snapshot != "" {
		r.removeSnapshot(st.snapshot)
		st.snapshot = ""
	}
	r.ended(buildCtx, c.step)
}

// dropHandoff destroys step i's machine kept for a child that will not take it.
func (r *run) dropHandoff(i int) {
	if m := r.steps[i].handoff; m != nil {
		r.steps[i].handoff = nil
		r.destroyLater(m)
	}
}

// destroyLater destroys a machine off the caller's path; Run waits for it.
func (r *run) destroyLater(m vm.Machine) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_ = m.Destroy(ctx)
	}()
}

func (r *run) removeSnapshot(id string) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// Best effort: reconcile at the next start removes what this could not.
		_ = r.backend.RemoveSnapshot(ctx, id)
	}()
}
