// Package events defines hm's build event stream (spec/events.md): the variants, their NDJSON
// encoding, and a lossless queue that decouples the engine from slow consumers.
//
// The local backend, the remote backend and the server all speak exactly this format, so a
// single renderer serves every backend.
package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kind names an event variant; it is the "kind" field on the wire.
type Kind string

const (
	KindBuildStart    Kind = "build_start"
	KindBuildAccepted Kind = "build_accepted"
	KindStepQueued    Kind = "step_queued"
	KindStepStart     Kind = "step_start"
	KindStepLog       Kind = "step_log"
	KindStepCacheHit  Kind = "step_cache_hit"
	KindStepEnd       Kind = "step_end"
	KindStepSkipped   Kind = "step_skipped"
	KindStepRetry     Kind = "step_retry"
	KindStepArtifact  Kind = "step_artifact"
	KindChainFailed   Kind = "chain_failed"
	KindBuildEnd      Kind = "build_end"
)

// Stream names of step_log.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Skip reasons of step_skipped.
const (
	SkipDependencyFailed = "dependency_failed"
	SkipCanceled         = "canceled"
)

// Event is one build event. Exactly one of the pointer fields is set, matching Kind; the
// concrete payload types below carry the fields of spec/events.md.
type Event struct {
	Kind          Kind
	BuildStart    *BuildStart
	BuildAccepted *BuildAccepted
	StepQueued    *StepQueued
	StepStart     *StepStart
	StepLog       *StepLog
	StepCacheHit  *StepCacheHit
	StepEnd       *StepEnd
	StepSkipped   *StepSkipped
	StepRetry     *StepRetry
	StepArtifact  *StepArtifact
	ChainFailed   *ChainFailed
	BuildEnd      *BuildEnd

	// Wire, when set, is the event's encoding, exactly what MarshalJSON makes of the payload
	// (never with a newline): Decode keeps the bytes it read and a writer that encoded the
	// event may hand them on (Encode), so a log line crossing a client is not encoded again
	// for each of its outputs. Whoever changes the payload of an event must clear it.
	Wire []byte `json:"-"`
}

// Plan summarises the plan in build_start.
type Plan struct {
	StepCount     int    `json:"step_count"`
	ChainCount    int    `json:"chain_count"`
	DefaultRunner string `json:"default_runner"`
}

type BuildStart struct {
	RunID     string    `json:"run_id"`
	Plan      Plan      `json:"plan"`
	StartedAt time.Time `json:"started_at"`
}

// AcceptedBuild identifies a build accepted by a remote server.
type AcceptedBuild struct {
	RunID    string `json:"run_id"`
	Number   int64  `json:"number"`
	Org      string `json:"org"`
	Pipeline string `json:"pipeline"`
}

type BuildAccepted struct {
	Build    AcceptedBuild `json:"build"`
	WatchURL *string       `json:"watch_url"`
}

type StepQueued struct {
	StepID      string  `json:"step_id"`
	Key         string  `json:"key"`
	ChainIdx    int     `json:"chain_idx"`
	ParentKey   *string `json:"parent_key"`
	DisplayName string  `json:"display_name"`
}

type StepStart struct {
	StepID string  `json:"step_id"`
	Runner string  `json:"runner"`
	Image  *string `json:"image"`
}

type StepLog struct {
	StepID string    `json:"step_id"`
	Stream string    `json:"stream"`
	Line   string    `json:"line"`
	TS     time.Time `json:"ts"`
	// Attempt is the attempt the line belongs to, from 1 (our addition; 0 when another
	// executor's events do not say).
	Attempt int `json:"attempt"`
}

type StepCacheHit struct {
	StepID string `json:"step_id"`
	Key    string `json:"key"`
	Tag    string `json:"tag"`
	// Entry is the registry entry's id, as hm cache ls shows it (our addition; null when the
	// cache has no ids, e.g. another backend's events).
	Entry *string `json:"entry"`
}

type StepEnd struct {
	StepID     string  `json:"step_id"`
	ExitCode   int     `json:"exit_code"`
	DurationMS int64   `json:"duration_ms"`
	Snapshot   *string `json:"snapshot"`
	// Attempt is the attempt that ended the step, from 1: the build counts this one (our
	// addition, see StepRetry).
	Attempt int `json:"attempt"`
}

