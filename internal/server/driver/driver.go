// Package driver runs a stored build: it drives the build's jobs in the store with the
// unchanged local scheduler (internal/scheduler), so a remote build has exactly the semantics
// of a local one (spec/semantics.md). It is not the HTTP layer, the agent or a second
// scheduler.
//
// # How
//
// scheduler.Run executes the build's plan over a vm.Backend whose machines are store jobs
// (backend.go). Create releases the job (pending → scheduled: claimable by an agent); Run
// waits until the store says an agent finished it (woken by the store's wake-ups,
// store.Watcher, on the job's transitions and log chunks; polling at Config.Poll only as the
// fallback), streaming its stored log chunks into the
// step's stdout and stderr in seq order, and returns its exit code; Commit returns the
// snapshot the agent reported; Destroy is a no-op; RemoveSnapshot (an ephemeral snapshot no
// child needs any more) queues its removal on the agent holding it (store.SnapshotRemovals),
// which the agent learns from its alive call and acknowledges once done. A step the scheduler cancels (fail-fast,
// a step or pipeline timeout, the build's cancel) is asked to stop with TimeOutJob or
// CancelJob, and Run returns once the agent acknowledged (FinishJob) or the lease lapsed
// (the reaper); a job not yet claimed is skipped. Every event the scheduler publishes goes to
// the store (AppendEventsFenced) in publish order from one writer goroutine; the scheduler's
// own step ids are rewritten to the job ids, and the run id is the build id. Cache lookups go
// to the store's cache registry (cache.go): a hit is a job that goes to passed with no agent
// (PassCached). Skips the scheduler decides are mirrored to the store (SkipJob), a failure
// moves the build to failing, and the result rolls the build up to passed, failed (with
// error_code pipeline_timeout for a pipeline timeout) or canceled.
//
// # Retries
//
// A step's retry policy (ir retry: {limit, on}) is the scheduler's, as locally: it publishes
// step_retry, tags step_log and step_end with the attempt, and creates a fresh machine per
// attempt with HM_ATTEMPT=n in its env. Here attempt n > 1 of a step is its job run again:
// Create moves the failed job back to scheduled (RetryJob, policy attempt n, the failed one
// kept as a JobTry), any agent claims it, and the claim's env carries HM_ATTEMPT=n. A lost
// agent is the store's business, not the policy's: the reaper requeues the same policy
// attempt (same HM_ATTEMPT, its log continuing under the same attempt in the events) up to
// the infrastructure budget (Manager.MaxRetries, per policy attempt); an attempt that then
// fails agent_lost ends the step, whatever the policy says (scheduler.ErrNoRetry): the budget
// for lost agents is spent, and another round would wait for agents that are not there. Any
// other infrastructure failure an agent reports (an image missing) is retried as locally:
// once by default, up to the limit when the policy lists -1 or no codes. A Harmont client
// polling listJobs sees a retried job go failed → scheduled → …; its log stream of the
// failed attempt ends (done) and the build's outcome is the last attempt's.
//
// # Durability
//
// The driver can stop at any time (a server restart, a replica dying) and another Drive of
// the same build, here or on another replica, carries it on: it rebuilds the scheduler's
// view from the store, because each step's truth is its job. A job already finished resolves
// at once with its stored result (its logs are replayed from the store, in order); a running
// one is waited for, not released again, each claim of it the store requeued after a lost
// agent streamed to its end before the current claim (live and replayed alike: the lines of
// a policy attempt are all its claims', in claim order); a parent that passed and runs
// again since (its snapshot was lost with its agent: Job.RerunAttempt) ends as it passed
// the first time, its rerun being placement, not a step event; a passed job with no attempt was a cache hit and is
// a hit again; a job retried by its policy replays each earlier attempt as its JobTry ended
// (its log chunks, then its exit code) before it waits for the current one; a cache miss logs
// the note recorded on its job the first time. The events the new run publishes are then deduplicated against the stored
// stream by a deterministic identity: (step, n), the step's n-th event (build_start and
// build_end once per build). The scheduler publishes a step's events in a fixed order from
// its outcome, so the events already stored are the first ones of the replay and are dropped;
// the store side effects of an event (a skip) are idempotent and redone whether or not the
// event was stored. Why not resume from the last seq: the stream interleaves steps, and
// concurrent steps interleave differently on a replay.
//
// # Ownership
//
// A driver takes the build under the store's driver lease (store.BuildLeases) and renews it at
// a third of its TTL; the lease's epoch fences every event append, so a replica that lost the
// lease (stalled past it, or partitioned) cannot write after its successor started. A lost
// lease stops the driver without touching the jobs: the new owner continues them.
// Stopping the driver (ctx canceled) is not a cancel of the build: nothing more is written.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/store"
)

