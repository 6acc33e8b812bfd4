package store

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// BuildState is the closed enum of remote.md: a client fails on any other string.
type BuildState string

const (
	BuildScheduled BuildState = "scheduled"
	BuildRunning   BuildState = "running"
	BuildFailing   BuildState = "failing"
	BuildPassed    BuildState = "passed"
	BuildFailed    BuildState = "failed"
	BuildCanceling BuildState = "canceling"
	BuildCanceled  BuildState = "canceled"
)

// BuildStates lists every build state.
var BuildStates = []BuildState{BuildScheduled, BuildRunning, BuildFailing, BuildPassed, BuildFailed, BuildCanceling, BuildCanceled}

// Terminal says the build will not change any more.
func (s BuildState) Terminal() bool {
	return s == BuildPassed || s == BuildFailed || s == BuildCanceled
}

// buildEdges is the build state machine of the package doc.
var buildEdges = map[BuildState][]BuildState{
	BuildScheduled: {BuildRunning, BuildFailed, BuildCanceling},
	BuildRunning:   {BuildPassed, BuildFailing, BuildFailed, BuildCanceling},
	BuildFailing:   {BuildFailed, BuildCanceling},
	BuildCanceling: {BuildCanceled, BuildFailed},
}

// CanTransition says from → to is an edge of the build state machine.
func (from BuildState) CanTransition(to BuildState) bool {
	return slices.Contains(buildEdges[from], to)
}

// JobState is the closed enum of remote.md.
type JobState string

const (
	JobPending   JobState = "pending"
	JobScheduled JobState = "scheduled"
	JobAssigned  JobState = "assigned"
	JobRunning   JobState = "running"
	JobPassed    JobState = "passed"
	JobFailed    JobState = "failed"
	JobSkipped   JobState = "skipped"
	JobCanceling JobState = "canceling"
	JobCanceled  JobState = "canceled"
	JobTimingOut JobState = "timing_out"
	JobTimedOut  JobState = "timed_out"
)

// JobStates lists every job state.
var JobStates = []JobState{JobPending, JobScheduled, JobAssigned, JobRunning, JobPassed, JobFailed,
	JobSkipped, JobCanceling, JobCanceled, JobTimingOut, JobTimedOut}

// Terminal says the job will not change any more.
func (s JobState) Terminal() bool {
	switch s {
	case JobPassed, JobFailed, JobSkipped, JobCanceled, JobTimedOut:
		return true
	}
	return false
}

// Leased says an agent holds the job (its lease can lapse).
func (s JobState) Leased() bool {
	switch s {
	case JobAssigned, JobRunning, JobCanceling, JobTimingOut:
		return true
	}
	return false
}

// Stopping says the agent holding the job must stop it (a heartbeat's cancel).
func (s JobState) Stopping() bool { return s == JobCanceling || s == JobTimingOut }

// Error codes the store itself sets.
const (
	CodeAgentLost = "agent_lost"
)

// TokenKind separates people's tokens from agents': user routes refuse agent tokens and the
// reverse.
type TokenKind string

const (
	TokenUser  TokenKind = "user"
	TokenAgent TokenKind = "agent"
)

// Org is a tenant.
type Org struct {
	ID        string
	Slug      string
	Name      string
	CreatedAt time.Time
}

// Token is an API token as stored: its hash, never its secret.
type Token struct {
	ID        string
	OrgID     string
	Kind      TokenKind
	Name      string
	Hash      TokenHash
	CreatedAt time.Time
	LastUsed  time.Time // zero: never used
}

// Pipeline is a named workflow of an org.
type Pipeline struct {
	ID            string
	OrgID         string
	Slug          string
	Name          string
	Repository    string
	DefaultBranch string
	Description   string
	CreatedAt     time.Time
}