// StepRetry (our addition) says an attempt of a step failed and the step runs again on a
// fresh machine: attempt Attempt+1 of at most Attempts. The step's one step_start and one
// step_end enclose all its attempts; its step_log lines carry their attempt.
type StepRetry struct {
	StepID   string    `json:"step_id"`
	Attempt  int       `json:"attempt"`   // the attempt that failed
	Attempts int       `json:"attempts"`  // the most the step may run
	ExitCode int       `json:"exit_code"` // of the failed attempt (-1: it could not run)
	Message  string    `json:"message"`
	TS       time.Time `json:"ts"`
}

// StepArtifact (our addition) lists one file a step's `artifacts` copied out of its machine,
// after the step succeeded or hit the cache and before its step_end: Path is relative to
// /workspace and to the step's artifacts directory (STEP below the build's, named in the
// build's manifest.json), Size its bytes, SHA256 their hex digest.
type StepArtifact struct {
	StepID string    `json:"step_id"`
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"`
	TS     time.Time `json:"ts"`
}

type StepSkipped struct {
	StepID string    `json:"step_id"`
	Reason string    `json:"reason"`
	TS     time.Time `json:"ts"`
}

type ChainFailed struct {
	ChainIdx      int       `json:"chain_idx"`
	FailedStepID  string    `json:"failed_step_id"`
	FailedStepKey string    `json:"failed_step_key"`
	ExitCode      int       `json:"exit_code"`
	Message       string    `json:"message"`
	TS            time.Time `json:"ts"`
}

type BuildEnd struct {
	ExitCode   int   `json:"exit_code"`
	DurationMS int64 `json:"duration_ms"`
}

// payload returns the variant's payload, or nil when Kind and payload disagree.
func (e Event) payload() any {
	switch e.Kind {
	case KindBuildStart:
		return nilIf(e.BuildStart)
	case KindBuildAccepted:
		return nilIf(e.BuildAccepted)
	case KindStepQueued:
		return nilIf(e.StepQueued)
	case KindStepStart:
		return nilIf(e.StepStart)
	case KindStepLog:
		return nilIf(e.StepLog)
	case KindStepCacheHit:
		return nilIf(e.StepCacheHit)
	case KindStepEnd:
		return nilIf(e.StepEnd)
	case KindStepSkipped:
		return nilIf(e.StepSkipped)
	case KindStepRetry:
		return nilIf(e.StepRetry)
	case KindStepArtifact:
		return nilIf(e.StepArtifact)
	case KindChainFailed:
		return nilIf(e.ChainFailed)
	case KindBuildEnd:
		return nilIf(e.BuildEnd)
	}
	return nil
}

func nilIf[T any](p *T) any {
	if p == nil {
		return nil
	}
	return p
}

// StepID returns the step the event belongs to, or "" for build-level events.
func (e Event) StepID() string {
	switch {
	case e.StepQueued != nil:
		return e.StepQueued.StepID
	case e.StepStart != nil:
		return e.StepStart.StepID
	case e.StepLog != nil:
		return e.StepLog.StepID
	case e.StepCacheHit != nil:
		return e.StepCacheHit.StepID
	case e.StepEnd != nil:
		return e.StepEnd.StepID
	case e.StepSkipped != nil:
		return e.StepSkipped.StepID
	case e.StepRetry != nil:
		return e.StepRetry.StepID
	case e.StepArtifact != nil:
		return e.StepArtifact.StepID
	case e.ChainFailed != nil:
		return e.ChainFailed.FailedStepID
	}
	return ""
}

