// Package store is the server's durable state: every piece of a remote build (organizations,
// tokens, pipelines, builds, jobs, events, log chunks, source blobs, agents and the cache
// registry) lives behind the interfaces here, never only in a server process's memory, so a
// replica that restarts or dies mid-build loses nothing. It is a plugin boundary: the SQLite
// driver (internal/store/sqlite) is the one-command default, a PostgreSQL driver is a second
// implementation of the same interfaces and queries, and internal/store/storetest is the one
// conformance suite both run. It is not the HTTP API, the scheduler or the agent protocol: it
// holds their state and makes every transition of it atomic.
//
// # Data model
//
//	Org ─┬─ Token (user | agent; sha256 of the secret only)
//	     ├─ Pipeline (slug unique per org) ── Build (number sequential per pipeline)
//	     │                                      ├─ Job (one per IR step; id a UUID)
//	     │                                      │    └─ LogChunk (job, attempt, seq)
//	     │                                      └─ Event (build, seq): NDJSON of spec/events.md
//	     └─ CacheEntry (org, key, scope) → snapshot on an agent
//	Agent (id, labels, backend, last seen)      Blob (digest, size); bytes in a blobdir.Dir
//
// # Build lifecycle
//
// A build is created scheduled with all its jobs in one transaction, so a reader never sees a
// build without jobs. The server's scheduler moves it:
//
//	scheduled → running → passed | failing → failed
//	scheduled → failed                          (rejected or timed out before any step ran)
//	scheduled | running | failing → canceling → canceled   (CancelBuild; Canceled flag set)
//	running | failing | canceling → failed      (pipeline timeout: error_code pipeline_timeout)
//
// passed, failed and canceled are terminal: CancelBuild on a terminal build changes nothing
// and returns it as it is (remote.md). TransitionBuild refuses edges not in this graph with
// ErrInvalidTransition before touching the store, and refuses a build that is no longer in the
// expected state with a *ConflictError.
//
// # Job lifecycle
//
//	pending ──Release──► scheduled ──ClaimJob──► assigned ──StartJob──► running
//	   │                    │                       │                      │
//	   │                    │                       └────────FinishJob─────┴──► passed | failed
//	   ├──PassCached────────┴──► passed (a cache hit: no agent, no attempt)
//	   └──SkipJob───────────┴──► skipped (dependency failed, or canceled before it started)
//	assigned | running ──CancelJob──► canceling ──FinishJob | lease lapse──► canceled
//	assigned | running ──TimeOutJob─► timing_out ─FinishJob | lease lapse──► timed_out
//	assigned | running ──lease lapse (ReapExpiredLeases)──► scheduled (attempt kept, retried)
//	                                                   └──► failed, error_code agent_lost
//	                                                        (after the retry budget)
//	scheduled, requeued ──no live agent could run it (FailOrphans)──► failed, agent_lost
//	scheduled child whose parent ran again and did not pass (FailOrphans)──► failed, agent_lost
//	passed parent whose snapshot its agent's restart removed (UpsertAgent)──► scheduled
//	passed parent whose snapshot's agent is gone (RerunLostParents)──► scheduled
//	failed ──RetryJob (the step's retry policy)──► scheduled (policy attempt + 1)
//
// passed, failed, skipped, canceled and timed_out are terminal, but for two edges: the one a
// build's driver takes when the step's retry policy runs it again (RetryJob: failed →
// scheduled, PolicyAttempt + 1, the failed attempt kept as a JobTry), and a builds_in
// parent run again because its agent restarted and lost its snapshot while a child still
// needed it (UpsertAgent: passed → scheduled, a new claim, its snapshot replaced). pending→scheduled is the
// scheduler's decision (dependencies done, a parallelism slot free); the store only makes the
// transition atomic.
//
// # Fencing and idempotency
//
// Every claim increments the job's attempt and the agent must present (job, attempt) on every
// later write: StartJob, Heartbeat, AppendLogs and FinishJob are refused with a *ConflictError
// (a server answers 409; the agent drops the work) when the attempt is no longer the job's
// current one. Each transition is one statement of the form UPDATE … WHERE id = ? AND state IN
// (…) AND attempt = ? RETURNING …, so two replicas racing on one job cannot both win and no
// decision is taken on a value read earlier in Go. Repeating a write of the current attempt is
// harmless: StartJob and FinishJob with the outcome already recorded return the job, log
// chunks are keyed by (job, attempt, seq) and inserted with ON CONFLICT DO NOTHING, blobs and
// cache entries are upserts. Creates that collide on a unique name (org slug, pipeline slug,
// token) answer a *ConflictError.
//
// Heartbeat extends the lease only of the current attempt and reports whether the step must
// stop (canceling or timing_out), which is how cancel reaches an agent. ClaimJob hands out at
// most one ready job to one agent in one statement (UPDATE … WHERE id = (SELECT … LIMIT 1)
// RETURNING; PostgreSQL adds FOR UPDATE SKIP LOCKED to the subquery). A job whose builds_in
// parent committed a snapshot is claimable only by the agent holding that snapshot.
//
// # Sequences
//
// Build numbers and event sequence numbers are counters on the parent row (pipelines.build_seq,
// builds.event_seq) incremented in the same transaction as the insert: unique, gap-free and
// monotonic under concurrent writers on both drivers (the counter row serializes them).
//
// # Wake-ups
//
// A driver may implement Watcher (watch.go), an optional ability: after a commit it wakes the
// waiters of the topics the change touched (a job released for an org, a job or build
// transition, a job's log chunks, a build's events), so that the server's driver, a claim's
// long poll and the event and log streams react at once instead of at their next poll. It is
// best effort: waiters re-read the store when woken and keep polling at a slower interval, so
// a lost wake-up (another process or replica wrote) costs latency, never correctness. The
// SQLite driver wakes the waiters of its own process (internal/store/wake); the PostgreSQL
// driver also bridges the low-rate topics (Topic.HighRate false) across replicas with
// LISTEN/NOTIFY, coalesced, never one per log batch.
//
// # Leaders
//
// Background duties that must run once across replicas (the reaper of job leases and of
// orphaned jobs) run on the replica holding their LeaderLeases row, taken and renewed by one
// atomic upsert with an epoch, the same statement on both drivers.
//
// # Errors
//
// A missing entity is a *NotFoundError (errors.Is ErrNotFound; a server answers 404, which is
// also the tenancy answer). A refused transition or a duplicate is a *ConflictError (errors.Is
// ErrConflict; 409). A database failure wraps errs.ErrInfra and its cause; a canceled context
// wraps errs.ErrCanceled. Drivers never return advice for a person.
//
// All methods are safe for concurrent use, also from several processes (SQLite) or replicas
// (PostgreSQL) on one database.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store is one open database. Close releases it; the data stays.
type Store interface {
	Orgs
	Tokens
	Pipelines
	Builds
	Jobs
	Claims
	Events
	Logs
	Blobs
	Agents
	Cache
	BuildLeases
	LeaderLeases
	SnapshotRemovals
	BuildSecrets
	Stats
	Retention
	SharedKeys
	Close() error
}

