package cli

import (
	"context"
	"path/filepath"

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
	network string // "private", "none" or "host"
	// Limits of every step; 0: none. The host backend has no way to apply them.
	pidsLimit, memory int64
	cpus              float64
}

// hostWarning is printed once per build that runs on the host backend, whichever way it was
// chosen (spec/semantics.md § Isolation); when auto chose it, the same line says why.
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

// openVM returns the VM backend named docker, sandbox or host; chooseVM also takes auto.
func openVM(ctx context.Context, name, stateDir string, o vmOptions) (vm.Backend, error) {
	stateDir = filepath.Clean(stateDir)
	switch name {
	case "host":
		return host.New(stateDir), nil
	case "docker":
		return docker.New(ctx, o.docker(stateDir))
	case "sandbox":
		return sandbox.New(stateDir, imagestore.Open(stateDir), o.sandbox())
	case "remote", "cloud":
		// runBuild sends these to execution/remote before any VM backend is opened.
		return nil, errs.New(errs.ErrUsage, "usage", "use --backend docker, sandbox or host (or auto)",
			"the remote backend runs no steps on this machine")
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
