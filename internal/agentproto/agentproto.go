// Package agentproto is the agent protocol of spec/remote.md: the HTTP/JSON messages an agent
// (internal/agent) and the server (internal/server) exchange, the paths they are posted to,
// and for each call the rule that makes a repeat safe. It holds types and constants only: no
// transport, no retry policy (internal/agent classifies errors), no store.
//
// Every call is agent-initiated and authenticated with an agent token (Authorization: Bearer).
// Each one is either idempotent (repeating it with the same body changes nothing more) or
// fenced by the job's attempt: a claim increments the attempt, and every later write about
// the job carries (job_id, attempt). The server refuses a write of an attempt that is no
// longer the job's current one with 409 Conflict, and the agent then drops that work: another
// agent (or another attempt) owns the step. 401 means the token is not an agent token, or
// not valid: fatal for the agent. Any other failure (a network error, 5xx, 503 while a server
// drains) is retried by the agent with backoff, which the rules below make safe.
//
// Errors come in the server's envelope {"error":{"type","code","message",…}}.
package agentproto

import "time"

// Paths, under the server's base URL.
const (
	Prefix        = "/api/v0/agent"
	PathRegister  = Prefix + "/register"
	PathAlive     = Prefix + "/heartbeat"
	PathClaim     = Prefix + "/claim"
	PathStart     = Prefix + "/jobs/{job_id}/start"
	PathHeartbeat = Prefix + "/jobs/{job_id}/heartbeat"
	PathLogs      = Prefix + "/jobs/{job_id}/logs"
	PathFinish    = Prefix + "/jobs/{job_id}/finish"
	PathSource    = Prefix + "/sources/{digest}"
	PathArtifact  = Prefix + "/jobs/{job_id}/artifacts/{digest}"
)

// MaxClaimWait bounds a claim's long poll (remote.md: ≤ 30 s).
const MaxClaimWait = 30 * time.Second

// MaxLogChunks bounds the chunks of one Logs call.
const MaxLogChunks = 1000

// MaxLogBatchBytes bounds one Logs call by size as well: an agent adds chunks to a call while
// their content (plus 64 bytes each) stays within it, and always sends at least one. A chunk
// is at most one line of events.MaxLine (4 MiB), so a call's content is at most 4 MiB, and its
// JSON (a byte escapes to at most 6, "\u003c") at most MaxLogsBody, the server's body cap.
const MaxLogBatchBytes = 4 << 20

// MaxLogsBody is the server's cap on a Logs request body: the JSON of MaxLogBatchBytes with
// every byte escaped, and room for the envelope of MaxLogChunks chunks.
const MaxLogsBody = 6*MaxLogBatchBytes + MaxLogChunks*256

// Register (POST PathRegister) announces an agent: what it runs and on which labels.
// Idempotent: an upsert keyed by AgentID (the agent keeps its id in its state dir, so a
// restarted agent is the same agent and the snapshots it still holds stay placeable).
type Register struct {
	AgentID string   `json:"agent_id"`
	Name    string   `json:"name"`
	Backend string   `json:"backend"` // sandbox, docker or host
	Labels  []string `json:"labels"`  // "k=v"; a job's labels must all be among them
	// BootID is fresh per agent process (hm extension; "" from an agent that sends none).
	// The agent reconciled its backend before registering, which removed its previous
	// process's ephemeral snapshots: a new boot id tells the server they are gone.
	BootID string `json:"boot_id,omitempty"`
}

// Registered answers Register.
type Registered struct {
	AgentID string `json:"agent_id"`
	Org     string `json:"org"`
}

// Alive (POST PathAlive) says the agent is still there (last seen), acknowledges the
// snapshot removals it has done and answers the ones still to do. Idempotent: acknowledging
// a removal twice, or one never asked, is a no-op, and a removal stays asked until it is
// acknowledged (a lost reply, or an agent restarting, gets the same list again).
type Alive struct {
	AgentID string `json:"agent_id"`
	// Removed are snapshots of RemoveSnapshots the agent removed (or found absent); at most
	// MaxRemovals.
	Removed []string `json:"removed,omitempty"`
}

// AliveReply answers Alive.
type AliveReply struct {
	Status string `json:"status"` // "ok"
	// RemoveSnapshots are ephemeral snapshots of this agent no build needs any more: remove
	// each with the VM backend, then acknowledge it in Removed. At most MaxRemovals. A
	// cached snapshot (a cache entry names it) is never asked.
	RemoveSnapshots []string `json:"remove_snapshots"`
}