// SharedKeys are values every replica of a deployment must agree on, decided by the first
// to start: the log-token signing key (a log URL one replica signs, another serves), a check
// of the secrets key (replicas sealing with different keys could not open each other's).
type SharedKeys interface {
	// SharedKey returns the value stored under name, storing fresh first when there is
	// none; of replicas starting at once, one's fresh value is stored and all get it.
	SharedKey(ctx context.Context, name string, fresh []byte) ([]byte, error)
}

// BlobStore holds blob bytes (sources, artifacts) by sha256 digest ("sha256:" + 64 hex): the
// server's blob dir (blobdir.Dir, DATA/blobs) or, as the optional ability of a store driver
// that can hold them (PostgreSQL), the database, so that replicas share no disk. A blob is
// whole or absent; a read checks the bytes against the digest. It is a plugin boundary, and
// storetest.RunBlobStore is the suite every implementation passes.
type BlobStore interface {
	// WriteBlob stores r's bytes and returns their digest and size; when want is not empty
	// the bytes must hash to it, or nothing is stored and the error wraps
	// ErrDigestMismatch. Writing a blob that exists is harmless and counts as a write of
	// it (SweepBlobs). r's error is returned wrapped (an *http.MaxBytesError stays one).
	WriteBlob(ctx context.Context, r io.Reader, want string) (digest string, size int64, err error)
	// OpenBlob opens the blob of digest; one that is absent wraps fs.ErrNotExist. Reading to
	// EOF checks the bytes: changed ones fail the last Read with ErrDigestMismatch.
	OpenBlob(ctx context.Context, digest string) (io.ReadCloser, int64, error)
	// SweepBlobs removes every blob not in keep last written before olderThan and returns
	// how many and their bytes; blobs written since are kept whatever keep says.
	SweepBlobs(ctx context.Context, keep map[string]bool, olderThan time.Time) (n int, size int64, err error)
}

