// Package execution is the boundary between the CLI and whatever executes a build: the local
// backend (the scheduler over a VM backend on this machine) and, later, the remote backend (an
// hm server running the build on agents). Both stream the same build events.
package execution

import (
	"context"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/prepare"
)

// Backend starts builds. Implementations are safe for concurrent use.
type Backend interface {
	// Start checks what it needs (the VM backend, the steps' runners; a server) and starts
	// the build, prepared before (package prepare: plan, cache keys, source). An error means
	// nothing ran and no build_start was emitted. ctx bounds only the start; use
	// Handle.Cancel to cancel the build. The Request's Build must outlive the Handle's Wait.
	Start(ctx context.Context, req Request) (Handle, error)
}

// Request is one build: a prepared build and nothing local to this machine but what the
// Build itself holds (its source tree is read from Build.Source.Dir by a local backend; a
// remote one sends Build.IR verbatim, Build.Source.Archive and Build.Options instead).
type Request struct {
	Build *prepare.Build
	// ArtifactsDir is the absolute directory steps' artifacts are written to, a build's in
	// ArtifactsDir/BUILD/ (scheduler.Options.ArtifactsDir); "" collects none.
	ArtifactsDir string
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