// Config configures a driver.
type Config struct {
	Store store.Store
	// Owner names this driver in the build lease (a replica id); unique per process.
	Owner string
	// LeaseTTL is the build lease's lifetime, renewed at a third of it: how long a build
	// whose server was killed (kill -9, a crash) waits before another server carries it on.
	// A driver stopped gracefully releases its lease, and the next one takes over at once.
	// Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Poll is how often jobs and the build are read back while waiting when no wake-up
	// came: the fallback of a store without store.Watcher, or of a lost wake-up (a change
	// another replica made). Default 250 ms.
	Poll time.Duration
	// Backend is the runner name of step_start events and build_start's default_runner.
	// Default "remote".
	Backend string
	// Load turns a stored build into what the scheduler runs. Default: DefaultLoad.
	Load func(b store.Build) (*plan.Plan, scheduler.Options, error)
	// Now is the clock of store writes. Default time.Now.
	Now func() time.Time
	// AgentTTL is how long an agent counts as alive after it was last seen: a cache entry
	// whose agent was not seen within it is gone (a miss, and the entry is forgotten).
	// Default 30 s.
	AgentTTL time.Duration
	// Secrets opens the build's sealed secrets (store.BuildSecrets) for the scheduler, which
	// masks them in every event it publishes (the server's last layer of masking) and checks
	// that each step's are there. Nil: a build with secrets fails secrets_unreadable.
	Secrets *secret.Sealer
}

// DefaultLeaseTTL is the build lease's default lifetime: short, since it is how long a
// killed server's builds stand still, yet a dozen times the store's usual write latency
// under load so that a renewal (every third of it) never misses it on a healthy server.
const DefaultLeaseTTL = 5 * time.Second

// Options is the hm_options of a build (remote.md) plus the cache keys the client computed.
type Options struct {
	Parallelism    int               `json:"parallelism"`
	KeepGoing      bool              `json:"keep_going"`
	NoCache        bool              `json:"no_cache"`
	TimeoutSeconds int               `json:"timeout_seconds"`
	MapImage       map[string]string `json:"map_image"`
	// CacheKeys maps a step key to its cache key (cache-keys.md); absent: not cached.
	CacheKeys map[string]string `json:"cache_keys"`
	// CacheInputs maps a cached step's key to what went into its cache key (its fingerprint
	// among them): the registry scopes entries by the fingerprint and explains a miss by
	// the inputs that differ from the step's last entry, as locally.
	CacheInputs map[string]cachekey.Inputs `json:"cache_inputs"`
	// Warnings maps a step key to what its key could not use (an on_change path matching
	// nothing), logged at the start of the step as locally.
	Warnings map[string][]string `json:"warnings"`
}

// ParseOptions reads a build's hm_options ("" or null: the defaults).
func ParseOptions(b store.Build) (Options, error) {
	var o Options
	if len(b.Options) > 0 {
		if err := json.Unmarshal(b.Options, &o); err != nil {
			return Options{}, fmt.Errorf("hm_options: %w", err)
		}
	}
	return o, nil
}

// DefaultLoad parses the build's IR and hm_options.
func DefaultLoad(b store.Build) (*plan.Plan, scheduler.Options, error) {
	p, err := ir.Parse([]byte(b.IR))
	if err != nil {
		return nil, scheduler.Options{}, err
	}
	pl := plan.New(p)
	o, err := ParseOptions(b)
	if err != nil {
		return nil, scheduler.Options{}, err
	}
	// Retry policies run as locally: each policy attempt is the same job run again
	// (backend.go, Create); see the package doc for how they meet the lost-agent requeues.
	so := scheduler.Options{Parallelism: o.Parallelism, KeepGoing: o.KeepGoing, NoCache: o.NoCache,
		Timeout: time.Duration(o.TimeoutSeconds) * time.Second, MapImage: o.MapImage}
	for k, v := range b.Env {
		so.ExtraEnv = append(so.ExtraEnv, k+"="+v)
	}
	so.Keys = make([]string, len(pl.Steps))
	so.Warnings = make([][]string, len(pl.Steps))
	for i, s := range pl.Steps {
		so.Keys[i] = o.CacheKeys[s.Key]
		so.Warnings[i] = o.Warnings[s.Key]
	}
	return pl, so, nil
}