// ErrDigestMismatch says bytes do not hash to the digest they were stored or asked under.
var ErrDigestMismatch = errors.New("blob digest mismatch")

// Retention bounds what a server keeps: builds that ended longer ago than its retention, and
// the blobs (sources, artifacts) no row needs any more. The blob bytes are not the store's
// (blobdir.Dir): BlobRefs is what a sweep of them must keep.
type Retention interface {
	// PruneBuilds deletes up to limit builds that ended (passed, failed, canceled) before
	// before, oldest first, each with every row that is its own (jobs and their labels,
	// tries and logs, events, secrets) in one transaction, so a crash leaves a build whole
	// or gone; and a deleted build's source blob row once no build names it. It returns the
	// number of builds deleted: fewer than limit means none is left to prune.
	PruneBuilds(ctx context.Context, before time.Time, limit int) (int, error)
	// BlobRefs returns every blob digest ("sha256:" + hex) a row references: the builds'
	// sources and the jobs' and cache entries' artifacts.
	BlobRefs(ctx context.Context) (map[string]bool, error)
}

// LeaderLeases elect the one replica that runs a background duty which must run once across
// the replicas of a deployment (the reaper of lapsed job leases): a lease is (owner, expiry,
// epoch) on a row named after the duty, taken and renewed by one atomic upsert, as River's
// leader election does. Whoever holds a live lease is the leader until it lapses or is
// released; the epoch grows whenever the lease changes hands, so a leader can tell that it
// lost the lease in between two renewals. The duties themselves stay single atomic
// statements: a leader that stalled past its lease and runs one more round does no harm,
// the lease only keeps the replicas from all doing the same work.
type LeaderLeases interface {
	// AcquireLeader takes the lease name for owner until now+ttl, or renews it: ok when the
	// lease was free, lapsed (expiry before now) or owner's. The epoch is unchanged on a
	// renewal of owner's live lease and incremented otherwise. A live lease of another owner
	// answers ok false (not an error: every other replica gets that answer).
	AcquireLeader(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (epoch int64, ok bool, err error)
	// ReleaseLeader frees the lease when owner still holds it at epoch; else a no-op.
	ReleaseLeader(ctx context.Context, name, owner string, epoch int64) error
}

// Stats are what a server's metrics read from the store.
type Stats interface {
	// JobCounts counts the jobs that are not terminal, by state (pending, scheduled: the
	// queue; assigned, running, canceling, timing_out: on agents). A state with none is
	// absent.
	JobCounts(ctx context.Context) (map[JobState]int64, error)
}

// BuildSecrets are a build's secret values, sealed by the server (the store sees ciphertext
// only), in one row per build written with the build (NewBuild.Secrets) and deleted once it
// ended: by its driver, and by the reaper for any ended build whose driver did not.
type BuildSecrets interface {
	// GetBuildSecrets returns the sealed secrets of the build, a *NotFoundError for none.
	GetBuildSecrets(ctx context.Context, buildID string) ([]byte, error)
	// DeleteBuildSecrets forgets the build's secrets; none is a no-op.
	DeleteBuildSecrets(ctx context.Context, buildID string) error
	// DeleteEndedBuildSecrets forgets the secrets of every terminal build and returns how many.
	DeleteEndedBuildSecrets(ctx context.Context) (int, error)
}

// SnapshotRemovals are the ephemeral snapshots agents must delete: a build's driver queues
// one when the build no longer needs it, the agent holding it learns it (its alive call),
// removes it with its VM backend and acknowledges it. A removal stays queued until then, so
// it survives a server restart, another replica taking the build over, and an agent
// restart. A snapshot a cache entry of the agent names is never queued: cached snapshots stay.
type SnapshotRemovals interface {
	// QueueSnapshotRemoval asks agentID to remove snapshot; queuing one already queued, or
	// one a cache entry on agentID references, is a no-op.
	QueueSnapshotRemoval(ctx context.Context, agentID, snapshot string, now time.Time) error
	// ListSnapshotRemovals lists up to limit snapshots agentID must remove, oldest first.
	ListSnapshotRemovals(ctx context.Context, agentID string, limit int) ([]string, error)
	// AckSnapshotRemovals forgets removals agentID has done; unknown ones are ignored.
	AckSnapshotRemovals(ctx context.Context, agentID string, snapshots []string) error
	// DropStaleSnapshotRemovals forgets, in one statement, the removals of every agent not
	// seen since now-retention (or never registered): an agent gone for good never asks for
	// them, and one that comes back after that long reconciles its backend at start, which
	// removes its previous process's ephemeral snapshots. It returns how many it dropped.
	DropStaleSnapshotRemovals(ctx context.Context, now time.Time, retention time.Duration) (int64, error)
}

// Orgs are tenants: every other entity but agents and blobs belongs to one.
type Orgs interface {
	CreateOrg(ctx context.Context, slug, name string) (Org, error)
	GetOrg(ctx context.Context, id string) (Org, error)
	GetOrgBySlug(ctx context.Context, slug string) (Org, error)
}

// Tokens are bearer tokens. The store sees only their sha256 (HashToken): the secret is shown
// once by whoever called NewToken and is never written anywhere.
type Tokens interface {
	// CreateToken stores t (OrgID, Kind, Name, Hash); ID and CreatedAt are assigned.
	CreateToken(ctx context.Context, t Token) (Token, error)
	// LookupToken finds the token whose hash is h and records now as its last use.
	LookupToken(ctx context.Context, h TokenHash, now time.Time) (Token, error)
	ListTokens(ctx context.Context, orgID string) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error
}

// Pipelines are named per org.
type Pipelines interface {
	CreatePipeline(ctx context.Context, p Pipeline) (Pipeline, error)
	GetPipeline(ctx context.Context, orgID, slug string) (Pipeline, error)
	ListPipelines(ctx context.Context, orgID string) ([]Pipeline, error)
}

// Builds hold a submitted build and its rolled-up state.
type Builds interface {
	// CreateBuild inserts the build (state scheduled, the next number of its pipeline) and
	// its jobs (state pending) in one transaction.
	CreateBuild(ctx context.Context, b NewBuild) (Build, []Job, error)
	GetBuild(ctx context.Context, id string) (Build, error)
	GetBuildByNumber(ctx context.Context, pipelineID string, number int64) (Build, error)
	// ListBuilds lists a pipeline's builds newest first, those numbered below before
	// (0: from the newest), at most limit.
	ListBuilds(ctx context.Context, pipelineID string, before int64, limit int) ([]Build, error)
	// ListUnfinishedBuilds lists builds not yet terminal, oldest first: what a server
	// starting (or taking over) must carry on.
	ListUnfinishedBuilds(ctx context.Context) ([]Build, error)
	// TransitionBuild moves the build from one of from to to; see the package doc.
	TransitionBuild(ctx context.Context, id string, from []BuildState, to BuildState, u BuildUpdate) (Build, error)
	// CancelBuild sets the canceled flag and moves a non-terminal build to canceling; a
	// terminal build is returned unchanged.
	CancelBuild(ctx context.Context, id string, now time.Time) (Build, error)
}

// Jobs are the steps of builds and the scheduler's transitions of them.
type Jobs interface {
	GetJob(ctx context.Context, id string) (Job, error)
	// ListJobs lists a build's jobs in creation (topological) order.
	ListJobs(ctx context.Context, buildID string) ([]Job, error)
	// ReleaseJob moves a pending job to scheduled: claimable from now on.
	ReleaseJob(ctx context.Context, id string, now time.Time) (Job, error)
	// PassCached ends a pending or scheduled job passed from a cache hit: snapshot on agent,
	// with the cache entry's artifacts (nil for none).
	PassCached(ctx context.Context, id, snapshot, agentID string, artifacts []byte, now time.Time) (Job, error)
	// SkipJob ends a pending or scheduled job skipped; reason is its error_code
	// ("dependency_failed", "canceled").
	SkipJob(ctx context.Context, id, reason string, now time.Time) (Job, error)
	// CancelJob asks an assigned or running job to stop (canceling); the agent learns it
	// from its next heartbeat.
	CancelJob(ctx context.Context, id string, now time.Time) (Job, error)
	// TimeOutJob asks an assigned or running job to stop because of its step timeout.
	TimeOutJob(ctx context.Context, id string, now time.Time) (Job, error)
	// NoteCacheMiss records why a pending cached job missed (Job.CacheNote) unless a note is
	// recorded already: the first one stays, so every driver of the build logs the same
	// line. It returns the job as it is after the call, in any state.
	NoteCacheMiss(ctx context.Context, id, note string) (Job, error)
	// RetryJob runs a failed job again as attempt policyAttempt of its step's retry policy:
	// failed at policyAttempt-1 → scheduled at policyAttempt (claimable; the lost-agent
	// budget InfraRetries starts afresh), the failed attempt's outcome kept as a JobTry. A
	// repeat (the job is at policyAttempt or later) returns the job; anything else is a
	// *ConflictError.
	RetryJob(ctx context.Context, id string, policyAttempt int, now time.Time) (Job, error)
	// ListJobTries lists the job's retried policy attempts, in order.
	ListJobTries(ctx context.Context, id string) ([]JobTry, error)
}

// Claims are the agent side of jobs: claim, start, heartbeat, finish, and the reaper.
type Claims interface {
	// ClaimJob hands at most one scheduled job of a build of c.OrgID the agent can run
	// (backend, labels, placement) to it, attempt incremented and leased until now+c.LeaseTTL. ok is false
	// when there is none.
	//
	// A claim naming its worker or Finish (Claim.Worker, Claim.AfterJob) first answers again
	// a claim whose answer was lost: the job leased to the agent claimed for that worker
	// (or, for a claim naming no worker, the one that Finish's claim made), provided no
	// Start acknowledged it, with the same attempt and its lease renewed to now+LeaseTTL.
	// Neither a worker holding such a job nor a Finish that has a job claimed for it gets
	// another; for a Finish, on any replica.
	ClaimJob(ctx context.Context, c Claim) (j Job, ok bool, err error)
	// StartJob records that the current attempt started running (assigned → running).
	StartJob(ctx context.Context, id string, attempt int, now time.Time) (Job, error)
	// Heartbeat extends the lease of the current attempt to now+ttl. The job returned says
	// whether to stop: State canceling or timing_out.
	Heartbeat(ctx context.Context, id string, attempt int, now time.Time, ttl time.Duration) (Job, error)
	// FinishJob records the current attempt's outcome; see the package doc.
	FinishJob(ctx context.Context, id string, attempt int, f Finish) (Job, error)
	// ReapExpiredLeases requeues every job whose lease lapsed before now (agent lost), or
	// fails it agent_lost once it was requeued maxRetries times; a job that was asked to
	// stop ends canceled or timed_out. It returns the jobs it changed.
	ReapExpiredLeases(ctx context.Context, now time.Time, maxRetries int) ([]Job, error)
	// FailOrphans fails agent_lost every requeued job (scheduled after a lost lease) that no
	// agent seen since now-agentTTL could claim (its org, backend, labels and placement):
	// with no agent left, a retry would wait forever. A requeued job some live agent could
	// run stays scheduled, and a job never claimed waits for an agent however long it takes.
	// It returns the jobs it failed.
	FailOrphans(ctx context.Context, now time.Time, agentTTL time.Duration) ([]Job, error)
	// RerunLostParents runs again, in one statement, every passed non-cached parent whose
	// snapshot is on an agent not seen since now-agentTTL while a builds_in child of it is
	// not finished (passed → scheduled, as UpsertAgent does for a restarted agent): the
	// child could never be placed otherwise. A cache hit's parent is left alone (it has no
	// attempt to run again; its entry misses at the next lookup). It returns the jobs.
	RerunLostParents(ctx context.Context, now time.Time, agentTTL time.Duration) ([]Job, error)
}

// BuildLeases fence the driver of a build: the one server replica that runs its scheduler.
// A lease is (owner, expiry, epoch) on the build row, taken and renewed by one atomic UPDATE.
// The epoch grows whenever the build changes hands, and every write of the driver that must
// not happen twice (its events) carries it: the store refuses a write of an older epoch, so
// a replica that stalled past its lease cannot append after its successor took over.
type BuildLeases interface {
	// AcquireBuildLease takes the build's driver lease for owner until now+ttl, or renews
	// it. It succeeds when the lease is free, lapsed (expiry before now) or owner's, and
	// returns the epoch: unchanged on a renewal of a live lease, incremented otherwise. A
	// lease another owner holds answers a *ConflictError.
	AcquireBuildLease(ctx context.Context, buildID, owner string, now time.Time, ttl time.Duration) (epoch int64, err error)
	// ReleaseBuildLease frees the lease when owner still holds it at epoch; else a no-op.
	ReleaseBuildLease(ctx context.Context, buildID, owner string, epoch int64) error
	// AppendEventsFenced is AppendEvents refused with a *ConflictError unless epoch is the
	// build's current lease epoch (checked in the statement that takes the sequence).
	AppendEventsFenced(ctx context.Context, buildID string, epoch int64, payloads ...[]byte) ([]int64, error)
}

// Events are a build's NDJSON event stream.
type Events interface {
	// AppendEvents appends payloads (one NDJSON event each, without newline) in order and
	// returns their sequence numbers, which continue the build's gap-free sequence from 1.
	AppendEvents(ctx context.Context, buildID string, payloads ...[]byte) ([]int64, error)
	// ListEvents lists events with seq > after (Last-Event-ID), at most limit.
	ListEvents(ctx context.Context, buildID string, after int64, limit int) ([]Event, error)
}

// Logs are a job's output chunks, per attempt.
type Logs interface {
	// AppendLogs inserts chunks of (job, attempt) idempotently and returns the highest seq
	// such that every chunk from 1 to it is stored: the agent resends from there.
	AppendLogs(ctx context.Context, jobID string, attempt int, chunks []LogChunk) (contiguous int64, err error)
	// ListLogs lists chunks with seq > after, at most limit, of one attempt.
	ListLogs(ctx context.Context, jobID string, attempt int, after int64, limit int) ([]LogChunk, error)
}

// Blobs are metadata of content-addressed source archives (the bytes: a BlobStore).
type Blobs interface {
	// PutBlob records a blob; recording one already known is a no-op.
	PutBlob(ctx context.Context, b Blob) (Blob, error)
	GetBlob(ctx context.Context, digest string) (Blob, error)
	// GetOrgBlob is GetBlob for a reader of orgID: a *NotFoundError unless some build of
	// that org has the blob as its source (a digest of another tenant's build is not found).
	GetOrgBlob(ctx context.Context, orgID, digest string) (Blob, error)
}

// Agents are the machines that claim jobs.
type Agents interface {
	// UpsertAgent registers an agent or replaces its name, labels and backend; last seen now.
	// An agent belongs to the org it was first registered with (or, registered before orgs
	// were recorded, to the first org that registers it again): re-registering it with
	// another OrgID changes nothing and answers a *NotFoundError, the tenancy answer.
	//
	// A registration whose BootID is not empty and differs from the stored one is the
	// agent's restart: its start-up reconcile removed every ephemeral snapshot of its
	// previous process. In the same transaction the store forgets them (snapshot_agent
	// cleared on every job whose snapshot is on the agent and is no cache entry's of it:
	// cached snapshots survive a restart and stay usable) and runs again every passed
	// non-cached parent
	// whose builds_in child is not finished: passed → scheduled, claimable by any agent,
	// the child placed where the parent's new snapshot is once it passes (remote.md: "a
	// child whose parent's agent is gone makes the parent run again"). A parent of such
	// a parent that lost its snapshot too runs again as well.
	UpsertAgent(ctx context.Context, a Agent, now time.Time) (Agent, error)
	GetAgent(ctx context.Context, id string) (Agent, error)
	ListAgents(ctx context.Context) ([]Agent, error)
	// TouchAgent records that the agent was seen at now.
	TouchAgent(ctx context.Context, id string, now time.Time) error
}

// Cache is the server's cache registry: which agent holds the snapshot of a cache key.
type Cache interface {
	// PutCacheEntry registers (or replaces) the entry of (OrgID, Key, Scope).
	PutCacheEntry(ctx context.Context, e CacheEntry) (CacheEntry, error)
	// LookupCache finds the entry and records now as its last use.
	LookupCache(ctx context.Context, orgID, key, scope string, now time.Time) (CacheEntry, error)
	DeleteCacheEntry(ctx context.Context, orgID, key, scope string) error
	// LastCacheEntry is the entry registered last for the step of the pipeline, whatever its
	// key and scope (a *NotFoundError when there is none): the baseline of a miss's
	// explanation.
	LastCacheEntry(ctx context.Context, orgID, pipelineID, stepKey string) (CacheEntry, error)
	// DeleteAgentCache forgets every entry whose snapshot is on agentID (the agent is gone).
	DeleteAgentCache(ctx context.Context, agentID string) (int, error)
}