// NewBuild is what CreateBuild inserts.
type NewBuild struct {
	ID                      string // a UUID; generated when empty
	OrgID, PipelineID       string
	Branch, Commit, Message string
	Source                  string // "api" when empty
	IR                      string // pipeline_ir verbatim
	Env                     map[string]string
	Options                 json.RawMessage // hm_options verbatim; null when empty
	SourceDigest            string          // the source blob, "" for none
	Jobs                    []NewJob        // in topological order
	// Secrets are the build's secret values, sealed by the server (never plain: the store
	// holds only ciphertext it cannot open), kept in their own row until the build ends
	// (BuildSecrets); nil for none.
	Secrets []byte
	Now     time.Time
}

// NewJob is one job of a NewBuild. DependsOn and ParentID name other jobs of the same build
// by ID, so IDs are the caller's (a UUID per step; generated when empty).
type NewJob struct {
	ID        string
	StepKey   string
	Name      string
	Command   string
	DependsOn []string // every in-edge, builds_in included (the Job schema's depends_on)
	ParentID  string   // the builds_in parent, "" for a root step
	Backend   string   // the backend the job needs, "" for any, BackendImage for one running images
	Labels    []string // labels the claiming agent must all have
}

// BackendImage as a job's backend means any backend that runs images (sandbox, docker): not
// host, which ignores a step's image.
const BackendImage = "image"

// Build is a stored build.
type Build struct {
	ID, OrgID, PipelineID   string
	Number                  int64
	Branch, Commit, Message string
	Source                  string
	IR                      string
	Env                     map[string]string
	Options                 json.RawMessage
	SourceDigest            string
	State                   BuildState
	ErrorCode, ErrorMessage string
	Canceled                bool // the user asked to cancel (a pipeline timeout is not this)
	CreatedAt               time.Time
	StartedAt, FinishedAt   time.Time // zero until then
}

// BuildUpdate goes with a transition: error fields are set when not empty, StartedAt on the
// first move to running, FinishedAt on a terminal state.
type BuildUpdate struct {
	ErrorCode, ErrorMessage string
	Now                     time.Time
}

// Job is a stored job.
type Job struct {
	ID, BuildID   string
	Ordinal       int
	StepKey, Name string
	Command       string
	DependsOn     []string
	ParentID      string
	Backend       string
	Labels        []string
	State         JobState
	Attempt       int // claims so far; the fencing token of every agent write
	AgentID       string
	LeaseExpires  time.Time
	ExitCode      *int
	Snapshot      string
	SnapshotAgent string // the agent holding Snapshot, where builds_in children must run
	ErrorCode     string
	ErrorMessage  string
	InfraRetries  int // requeues after a lost lease
	// CacheNote explains the cache miss of a cached step that runs ("" for none), recorded
	// once by the driver before the step starts (NoteCacheMiss).
	CacheNote string
	// PolicyAttempt is the attempt of the step's retry policy, from 1 (HM_ATTEMPT): RetryJob
	// increments it. Attempt counts claims, lost agents' requeues included.
	PolicyAttempt int
	// Artifacts are the files the step's artifacts patterns collected (a JSON array of
	// artifact.File: path, size, sha256), their bytes in the server's blob dir by digest:
	// reported by the agent at finish, or copied from the cache entry on a hit. nil: none.
	Artifacts json.RawMessage
	// RerunAttempt and RerunSnapshot are the claim and snapshot of the job's first pass
	// when it ran again since because its snapshot was lost (UpsertAgent,
	// RerunLostParents); 0 and "" otherwise.
	RerunAttempt  int
	RerunSnapshot string
	CreatedAt     time.Time
	ReadyAt       time.Time // when it became scheduled: the claim order
	StartedAt     time.Time
	FinishedAt    time.Time
}

// JobTry is a failed policy attempt of a job that was retried (RetryJob): how it ended.
type JobTry struct {
	PolicyAttempt int
	Attempt       int  // the claim that ended it: the attempt of its log chunks
	ExitCode      *int // nil when it could not run
	ErrorCode     string
	ErrorMessage  string
	FinishedAt    time.Time
}

