package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// attemptEnd is how one attempt of a step ended.
type attemptEnd int

const (
	endPassed   attemptEnd = iota
	endExit                // the command exited non-zero
	endInfra               // the step could not run (or its result could not be kept)
	endTimedOut            // the step's own timeout
	endCanceled            // fail-fast, the pipeline timeout, the user
)

// outcome is the result of one attempt.
type outcome struct {
	end      attemptEnd
	code     int   // endExit
	err      error // endInfra
	snapshot string
	eph      bool
	handoff  vm.Machine // the machine a passed step's one child continues on
	src      bool       // snapshot has the workspace overlaid (vm.Reinjector)
	// register: snapshot is to be registered as the step's cache entry once its artifacts
	// are copied out (register); eph until then.
	register bool
}

// register records o's snapshot as the cache entry of q, the step's (id) attempt n. When
// another run registered the key first its snapshot is used and o's removed; when the
// registry fails the snapshot is only this run's (ephemeral, removed at the end).
func (r *run) register(ctx context.Context, id string, n int, q CacheQuery, o *outcome) {
	snap := o.snapshot
	winner, err := r.opts.Cache.Register(ctx, q, snap)
	switch {
	case err != nil:
		r.log(id, n, events.Stderr, fmt.Sprintf("hm: could not register the cache entry: %v", err))
		o.eph = true // still usable by children in this run; removed at the end
	case winner != snap:
		// Another run registered the same key first: use its snapshot, drop ours.
		r.removeSnapshotNow(ctx, snap)
		o.snapshot, o.eph = winner, false
	default:
		o.eph = false
	}
}

// classify names the end of an attempt that failed with an error: runCtx is the context the
// command ran under (the step timeout's cause lives there), ctx the step's.
func classify(ctx, runCtx context.Context) attemptEnd {
	switch {
	case errors.Is(context.Cause(runCtx), errStepTimeout):
		return endTimedOut
	case ctx.Err() != nil:
		return endCanceled
	}
	return endInfra
}

// attemptSpec is spec as attempt n runs it: HM_ATTEMPT tells the command which attempt it
// is, from 1.
func attemptSpec(spec vm.Spec, n int) vm.Spec {
	spec.Env = append(slices.Clip(spec.Env), "HM_ATTEMPT="+strconv.Itoa(n))
	return spec
}

// retries reports whether a policy may run a step more than once for its own failures.
func retries(p *ir.Retry) bool { return p != nil && p.Limit > 0 }

// retryAgain decides, after attempt n failed with code (ExitInfra: it could not run),
// whether the step runs again, and the most attempts it may have. A policy retries the codes
// it lists (any code when it lists none) up to its limit; an infrastructure error is retried
// once by default, up to the limit when the policy lists -1 or no codes. A timeout or a
// cancel never comes here.
func retryAgain(p *ir.Retry, n, code int) (again bool, most int) {
	limit, on := 0, []int(nil)
	if p != nil {
		limit, on = p.Limit, p.On
	}
	most = 1 + max(limit, 1)
	budget := 0
	if len(on) == 0 || slices.Contains(on, code) {
		budget = limit
	}
	if code == ExitInfra {
		budget = max(budget, 1)
	}
	return n <= budget, most
}

// attempt runs attempt n of step i on a machine of its own: created from spec (or continued
// from *handoff, which it then owns), given the source, run, and on success committed as the
// step needs. A failed attempt commits nothing and leaves no machine behind.
// ws is the workspace to inject, nil when the parent's snapshot has it already.
func (r *run) attempt(ctx context.Context, i, n int, spec vm.Spec, ws *source.Tree, handoff, pre *vm.Machine, cached bool, q CacheQuery) outcome {
	collect, _ := r.wantsArtifacts(i)
	ps := &r.pl.Steps[i]
	id := r.steps[i].id
	spec = attemptSpec(spec, n)
	cleanup := context.WithoutCancel(ctx)
	failed := func(runCtx context.Context, err error) outcome {
		return outcome{end: classify(ctx, runCtx), err: err}
	}
	// A machine prepared while the step waited for its slot (prepare.go) has its workspace.
	m, injected := *pre, *pre != nil
	*pre = nil
	_, most := retryAgain(ps.Retry, n, 0)
	final := n >= most || !retries(ps.Retry) // an infrastructure failure's one retry is not foreseen (vm.Drainer)
	if m == nil {
		// The run's last machine when every other step has made its last one already.
		spec.Last = final && !r.made[i].Load() && r.toMake.Load() == 1
		var err error
		if m, err = r.create(ctx, spec, handoff); err != nil {
			return failed(ctx, err)
		}
	}
	if final {
		r.madeLast(i)
	}
	keep := false // handed on to the child
	defer func() {
		// Off the step's slot: nothing of the machine is needed any more, and Run waits
		// for every destroyLater before it returns.
		if !keep {
			r.destroyLater(m)
		}
	}()
	if ws != nil && !injected {
		if err := m.Inject(ctx, ws); err != nil {
			return failed(ctx, err)
		}
	}

	runCtx := ctx
	if ps.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, ps.Timeout, errStepTimeout)
		defer cancel()
	}
	// Secrets are masked in the byte stream, before it is cut into lines: a value split
	// across writes or lines is still whole there.
	stdoutL := events.NewLineWriter(func(l string) { r.log(id, n, events.Stdout, l) })
	stderrL := events.NewLineWriter(func(l string) { r.log(id, n, events.Stderr, l) })
	stdout, stderr := r.mask.Writer(stdoutL), r.mask.Writer(stderrL)
	code, err := m.Run(runCtx, stdout, stderr)
	_, _ = stdout.Flush(), stderr.Flush() // a LineWriter never fails
	stdoutL.Flush()
	stderrL.Flush()
	if err != nil {
		return failed(runCtx, err)
	}
	if code != 0 {
		return outcome{end: endExit, code: code}
	}

	// Commit only what is needed: a cached snapshot, or an ephemeral one for children; a
	// child that continues on this machine needs none.
	_, continuable := m.(vm.Continuer)
	continuable = continuable && spec.Continuable
	// Artifacts are read from a snapshot, never from the machine (see artifacts.go).
	needEphemeral := len(ps.Children) > 0 && !continuable || collect
	o := outcome{end: endPassed}
	// An ephemeral snapshot for several children, none of which it is cached for nor read
	// for artifacts: overlay the workspace once here instead of once per child. A failed
	// overlay costs nothing but that: the children inject as usual (idempotent).
	if ri, ok := m.(vm.Reinjector); ok && !cached && !collect && len(ps.Children) > 1 && r.opts.Workspace != nil {
		o.src = ri.Reinject(ctx, r.opts.Workspace) == nil
	}
	if cached || needEphemeral {
		snap, err := m.Commit(ctx, !cached)
		if err != nil {
			return failed(ctx, fmt.Errorf("commit: %w", err))
		}
		o.snapshot, o.eph = snap, !cached
		switch {
		case cached && collect:
			// Registered once its artifacts are out (execute): a step whose copy fails
			// fails, and a failed step leaves no cache entry. Until then it is the run's.
			o.register, o.eph = true, true
		case cached:
			r.register(cleanup, id, n, q, &o)
		}
	}
	if continuable {
		o.handoff, keep = m, true
	}
	return o
}
