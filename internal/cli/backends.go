package cli

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/docker"
	"github.com/hmci/hm/internal/vm/host"
)

// HostImage is the pseudo-image naming the host's own root filesystem (sandbox backend).
const HostImage = "host"

// openVM returns the VM backend for --backend. auto picks docker when a daemon answers, else
// the host backend; a pipeline whose root images are all the `host` pseudo-image skips
// docker, which cannot run it.
func openVM(ctx context.Context, name, stateDir string, hostImageOnly bool) (vm.Backend, error) {
	stateDir = filepath.Clean(stateDir)
	switch name {
	case "host":
		return host.New(stateDir), nil
	case "docker":
		return docker.New(ctx, docker.Options{StateDir: stateDir})
	case "auto":
		if hostImageOnly {
			return host.New(stateDir), nil
		}
		b, err := docker.New(ctx, docker.Options{StateDir: stateDir, PingTimeout: 2 * time.Second})
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, errs.ErrUnavailable) {
			return nil, err
		}
		return host.New(stateDir), nil
	case "sandbox", "remote":
		return nil, errs.New(errs.ErrUnavailable, "backend_unavailable",
			"use --backend docker or host (or auto)", "the %s backend is not available in this build of hm", name)
	}
	return nil, errs.New(errs.ErrUsage, "usage", "use --backend auto, docker, sandbox, host or remote",
		"unknown backend %q", name)
}

// closeVM releases a backend's connections, if it holds any.
func closeVM(b vm.Backend) {
	if c, ok := b.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}
