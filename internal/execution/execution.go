// Package execution is the boundary between the CLI and whatever executes a build: the local
// backend (the scheduler over a VM backend on this machine) and, later, the remote backend (an
// hm server running the build on agents). Both stream the same build events.
package execution

import (
	"context"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
)

// Backend starts builds. Implementations are safe for concurrent use.
type Backend interface {
	// Start validates what it needs (source packing, cache keys, the VM backend) and starts
	// the build. An error means nothing ran and no build_start was emitted. ctx bounds only
	// the start; use Handle.Cancel to cancel the build.
	Start(ctx context.Context, req Request) (Handle, error)
}

// Request is one build.
type Request struct {
	Pipeline  *ir.Pipeline
	Slug      string // pipeline slug, part of computed cache keys
	SourceDir string
	Options   Options
}

// Options mirror the flags of `hm run`.
type Options struct {
	Parallelism int // >= 1
	KeepGoing   bool
	NoCache     bool
	Timeout     time.Duration // overrides the pipeline's timeout_seconds when > 0
	Env         []string      // -e K=V
	MapImage    map[string]string
	// No verbosity here: a backend streams every event, and how much of it to show is the
	// front end's choice (render.Options.Verbose).
}

// Handle is a running build.
//
// Events delivers every event of the build, losslessly and in order per step, and is closed
// after build_end; the consumer may be arbitrarily slow. Cancel asks the build to stop (the
// user's Ctrl-C: running steps are killed, the build ends Canceled); it is idempotent and
// safe from any goroutine. Wait blocks until the build has ended and cleaned up.
type Handle interface {
	Events() <-chan events.Event
	Cancel()
	Wait() Outcome
}

// Outcome is how a build ended.
type Outcome struct {
	// ExitCode is hm's process exit code for the build (0, 1, 124, 130).
	ExitCode int
	// Err is the infrastructure error of the first step that could not run (daemon gone,
	// image missing), if any. It keeps its class and fields (errs.ImageError, ...) so the
	// front end can say what to do. It does not change ExitCode: such a step fails the build
	// like any failure (spec/semantics.md).
	Err error
}
