package errs

import "fmt"

// Typed errors of the engine: a class plus the fields a front end needs to say what to do.
// Backends and the image store return these instead of advice: only the front end knows its
// own flags and commands (hm's CLI writes `--map-image …`; a remote agent's user has no such
// flag). internal/cli turns them into the `  fix    …` line.

// Where an image was looked for (ImageError.Where).
const (
	InDocker   = "docker"   // the Docker daemon's images
	InStore    = "store"    // hm's image store, the sandbox backend's images
	InRegistry = "registry" // the image's registry, pulled from
)

// ImageError is an image that could not be provided. errors.Is(err, Class) holds, and so does
// errors.Is for the cause.
type ImageError struct {
	Ref string // the reference asked for
	// "docker", "sandbox"; "" from the image store itself; "auto" when every backend auto
	// could use was asked.
	Backend string
	Where   string // InDocker, InStore or InRegistry; under "auto" each place, comma-separated
	// Class is ErrImageNotFound, or ErrUnavailable when the registry could not be reached.
	Class error
	Msg   string // what happened, for a person, without advice
	Err   error  // the cause (a failed pull), or nil
}

func (e *ImageError) Error() string   { return e.Msg }
func (e *ImageError) Unwrap() []error { return nonNil(e.Class, e.Err) }

// UnavailableError is a backend that cannot work on this machine.
type UnavailableError struct {
	Backend string // "docker", "sandbox"
	// Address is the daemon address that did not answer; "" when the client could not even
	// be set up (a malformed DOCKER_HOST) or the backend has no daemon.
	Address string
	// Missing is a program the backend needs that is not installed ("slirp4netns"), or
	// "root" for what only root may do (the host backend's cache_dirs).
	Missing string
	Msg     string // what is missing, for a person, without advice
	Err     error  // the cause, or nil
}

func (e *UnavailableError) Error() string   { return e.Msg }
func (e *UnavailableError) Unwrap() []error { return nonNil(ErrUnavailable, e.Err) }

