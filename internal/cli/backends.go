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

// openVM returns the VM backend for --backend. auto picks docker when a daemon answers, else
// the host backend.
func openVM(ctx context.Context, name, stateDir string) (vm.Backend, error) {
	stateDir = filepath.Clean(stateDir)
	switch name {
	case "host":
		return host.New(stateDir), nil
	case "docker":
		return docker.New(ctx, docker.Options{StateDir: stateDir})
	case "auto":
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