func (c *Config) defaults() {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Backend == "" {
		c.Backend = "remote"
	}
	if c.Load == nil {
		c.Load = DefaultLoad
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.AgentTTL <= 0 {
		c.AgentTTL = 30 * time.Second
	}
}

// openSecrets opens the build's secrets; nil when it has none.
func openSecrets(ctx context.Context, cfg Config, b store.Build) (map[string]string, error) {
	sealed, err := cfg.Store.GetBuildSecrets(ctx, b.ID)
	if store.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if cfg.Secrets == nil {
		return nil, fmt.Errorf("%w: %w: the server has no secrets key", errs.ErrInfra, secret.ErrUnsealable)
	}
	return cfg.Secrets.Open(b.ID, sealed)
}

// ErrLeaseLost says another driver owns the build now.
var ErrLeaseLost = errors.New("driver: build lease lost")

// Drive runs build id to its end, or until ctx is done (the driver stops; the build goes on
// with the next Drive). It returns the scheduler's result when the build ended here.
func Drive(ctx context.Context, cfg Config, id string) (scheduler.Result, error) {
	cfg.defaults()
	st := cfg.Store
	epoch, err := st.AcquireBuildLease(ctx, id, cfg.Owner, cfg.Now(), cfg.LeaseTTL)
	if err != nil {
		return scheduler.Result{}, err
	}
	life, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	b, err := st.GetBuild(life, id)
	if err != nil {
		return scheduler.Result{}, err
	}
	if b.State.Terminal() {
		return scheduler.Result{}, st.ReleaseBuildLease(ctx, id, cfg.Owner, epoch)
	}
	jobs, err := st.ListJobs(life, id)
	if err != nil {
		return scheduler.Result{}, err
	}
	pl, opts, err := cfg.Load(b)
	if err != nil {
		// The server validated the IR at submit; one that does not load now fails the build.
		_, terr := st.TransitionBuild(life, id, []store.BuildState{b.State}, store.BuildFailed,
			store.BuildUpdate{ErrorCode: "build_plan_rejected", ErrorMessage: err.Error(), Now: cfg.Now()})
		return scheduler.Result{}, errors.Join(err, terr)
	}
	if opts.Secrets, err = openSecrets(life, cfg, b); err != nil {
		_, terr := st.TransitionBuild(life, id, []store.BuildState{b.State}, store.BuildFailed,
			store.BuildUpdate{ErrorCode: "secrets_unreadable", ErrorMessage: err.Error(), Now: cfg.Now()})
		return scheduler.Result{}, errors.Join(err, terr, st.DeleteBuildSecrets(life, id))
	}
	if b.State == store.BuildScheduled {
		if b, err = st.TransitionBuild(life, id, []store.BuildState{store.BuildScheduled}, store.BuildRunning,
			store.BuildUpdate{Now: cfg.Now()}); err != nil {
			return scheduler.Result{}, err
		}
	}
	pub, err := newPublisher(life, st, b, epoch, jobs, cfg.Now)
	if err != nil {
		return scheduler.Result{}, err
	}
	d := &driver{cfg: cfg, life: life, build: b, byKey: map[string]store.Job{}}
	for _, j := range jobs {
		d.byKey[j.StepKey] = j
	}

	// The pipeline timeout counts from the build's start, not this driver's.
	timeout := pl.Timeout
	if opts.Timeout > 0 {
		timeout = opts.Timeout
	}
	if timeout > 0 {
		opts.Timeout = max(timeout-cfg.Now().Sub(b.StartedAt), time.Nanosecond)
	}
	opts.RunID = b.ID
	opts.Publish = pub.publish
	// The scheduler collects artifacts into a directory: here only its manifest lands there
	// (the files stay in the blob dir, backend.CopyArtifacts), removed when the driver ends.
	artDir, err := os.MkdirTemp("", "hm-driver-artifacts-")
	if err != nil {
		return scheduler.Result{}, fmt.Errorf("%w: %w", errs.ErrInfra, err)
	}
	defer os.RemoveAll(artDir)
	opts.ArtifactsDir = artDir
	ho, err := ParseOptions(b)
	if err != nil {
		return scheduler.Result{}, err
	}
	opts.Cache = &cache{d: d, inputs: ho.CacheInputs}

	// The scheduler's ctx is the user's cancel only: stopping this driver must not cancel
	// steps, it only makes everything return and write nothing.
	schedCtx, cancelBuild := context.WithCancel(context.Background())
	defer cancelBuild()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		d.watch(schedCtx, epoch, stop, cancelBuild)
	}()
	go func() {
		<-life.Done()
		cancelBuild()
	}()

	res := scheduler.Run(schedCtx, pl, &backend{d: d}, opts)
	werr := pub.close()
	cancelBuild()
	<-watchDone
	if life.Err() != nil {
		err := errors.Join(context.Cause(life), werr)
		if !errors.Is(context.Cause(life), ErrLeaseLost) {
			// Stopped, not overtaken: nothing of this driver writes any more (the scheduler,
			// the publisher and the watcher have returned), so the lease is freed for the
			// next driver to take at once rather than after it lapsed.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err = errors.Join(err, st.ReleaseBuildLease(rctx, id, cfg.Owner, epoch))
			cancel()
		}
		return res, err
	}
	if werr != nil {
		return res, werr
	}
	if err := d.rollUp(res); err != nil {
		return res, err
	}
	// The build ended: its secrets are of no further use (the reaper deletes them too, for
	// a driver that stopped before this line).
	if err := st.DeleteBuildSecrets(context.WithoutCancel(ctx), id); err != nil {
		return res, err
	}
	return res, st.ReleaseBuildLease(context.WithoutCancel(ctx), id, cfg.Owner, epoch)
}

