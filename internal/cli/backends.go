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
	networkNone   bool
}

// openVM returns the VM backend for --backend. auto picks docker when a daemon answers (unless
// the pipeline only uses the `host` image), else the sandbox when this process may create
// namespaces, else the host backend.
func openVM(ctx context.Context, name, stateDir string, o vmOptions) (vm.Backend, error) {
	stateDir = filepath.Clean(stateDir)
	newSandbox := func() (vm.Backend, error) {
		return sandbox.New(stateDir, imagestore.Open(stateDir), sandbox.Options{NetworkNone: o.networkNone})
	}
	switch name {
	case "host":
		return host.New(stateDir), nil
	case "docker":
		return docker.New(ctx, docker.Options{StateDir: stateDir})
	case "sandbox":
		return newSandbox()
	case "auto":
		if !o.hostImageOnly {
			b, err := docker.New(ctx, docker.Options{StateDir: stateDir, PingTimeout: 2 * time.Second})
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
		if !errors.Is(err, errs.ErrUnavailable) {
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