// WithStepID returns e with its step's id (StepID) replaced by id: the payload is copied, not
// changed in place (it may be shared with other readers), and the encoded bytes (Wire) are
// dropped since they no longer match. An event of no step is returned as it is.
func (e Event) WithStepID(id string) Event {
	switch {
	case e.StepQueued != nil:
		e.StepQueued = withID(e.StepQueued, func(c *StepQueued) { c.StepID = id })
	case e.StepStart != nil:
		e.StepStart = withID(e.StepStart, func(c *StepStart) { c.StepID = id })
	case e.StepLog != nil:
		e.StepLog = withID(e.StepLog, func(c *StepLog) { c.StepID = id })
	case e.StepCacheHit != nil:
		e.StepCacheHit = withID(e.StepCacheHit, func(c *StepCacheHit) { c.StepID = id })
	case e.StepEnd != nil:
		e.StepEnd = withID(e.StepEnd, func(c *StepEnd) { c.StepID = id })
	case e.StepSkipped != nil:
		e.StepSkipped = withID(e.StepSkipped, func(c *StepSkipped) { c.StepID = id })
	case e.StepRetry != nil:
		e.StepRetry = withID(e.StepRetry, func(c *StepRetry) { c.StepID = id })
	case e.StepArtifact != nil:
		e.StepArtifact = withID(e.StepArtifact, func(c *StepArtifact) { c.StepID = id })
	case e.ChainFailed != nil:
		e.ChainFailed = withID(e.ChainFailed, func(c *ChainFailed) { c.FailedStepID = id })
	default:
		return e
	}
	e.Wire = nil
	return e
}

// withID is a copy of *p changed by set.
func withID[T any](p *T, set func(*T)) *T {
	c := *p
	set(&c)
	return &c
}

// MarshalJSON writes the wire form: the payload's fields with "kind" first. See Encode.
func (e Event) MarshalJSON() ([]byte, error) {
	b, err := Encode(e)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// Encode returns the wire form of e: e.Wire when set (not to be modified), else the payload
// encoded. json.Marshal(e) gives the same bytes, at the cost of validating them again.
func Encode(e Event) ([]byte, error) {
	if e.Wire != nil {
		return e.Wire, nil
	}
	if l := e.StepLog; l != nil && e.Kind == KindStepLog {
		if b, ok := appendStepLog(make([]byte, 0, 96+len(l.Line)), l); ok {
			return b, nil
		}
	}
	return encode(e)
}

func encode(e Event) ([]byte, error) {
	p := e.payload()
	if p == nil {
		return nil, fmt.Errorf("events: %q event without its payload", e.Kind)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	kind, _ := json.Marshal(string(e.Kind))
	out := make([]byte, 0, len(body)+len(kind)+9)
	out = append(out, `{"kind":`...)
	out = append(out, kind...)
	if len(body) > 2 {
		out = append(out, ',')
		out = append(out, body[1:]...)
	} else {
		out = append(out, '}')
	}
	return out, nil
}

// UnmarshalJSON reads the wire form back; see Decode.
func (e *Event) UnmarshalJSON(b []byte) error {
	var head struct {
		Kind Kind `json:"kind"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	*e = Event{Kind: head.Kind}
	var dst any
	switch head.Kind {
	case KindBuildStart:
		e.BuildStart = new(BuildStart)
		dst = e.BuildStart
	case KindBuildAccepted:
		e.BuildAccepted = new(BuildAccepted)
		dst = e.BuildAccepted
	case KindStepQueued:
		e.StepQueued = new(StepQueued)
		dst = e.StepQueued
	case KindStepStart:
		e.StepStart = new(StepStart)
		dst = e.StepStart
	case KindStepLog:
		e.StepLog = new(StepLog)
		dst = e.StepLog
	case KindStepCacheHit:
		e.StepCacheHit = new(StepCacheHit)
		dst = e.StepCacheHit
	case KindStepEnd:
		e.StepEnd = new(StepEnd)
		dst = e.StepEnd
	case KindStepSkipped:
		e.StepSkipped = new(StepSkipped)
		dst = e.StepSkipped
	case KindStepRetry:
		e.StepRetry = new(StepRetry)
		dst = e.StepRetry
	case KindStepArtifact:
		e.StepArtifact = new(StepArtifact)
		dst = e.StepArtifact
	case KindChainFailed:
		e.ChainFailed = new(ChainFailed)
		dst = e.ChainFailed
	case KindBuildEnd:
		e.BuildEnd = new(BuildEnd)
		dst = e.BuildEnd
	default:
		return fmt.Errorf("events: unknown kind %q", head.Kind)
	}
	return json.Unmarshal(b, dst)
}
