package scheduler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/vm"
)

// cleanupTimeout bounds how long destroying a machine may take after the step ended.
const cleanupTimeout = 2 * time.Minute

func osPID() int { return os.Getpid() }

// work runs step i in its own goroutine and reports a completion. Events of the step are
// published from here, in order.
// h is the parent's machine to continue on (vm.Continuer), or nil; the worker owns it.
func (r *run) work(ctx context.Context, i int, h vm.Machine) {
	c := r.execute(ctx, i, &h)
	r.gate.leave(i) // a step that ended without a slot no longer holds back later ones
	if h != nil {   // not continued on: a cache hit, a step that did not start
		r.destroyLater(h)
	}
	r.done <- c
}

func (r *run) execute(ctx context.Context, i int, handoff *vm.Machine) (out completion) {
	ps := &r.pl.Steps[i]
	st := &r.steps[i] // only id is read here; the main loop owns the rest
	c := completion{step: i}
	start := time.Now()

	// The base: the root image (resolved), or the parent's snapshot. The parent has ended
	// successfully before this step was released, so its fields are stable.
	var spec vm.Spec
	var imageRef *string
	ws := r.opts.Workspace // injected into the step's machines
	if ps.Parent >= 0 {
		parent := &r.steps[ps.Parent]
		spec.Parent = parent.snapshot
		c.base = parent.baseImage
		if parent.withSource {
			ws = nil
		}
	} else {
		ref := ps.Image
		if to, ok := r.opts.MapImage[ref]; ok {
			ref = to
		}
		imageRef = &ref
		id, err := r.images.resolve(ctx, r.backend, ref)
		if err != nil {
			if ctx.Err() != nil {
				return r.notStarted(i, c)
			}
			r.start(st.id, imageRef)
			return r.fail(i, 1, c, start, classify(ctx, ctx), err)
		}
		spec.Image = id
		c.base = id
	}

	key := ""
	if i < len(r.opts.Keys) {
		key = r.opts.Keys[i]
	}
	cached := key != "" && r.opts.Cache != nil && !r.opts.NoCache
	q := CacheQuery{Step: i, StepKey: ps.Key, Key: key, BaseImage: c.base}
	missNote := "" // why a cached step runs; logged once it has started
	if key != "" && r.opts.NoCache {
		missNote = "--no-cache"
	}
	if cached {
		res, err := r.opts.Cache.Lookup(ctx, q)
		if err == nil && res.Hit {
			hit := &events.StepCacheHit{StepID: st.id, Key: key, Tag: res.Snapshot}
			if res.Entry != "" {
				hit.Entry = &res.Entry
			}
			r.opts.Publish(events.Event{Kind: events.KindStepCacheHit, StepCacheHit: hit})
			snap := res.Snapshot
			c.status, c.snapshot = CacheHit, snap
			// A hit's artifacts come from the cached snapshot, as if the step had run.
			if collect, why := r.wantsArtifacts(i); collect {
				if !r.waitSlot(ctx, i) {
					return r.fail(i, 1, c, start, endCanceled, ctx.Err())
				}
				c.slot = true // the loop frees it, a failed copy recorded: see completion.slot
				if err := r.collect(ctx, i, 1, snap); err != nil {
					return r.fail(i, 1, c, start, classify(ctx, ctx), err)
				}
			} else if why != "" {
				r.log(st.id, 1, events.Stderr, "hm: warning: "+why)
			}
			r.end(st.id, 1, 0, start, &snap)
			return c
		}
		missNote = res.Explain
		if errors.Is(err, errs.ErrUnavailable) {
			// The cache cannot take what the step would make (an unwritable state dir): the
			// step must not run. Any other lookup failure only costs the hit.
			r.start(st.id, imageRef)
			return r.fail(i, 1, c, start, classify(ctx, ctx), err)
		}
		if err != nil {
			missNote = fmt.Sprintf("cache lookup failed: %v", err)
		}
	}

	spec.Cmd = ps.Cmd
	spec.Env = append(append(append([]string{}, vm.BaseEnv...), ps.Env...), r.opts.ExtraEnv...)
	var missing error
	for _, name := range ps.Secrets {
		v, ok := r.opts.Secrets[name]
		if !ok { // the front end refuses this before the build; never run without it
			missing = fmt.Errorf("%w: secret %s was not given", errs.ErrInvalid, name)
			break
		}
		spec.Env = append(spec.Env, name+"="+v)
	}
	spec.Owner = vm.Owner{RunID: r.opts.RunID, StepKey: ps.Key, PID: r.pid}
	spec.Sequential = r.sequential
	// One builds_in child: it may continue on this machine rather than on a snapshot, unless
	// it may be retried: each attempt starts afresh from this step's snapshot.
	spec.Continuable = len(ps.Children) == 1 && !retries(r.pl.Steps[ps.Children[0]].Retry)
	// A machine's cache directories are mounted when it is made: a step with its own, or
	// a child with others, runs on a machine of its own.
	spec.CacheDirs = r.cacheDirs(ps)
	if spec.Continuable && (len(ps.CacheDirs) > 0 || len(r.pl.Steps[ps.Children[0]].CacheDirs) > 0) {
		spec.Continuable = false
	}

	// Wait for a slot, preparing the machine meanwhile where the backend can (prepare.go);
	// fail-fast or cancel may end the wait: the step never started.
	var pre vm.Machine // prepared for attempt 1, which takes it
	var ok bool
	if missing == nil && *handoff == nil {
		pre, ok = r.slotPreparing(ctx, i, spec, ws)
	} else {
		ok = r.waitSlot(ctx, i)
	}
	if !ok {
		return r.notStarted(i, c)
	}
	defer func() {
		if pre != nil {
			r.destroyLater(pre)
		}
	}()
	defer func() { out.slot = true }() // the loop frees it: see completion.slot
	if ctx.Err() != nil {
		return r.notStarted(i, c)
	}

	start = time.Now()
	r.start(st.id, imageRef)
	if missNote != "" {
		r.log(st.id, 1, events.Stderr, "hm: cache miss: "+missNote)
	}
	if i < len(r.opts.Warnings) {
		for _, w := range r.opts.Warnings[i] {
			r.log(st.id, 1, events.Stderr, "hm: warning: "+w)
		}
	}
	if _, why := r.wantsArtifacts(i); why != "" {
		r.log(st.id, 1, events.Stderr, "hm: warning: "+why)
	}
	if missing != nil {
		return r.fail(i, 1, c, start, endInfra, missing)
	}

	// Attempts run one after another in this worker, each on a fresh machine from the same
	// base and source; a failed one commits nothing. The step ends with the last.
	for n := 1; ; n++ {
		o := r.attempt(ctx, i, n, spec, ws, handoff, &pre, cached, q)
		switch o.end {
		case endPassed:
			c.status, c.snapshot, c.eph, c.handoff, c.src = Passed, o.snapshot, o.eph, o.handoff, o.src
			if collect, _ := r.wantsArtifacts(i); collect {
				if err := r.collect(ctx, i, n, o.snapshot); err != nil {
					return r.fail(i, n, c, start, classify(ctx, ctx), err)
				}
			}
			if o.register {
				r.register(context.WithoutCancel(ctx), st.id, n, q, &o)
				c.snapshot, c.eph = o.snapshot, o.eph
			}
			var snapPtr *string
			if c.snapshot != "" {
				s := c.snapshot
				snapPtr = &s
			}
			r.end(st.id, n, 0, start, snapPtr)
			return c
		case endExit, endInfra:
			code, msg := o.code, fmt.Sprintf("step '%s' failed with exit code %d", ps.Key, o.code)
			if o.end == endInfra {
				code, msg = ExitInfra, fmt.Sprintf("step '%s' could not run: %v", ps.Key, o.err)
			}
			// A continued machine is gone with the failed attempt: without the parent's
			// snapshot there is nothing to start the next one from.
			fresh := ps.Parent < 0 || spec.Parent != ""
			final := o.end == endInfra && errors.Is(o.err, ErrNoRetry)
			if again, most := retryAgain(ps.Retry, n, code); again && fresh && !final && !r.opts.NoRetry && ctx.Err() == nil {
				if o.end == endInfra {
					r.log(st.id, n, events.Stderr, "hm: "+msg)
				}
				r.opts.Publish(events.Event{Kind: events.KindStepRetry, StepRetry: &events.StepRetry{
					StepID: st.id, Attempt: n, Attempts: most, ExitCode: code, Message: msg, TS: time.Now().UTC(),
				}})
				continue
			}
			if o.end == endInfra {
				return r.fail(i, n, c, start, endInfra, o.err)
			}
			c.status = Failed
			r.end(st.id, n, code, start, nil)
			r.chainFailed(i, code, msg)
			return c
		default:
			return r.fail(i, n, c, start, o.end, o.err)
		}
	}
}