// MaxRemovals bounds the snapshots of one Alive call and of its reply.
const MaxRemovals = 100

// Claim (POST PathClaim) asks for one step. The server long-polls its store until a step the
// agent can run (backend, labels, placement of builds_in children) is ready or WaitSeconds
// (at most MaxClaimWait) pass: 200 with a Job, or 204 No Content for none.
//
// A claim naming its Worker (hm extension) is safe to repeat: a worker claims only while it
// holds no job, so a job claimed for it that it has not started (no Start) is one whose reply
// it lost, and the server answers that job again (same attempt, lease renewed) instead of
// another. A claim naming none is not idempotent: a lost reply leaves a job assigned to an
// agent that does not know it; its lease lapses and the reaper requeues it (spending one
// infrastructure retry). An agent asks only when it has a free slot.
type Claim struct {
	AgentID     string `json:"agent_id"`
	Slots       int    `json:"slots"` // free slots; informational
	WaitSeconds int    `json:"wait_seconds"`
	// Worker names the agent's worker that asks, unique to the agent process (its boot id
	// and slot), at most MaxWorker bytes; "" for none.
	Worker string `json:"worker,omitempty"`
}

// MaxWorker bounds Claim.Worker.
const MaxWorker = 128

// Job is a claimed step: everything the agent needs to run it.
type Job struct {
	JobID   string `json:"job_id"`
	BuildID string `json:"build_id"`
	StepKey string `json:"step_key"`
	// Attempt fences every later write about this job.
	Attempt int `json:"attempt"`
	// LeaseTTLMillis is the lease's lifetime; heartbeat at a third of it.
	LeaseTTLMillis int64    `json:"lease_ttl_ms"`
	Command        string   `json:"command"`
	Env            []string `json:"env"` // the complete environment, later entries win
	// Secrets are the values of the secrets the step names (and no other secret of the
	// build), by name: the agent adds NAME=value to Env for the step only and masks every
	// value in what it uploads (log chunks, error messages). Never logged, never committed.
	Secrets map[string]string `json:"secrets,omitempty"`
	// Exactly one of Image (a root step) and ParentSnapshot (a builds_in child) is set. The
	// claim's placement guarantees the parent's snapshot is on this agent.
	Image          string `json:"image,omitempty"`
	ParentSnapshot string `json:"parent_snapshot,omitempty"`
	// SourceDigest names the build's source archive ("sha256:…", fetch with PathSource),
	// "" for a build without source.
	SourceDigest   string `json:"source_digest,omitempty"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"` // the server enforces it (heartbeat Stop)
	// NeedsSnapshot: after exit 0, commit and report the snapshot (children or a cache key).
	// Ephemeral says the snapshot only lives for the build (no cache key).
	NeedsSnapshot bool   `json:"needs_snapshot"`
	Ephemeral     bool   `json:"ephemeral"`
	CacheKey      string `json:"cache_key,omitempty"`
	CacheScope    string `json:"cache_scope,omitempty"`
	// CacheDirs are the step's cache_dirs (paths in the machine), kept on the agent's state
	// dir per CacheDirOrg, CacheDirPipeline and path (vm.CacheDir).
	CacheDirs        []string `json:"cache_dirs,omitempty"`
	CacheDirOrg      string   `json:"cache_dir_org,omitempty"`
	CacheDirPipeline string   `json:"cache_dir_pipeline,omitempty"`
	// Artifacts are the step's artifacts patterns (clean, relative to /workspace): after
	// exit 0 the agent commits (NeedsSnapshot is set), copies the matching files out of the
	// snapshot (vm.ArtifactCopier), uploads each (PathArtifact) and lists them in Finish.
	Artifacts []string `json:"artifacts,omitempty"`
}

// LeaseTTL is the Job's lease lifetime.
func (j Job) LeaseTTL() time.Duration { return time.Duration(j.LeaseTTLMillis) * time.Millisecond }

// Fence names an attempt of a job: the body of Start and Heartbeat.
//
// Start (POST PathStart): assigned → running. Fenced by attempt; idempotent (a repeat of the
// current attempt returns the job as it is).
//
// Heartbeat (POST PathHeartbeat): extends the lease of the current attempt to now+TTL and
// answers whether to stop. Fenced by attempt; idempotent (the lease only moves forward).
type Fence struct {
	Attempt int `json:"attempt"`
}

// Stop reasons of a heartbeat reply.
const (
	StopCancel  = "cancel"  // the build (or fail-fast) canceled the step
	StopTimeout = "timeout" // the step's timeout passed
)

