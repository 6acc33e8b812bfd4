package cli

import (
	"context"
	"path/filepath"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/host"
)

// openVM returns the VM backend for --backend. auto resolves to the best backend available.
func openVM(_ context.Context, name, stateDir string) (vm.Backend, error) {
	switch name {
	case "auto", "host":
		return host.New(filepath.Clean(stateDir)), nil
	case "docker", "sandbox", "remote":
		return nil, errs.New(errs.ErrUnavailable, "backend_unavailable",
			"use --backend host (or auto)", "the %s backend is not available in this build of hm", name)
	}
	return nil, errs.New(errs.ErrUsage, "usage", "use --backend auto, docker, sandbox, host or remote",
		"unknown backend %q", name)
}