var errStepTimeout = errors.New("step timed out")

// ErrNoRetry marks an infrastructure failure of a machine's Run that its executor has
// retried already by its own means (the server's requeues of a lost agent's step): the step's
// retry policy does not run it again.
var ErrNoRetry = errors.New("retried by the executor already")

// create makes the step's machine: a continuation of the parent's machine when there is one
// (taking it from *handoff), else a fresh one. A parent that also committed a snapshot is
// the fallback when continuing fails.
func (r *run) create(ctx context.Context, spec vm.Spec, handoff *vm.Machine) (vm.Machine, error) {
	if h := *handoff; h != nil {
		if m, err := h.(vm.Continuer).Continue(ctx, spec); err == nil {
			*handoff = nil
			return m, nil
		} else if spec.Parent == "" {
			return nil, fmt.Errorf("continue on the parent's machine: %w", err)
		}
	}
	return r.backend.Create(ctx, spec)
}

// fail ends a step whose execution failed without an exit code of its own (attempt n): a
// timeout, a cancel, or an infrastructure error.
func (r *run) fail(i, n int, c completion, start time.Time, how attemptEnd, err error) completion {
	ps := &r.pl.Steps[i]
	id := r.steps[i].id
	switch how {
	case endTimedOut:
		c.status = TimedOut
		r.end(id, n, ExitStepTimedOut, start, nil)
		r.chainFailed(i, ExitStepTimedOut, fmt.Sprintf("step '%s' timed out after %s", ps.Key, fmtSeconds(ps.Timeout)))
	case endCanceled:
		c.status = Canceled
		r.end(id, n, ExitStepCanceled, start, nil)
	default:
		c.status, c.err = Failed, err
		msg := fmt.Sprintf("step '%s' could not run: %v", ps.Key, err)
		r.log(id, n, events.Stderr, "hm: "+msg)
		r.end(id, n, ExitInfra, start, nil)
		r.chainFailed(i, ExitInfra, msg)
	}
	return c
}