type driver struct {
	cfg   Config
	life  context.Context
	build store.Build
	byKey map[string]store.Job // read-only after Drive starts the scheduler
	// committed maps a snapshot id Commit returned to its job's id (RemoveSnapshot).
	committed sync.Map
}

// watch renews the lease and turns the build's cancel flag into the scheduler's cancel.
func (d *driver) watch(ctx context.Context, epoch int64, stop context.CancelCauseFunc, cancelBuild context.CancelFunc) {
	renew := time.NewTicker(d.cfg.LeaseTTL / 3)
	defer renew.Stop()
	poll := time.NewTicker(d.cfg.Poll)
	defer poll.Stop()
	changed, unwatch := store.Watch(d.cfg.Store, store.BuildChanged(d.build.ID))
	defer unwatch()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			if b, err := d.cfg.Store.GetBuild(d.life, d.build.ID); err == nil && b.Canceled {
				cancelBuild()
			}
		case <-renew.C:
			e, err := d.cfg.Store.AcquireBuildLease(d.life, d.build.ID, d.cfg.Owner, d.cfg.Now(), d.cfg.LeaseTTL)
			if err == nil && e != epoch {
				err = fmt.Errorf("epoch %d, was %d", e, epoch)
			}
			if err != nil && (store.IsConflict(err) || e != epoch) {
				stop(fmt.Errorf("%w: %w", ErrLeaseLost, err))
				return
			}
		case <-poll.C:
			if b, err := d.cfg.Store.GetBuild(d.life, d.build.ID); err == nil && b.Canceled {
				cancelBuild()
			}
		}
	}
}

// rollUp moves the build to its terminal state from the scheduler's result.
func (d *driver) rollUp(res scheduler.Result) error {
	live := []store.BuildState{store.BuildScheduled, store.BuildRunning, store.BuildFailing, store.BuildCanceling}
	u := store.BuildUpdate{Now: d.cfg.Now()}
	to := store.BuildPassed
	switch res.Status {
	case scheduler.BuildFailed:
		to = store.BuildFailed
	case scheduler.BuildTimedOut:
		to, u.ErrorCode, u.ErrorMessage = store.BuildFailed, "pipeline_timeout", "the pipeline timed out"
	case scheduler.BuildCanceled:
		to = store.BuildCanceled
	}
	b, err := d.cfg.Store.GetBuild(d.life, d.build.ID)
	if err != nil {
		return err
	}
	if b.State.Terminal() {
		return nil
	}
	if to == store.BuildCanceled && b.State != store.BuildCanceling {
		if b, err = d.cfg.Store.CancelBuild(d.life, b.ID, u.Now); err != nil {
			return err
		}
	}
	var from []store.BuildState
	for _, s := range live {
		if s.CanTransition(to) {
			from = append(from, s)
		}
	}
	if !b.State.CanTransition(to) {
		// passed from failing/canceling cannot be: a cancel came after the last step ended.
		return nil
	}
	_, err = d.cfg.Store.TransitionBuild(d.life, b.ID, from, to, u)
	return err
}