// nonNil drops nil errors: errors.As does not accept a nil in an Unwrap list.
func nonNil(errs ...error) []error {
	out := errs[:0]
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

// Code is the stable code of the error line: image_not_found or registry_unavailable.
func (e *ImageError) Code() string {
	if e.Class == ErrUnavailable {
		return "registry_unavailable"
	}
	return "image_not_found"
}

// Code is the stable code of the error line, e.g. docker_unavailable.
func (e *UnavailableError) Code() string { return e.Backend + "_unavailable" }

// RunnerError is a step that names a runner the executor cannot give it (the local executor
// runs a whole build on one VM backend). Class ErrUsage: the choice of backend is the user's.
type RunnerError struct {
	Step    string // the step's key
	Runner  string // the runner it names
	Backend string // the backend the build runs on
}

func (e *RunnerError) Error() string {
	return fmt.Sprintf("step '%s' names runner %q, but this build runs every step on the %s backend", e.Step, e.Runner, e.Backend)
}
func (e *RunnerError) Unwrap() error { return ErrUsage }

// Code is the stable code of the error line.
func (e *RunnerError) Code() string { return "runner_mismatch" }

// StateDirError is hm's state directory that cannot be written (read-only, full, not
// hm's to write): a machine's setup at fault, not the pipeline's.
type StateDirError struct {
	Dir string
	Err error // the cause
}

func (e *StateDirError) Error() string {
	return fmt.Sprintf("hm cannot write its state directory %s: %v", e.Dir, e.Err)
}
func (e *StateDirError) Unwrap() []error { return nonNil(ErrUnavailable, e.Err) }

// Code is the error's code in the `error[code]` line.
func (e *StateDirError) Code() string { return "state_dir" }

// ArtifactLimitError is a step's artifacts beyond a step's bounds (files, bytes): the step
// fails as one that could not run, and is not retried (the same files would fail again). Its
// class is ErrInvalid; internal/cli writes the fix.
type ArtifactLimitError struct {
	Msg string // what was found, with the bounds, without advice
	Err error  // the copy's error, or nil when only its text is known (a remote agent's)
}

func (e *ArtifactLimitError) Error() string   { return e.Msg }
func (e *ArtifactLimitError) Unwrap() []error { return nonNil(ErrInvalid, e.Err) }

// Code is the error's code in the `error[code]` line, and an agent's Finish error code.
func (e *ArtifactLimitError) Code() string { return CodeArtifactsTooLarge }

// RemoteStepError is why a remote build's step could not run, as its job reports it
// (listJobs: error_code, error_message): the first such step of a build that failed. Its
// class is ErrInfra; internal/cli writes the fix by its code.
type RemoteStepError struct {
	Step    string // the step's key
	JobCode string // the job's error_code: agent_lost, agent_error, artifacts_too_large, ...
	Msg     string // the job's error_message
}

func (e *RemoteStepError) Error() string {
	return fmt.Sprintf("step '%s' could not run: %s", e.Step, e.Msg)
}
func (e *RemoteStepError) Unwrap() error { return ErrInfra }

// Code is the error's code in the `error[code]` line: the job's.
func (e *RemoteStepError) Code() string { return e.JobCode }

// CodeArtifactsTooLarge is ArtifactLimitError's code.
const CodeArtifactsTooLarge = "artifacts_too_large"

// Bounds on what hm reads (LimitError.Limit); the code of a LimitError is its Format, "_"
// and its Limit: yaml_too_large, ir_too_deep, ...
const (
	LimitSize    = "too_large"       // bytes of the file
	LimitDepth   = "too_deep"        // nesting of collections
	LimitAliases = "alias_expansion" // YAML nodes with every alias expanded
	LimitSteps   = "too_many_steps"
	LimitEdges   = "too_many_edges" // including those wait barriers imply
	LimitEnv     = "too_many_env"   // environment entries of one step
)

// LimitError is a pipeline refused because it exceeds one of hm's bounds on its input, found
// before it could cost memory or time. Its class is ErrInvalid; internal/cli writes the fix.
type LimitError struct {
	Format string // "yaml" or "ir"
	File   string // the file; "" when the reader was given bytes (the caller may set it)
	Limit  string // LimitSize, LimitDepth, ...
	Max    int64  // the bound
	Msg    string // what was found, with the bound, without advice and without the file
}

func (e *LimitError) Error() string {
	if e.File == "" {
		return e.Msg
	}
	return e.File + ": " + e.Msg
}
func (e *LimitError) Unwrap() error { return ErrInvalid }
func (e *LimitError) Code() string  { return e.Format + "_" + e.Limit }

// RemoteError is a call to an hm (or Harmont) server that failed: no answer, or an answer in
// the error envelope. Class is ErrUnavailable (no answer, or a 5xx), ErrAuth (401),
// ErrNotFound (404: the org, pipeline or build), ErrInvalid (422: the IR or the request
// rejected) or ErrUsage (413: the source too large).
type RemoteError struct {
	Server string // the base URL
	Op     string // the operation: createBuild, cancelBuild, buildEvents, ...
	Status int    // the HTTP status; 0 when the server did not answer
	// APICode and RequestID are the envelope's code and request_id ("" without an envelope).
	APICode   string
	RequestID string
	Msg       string // what happened, for a person, without advice
	Class     error
	Err       error // the cause (a dial error), or nil
}

func (e *RemoteError) Error() string   { return e.Msg }
func (e *RemoteError) Unwrap() []error { return nonNil(e.Class, e.Err) }

// Code is the stable code of the error line: server_unreachable, unauthorized, the server's
// own code for a 404 or 422 (organization_not_found, build_plan_rejected, ...), else
// server_error.
func (e *RemoteError) Code() string {
	switch {
	case e.Status == 0:
		return "server_unreachable"
	case e.Status == 401:
		return "unauthorized"
	case (e.Status == 404 || e.Status == 422 || e.Status == 413) && e.APICode != "":
		return e.APICode
	}
	return "server_error"
}