// notStarted ends a step that was canceled before it started.
func (r *run) notStarted(i int, c completion) completion {
	c.status = Skipped
	r.opts.Publish(events.Event{Kind: events.KindStepSkipped, StepSkipped: &events.StepSkipped{
		StepID: r.steps[i].id, Reason: events.SkipCanceled, TS: time.Now().UTC(),
	}})
	return c
}

func (r *run) start(id string, image *string) {
	r.opts.Publish(events.Event{Kind: events.KindStepStart, StepStart: &events.StepStart{
		StepID: id, Runner: r.backend.Name(), Image: image,
	}})
}

func fmtSeconds(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return d.String()
}

// log publishes a line of attempt n.
func (r *run) log(id string, n int, stream, line string) {
	r.opts.Publish(events.Event{Kind: events.KindStepLog, StepLog: &events.StepLog{
		StepID: id, Stream: stream, Line: line, TS: time.Now().UTC(), Attempt: n,
	}})
}

// end publishes the step's end by attempt n; its duration spans every attempt.
func (r *run) end(id string, n, code int, start time.Time, snap *string) {
	r.opts.Publish(events.Event{Kind: events.KindStepEnd, StepEnd: &events.StepEnd{
		StepID: id, ExitCode: code, DurationMS: time.Since(start).Milliseconds(), Snapshot: snap, Attempt: n,
	}})
}

func (r *run) chainFailed(i, code int, msg string) {
	ps := &r.pl.Steps[i]
	r.opts.Publish(events.Event{Kind: events.KindChainFailed, ChainFailed: &events.ChainFailed{
		ChainIdx: ps.Chain, FailedStepID: r.steps[i].id, FailedStepKey: ps.Key,
		ExitCode: code, Message: msg, TS: time.Now().UTC(),
	}})
}

func (r *run) removeSnapshotNow(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	_ = r.backend.RemoveSnapshot(ctx, id)
}

// imageCache resolves each image reference once per build. A resolution belongs to no one
// step: it runs in its own goroutine, each step waits for it on its own ctx, and it is only
// canceled when every step waiting for it has gone (fail-fast, cancel). A result that is a
// context error is never kept: the next step to ask resolves again.
type imageCache struct {
	mu sync.Mutex
	m  map[string]*imageEntry
	wg sync.WaitGroup // resolutions still running; Run waits for them before it returns
}

type imageEntry struct {
	done    chan struct{} // closed when id and err are set
	id      string
	err     error
	waiters int
	cancel  context.CancelFunc
}

func (c *imageCache) resolve(ctx context.Context, b vm.Backend, ref string) (string, error) {
	c.mu.Lock()
	e, ok := c.m[ref]
	if !ok {
		// Detached from the step's cancellation, not from its values.
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		e = &imageEntry{done: make(chan struct{}), cancel: cancel}
		c.m[ref] = e
		c.wg.Add(1)
		go c.run(rctx, e, b, ref)
	}
	e.waiters++
	c.mu.Unlock()

	select {
	case <-e.done:
		c.mu.Lock()
		e.waiters--
		c.mu.Unlock()
		return e.id, e.err
	case <-ctx.Done():
		c.mu.Lock()
		e.waiters--
		if e.waiters == 0 {
			// Nobody wants it any more; forget it so a later step starts afresh instead
			// of joining a resolution that is being canceled.
			e.cancel()
			if c.m[ref] == e {
				delete(c.m, ref)
			}
		}
		c.mu.Unlock()
		return "", ctx.Err()
	}
}

func (c *imageCache) run(ctx context.Context, e *imageEntry, b vm.Backend, ref string) {
	defer c.wg.Done()
	defer e.cancel()
	id, err := b.ResolveImage(ctx, ref)
	if err != nil && !strings.Contains(err.Error(), ref) {
		err = fmt.Errorf("image %q: %w", ref, err)
	}
	c.mu.Lock()
	e.id, e.err = id, err
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if c.m[ref] == e {
			delete(c.m, ref)
		}
	}
	c.mu.Unlock()
	close(e.done)
}

// cacheDirs are the step's cache_dirs in the build's scope.
func (r *run) cacheDirs(ps *plan.Step) []vm.CacheDir {
	var out []vm.CacheDir
	for _, p := range ps.CacheDirs {
		d := r.opts.CacheScope
		d.Path = p
		out = append(out, d)
	}
	return out
}