// Claim is an agent's request for work.
type Claim struct {
	AgentID string // a registered agent: its backend and labels decide what it can run
	// OrgID is the org of the agent's token: only jobs of that org's builds are claimable
	// (an agent never sees another tenant's source, command or env). Required.
	OrgID    string
	Now      time.Time
	LeaseTTL time.Duration
	// Worker names the agent's worker the claim is for ("" when the agent names none): a
	// worker claims only while it holds no job, so a job claimed for it that no Start has
	// acknowledged is one whose answer it lost (ClaimJob answers it again). Kept with the
	// claim.
	Worker string
	// AfterJob and AfterAttempt name the Finish whose Next makes the claim ("" for a plain
	// claim). A Finish claims at most one job: while a job claimed for it exists, ClaimJob
	// claims none, and answers that one to the Finish's repeats while it is unacknowledged
	// (by the worker, when the claim names one).
	AfterJob     string
	AfterAttempt int
}

// FinishRef is the claim's Finish as the store keeps it ("" for a plain claim).
func (c Claim) FinishRef() string {
	if c.AfterJob == "" {
		return ""
	}
	return c.AfterJob + "/" + strconv.Itoa(c.AfterAttempt)
}

// Finish is an attempt's outcome. The end state follows from it and the job's state:
// canceling → canceled, timing_out → timed_out, else exit 0 → passed, other → failed.
type Finish struct {
	ExitCode     int
	Snapshot     string // committed snapshot id on the finishing agent, "" for none
	ErrorCode    string // an infrastructure failure's code, "" for none
	ErrorMessage string
	// Artifacts are the files the agent uploaded (Job.Artifacts); kept only when it passed.
	Artifacts json.RawMessage
	Now       time.Time
}

// Event is one stored build event.
type Event struct {
	Seq       int64
	Payload   []byte
	CreatedAt time.Time
}

// Log chunk streams (remote.md stream_kind).
const (
	StreamStdout = 0
	StreamStderr = 1
	StreamSystem = 2
)

// LogChunk is one line of a job's output.
type LogChunk struct {
	Seq     int64
	Stream  int
	Content string
	TS      time.Time
}

// Blob is a stored source archive.
type Blob struct {
	Digest    string // "sha256:<hex>"
	Size      int64
	CreatedAt time.Time
}

// Agent is a registered agent.
type Agent struct {
	ID string
	// OrgID is the org of the token that registered it, fixed from then on (UpsertAgent);
	// "" for an agent registered before orgs were recorded: it counts for any org in the
	// reaper, and the server makes it register again before it claims.
	OrgID   string
	Name    string
	Labels  []string
	Backend string
	// BootID names the agent's process (a fresh one per start; "" from an agent that sends
	// none). A registration with another one than stored is a restart: see UpsertAgent.
	BootID   string
	LastSeen time.Time
}

// CacheEntry maps a cache key, in a scope (the step's fingerprint, backend, base), to the
// snapshot an agent holds.
type CacheEntry struct {
	OrgID, Key, Scope string
	Snapshot          string
	AgentID           string
	// PipelineID, StepKey and Inputs (the client's cachekey.Inputs, JSON) say what the entry
	// was built from: the baseline LastCacheEntry gives to explain a later miss.
	PipelineID string
	StepKey    string
	Inputs     json.RawMessage
	// Artifacts are the artifacts of the job that made the snapshot (Job.Artifacts): a hit
	// publishes them again.
	Artifacts json.RawMessage
	CreatedAt time.Time
	LastUsed  time.Time
}

// Contiguous is the prefix of cs (chunks in seq order, as ListLogs returns them) that
// continues after without a gap: after+1, after+2, … An agent may have several log calls in
// flight, so a later batch can be stored before an earlier one; a reader of a running job
// streams only this prefix, since the gap fills (the agent resends until the server's
// contiguous seq covers everything it sent).
func Contiguous(cs []LogChunk, after int64) []LogChunk {
	for i, c := range cs {
		if c.Seq != after+int64(i)+1 {
			return cs[:i]
		}
	}
	return cs
}