// State answers Start, Heartbeat and Finish: the job's state after the call.
type State struct {
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
	// Stop is set when the running step must be stopped now (cancel its process tree and
	// finish with any exit code: the server records canceled or timed_out).
	Stop           string `json:"stop,omitempty"`
	LeaseTTLMillis int64  `json:"lease_ttl_ms,omitempty"`
	// Next answers a Finish's Next: the job claimed for the agent, nil for none (hm
	// extension).
	Next *Job `json:"next,omitempty"`
}

// Stream kinds of a chunk (remote.md stream_kind).
const (
	Stdout = 0
	Stderr = 1
	System = 2
)

// Chunk is one line of output (without its newline). Seq counts from 1 per attempt.
type Chunk struct {
	Seq     int64     `json:"seq"`
	Stream  int       `json:"stream"`
	Content string    `json:"content"`
	TS      time.Time `json:"ts"`
}

// Logs (POST PathLogs) appends ordered chunks of an attempt. Fenced by attempt; idempotent:
// chunks are keyed by (job, attempt, seq) and a repeat is ignored. The reply's Contiguous is
// the highest seq such that every chunk from 1 to it is stored: the agent drops what it holds
// up to there and resends from Contiguous+1 (after a lost reply, a connection cut, a gap).
type Logs struct {
	Attempt int     `json:"attempt"`
	Chunks  []Chunk `json:"chunks"`
}

// LogsAck answers Logs.
type LogsAck struct {
	Contiguous int64 `json:"contiguous"`
}

// Finish (POST PathFinish) records the attempt's outcome. Fenced by attempt; idempotent (a
// repeat of the recorded outcome returns the job). 409 for an older attempt: drop the work.
// The agent finishes only after Logs acknowledged every chunk (Contiguous = its last seq).
type Finish struct {
	Attempt        int    `json:"attempt"`
	ExitCode       int    `json:"exit_code"`
	Snapshot       string `json:"snapshot,omitempty"`
	DurationMillis int64  `json:"duration_ms"`
	// ErrorCode and ErrorMessage report an infrastructure failure (the step could not run:
	// image missing, source unreadable); ExitCode is then meaningless.
	ErrorCode    string `json:"error_code,omitempty"`
	ErrorMessage string `json:"error_message,omitempty"`
	// Artifacts are the files the step's artifacts patterns matched, each uploaded before
	// (PathArtifact): the server refuses a Finish naming one it does not hold. At most
	// MaxArtifacts.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	// ArtifactWarnings are the copy's warnings (a pattern matching nothing, a symlink not
	// copied): the server logs them in the step's log, and again on every cache hit, as a
	// local build does. At most MaxArtifactWarnings.
	ArtifactWarnings []string `json:"artifact_warnings,omitempty"`
	// Next, when set, claims the agent's next step in the same call (hm extension): once
	// the outcome is recorded, the server claims as for Claim but waits at most
	// FinishNextWait (its WaitSeconds is ignored), and answers the job in State.Next, or
	// none. A step of a chain is released right after its parent finished, so it is
	// usually there within the wait, and the agent saves a round trip per step; with none
	// the agent claims as usual. A Finish claims at most one job, on any replica: a repeat
	// (a lost reply) answers the job the first one claimed, same attempt, lease renewed,
	// while it is not started, and claims none once that job was started or requeued.
	Next *Claim `json:"next,omitempty"`
}

// FinishNextWait bounds how long a Finish with Next waits for a step to claim: short, since
// the finish's answer waits with it.
const FinishNextWait = 100 * time.Millisecond

// Artifact is one artifact file: its path relative to /workspace (slash-separated), size and
// sha256 (hex), as the step_artifact event lists it.
type Artifact struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Artifact upload (PUT PathArtifact?attempt=N, the body the file's bytes, digest
// "sha256:<hex>"): stores the bytes in the server's blob dir, content-addressed. Fenced by
// attempt (a job no longer leased to it answers 409); idempotent (the same bytes are the same
// blob). The server checks the bytes against the digest (422 artifact_digest_mismatch) and
// refuses one larger than MaxArtifactBytes (413).
const (
	MaxArtifacts        = 10_000
	MaxArtifactWarnings = 1000
	MaxArtifactBytes    = int64(4 << 30)
	// MaxFinishBody bounds a Finish body: MaxArtifacts entries of a long path each.
	MaxFinishBody = 32 << 20
)

// Source (GET PathSource) answers the build's source archive by digest, as stored once. A
// read: idempotent. The agent checks the bytes against the digest (source.ExtractArchive).
