package cli

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/docker"
	"github.com/hmci/hm/internal/vm/host"
	"github.com/hmci/hm/internal/vm/sandbox"
)

// HostImage is the pseudo-image naming the host's own root filesystem (sandbox backend).
const HostImage = imagestore.HostID

// vmOptions are the backend settings that come from flags and config.
type vmOptions struct {
	// hostImageOnly: every root step starts from the `host` pseudo-image, which docker
	// cannot run.
	hostImageOnly bool
	network       string // "private", "none" or "host"
	// Limits of every step; 0: none. The host backend has no way to apply them.
	pidsLimit, memory int64
	cpus              float64
}

// hostWarning is printed once per build that runs on the host backend, whichever way it was
// chosen (spec/semantics.md § Isolation).
const hostWarning = "hm: warning: the host backend runs steps on this machine with no isolation"

func (o vmOptions) sandbox() sandbox.Options {
	return sandbox.Options{
		Network:     sandbox.NetworkMode(o.network),
		NetworkNone: o.network == "none",
		PidsMax:     o.pidsLimit, MemoryMax: o.memory, CPUs: o.cpus,
	}
}

func (o vmOptions) docker(stateDir string) docker.Options {
	mode := "" // the daemon's default bridge
	if o.network == "none" || o.network == "host" {
		mode = o.network
	}
	return docker.Options{
		StateDir: stateDir, Network: mode,
		PidsLimit: o.pidsLimit, Memory: o.memory, CPUs: o.cpus,
	}
}

// openVM returns the VM backend for --backend. auto picks docker when a daemon answers (unless
// the pipeline only uses the `host` image), else the sandbox when this process may create
// namespaces, else the host backend.
func openVM(ctx context.Context, name, stateDir string, o vmOptions) (vm.Backend, error) {
	stateDir = filepath.Clean(stateDir)
	newSandbox := func() (vm.Backend, error) {
		return sandbox.New(stateDir, imagestore.Open(stateDir), o.sandbox())
	}
	switch name {
	case "host":
		return host.New(stateDir), nil
	case "docker":
		return docker.New(ctx, o.docker(stateDir))
	case "sandbox":
		return newSandbox()
	case "auto":
		if !o.hostImageOnly {
			do := o.docker(stateDir)
			do.PingTimeout = 2 * time.Second
			b, err := docker.New(ctx, do)
			if err == nil {
				return b, nil
			}
			if !errors.Is(err, errs.ErrUnavailable) {
				return nil, err
			}
		}
		b, err := newSandbox()
		if err == nil {
			return b, nil
		}
		// Falling back to no isolation is for a machine where the sandbox cannot work (not
		// root), never because a program it needs is not installed: that is said instead.
		var ue *errs.UnavailableError
		if !errors.Is(err, errs.ErrUnavailable) || (errors.As(err, &ue) && ue.Missing != "") {
			return nil, err
		}
		return host.New(stateDir), nil
	case "remote":
		return nil, errs.New(errs.ErrUnavailable, "backend_unavailable",
			"use --backend docker, sandbox or host (or auto)", "the remote backend is not available in this build of hm")
	}
	return nil, errs.New(errs.ErrUsage, "usage", "use --backend auto, docker, sandbox, host or remote",
		"unknown backend %q", name)
}

// closeVM releases a backend's connections and helpers, if it holds any.
func closeVM(b vm.Backend) {
	if c, ok := b.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}
