package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
)

// A continuable machine (vm.Spec.Continuable) is a started container whose init idles, and
// each step of a linear chain is an exec in it: a builds_in child then Continues in the same
// container (vm.Continuer) instead of paying a commit and a container start, which is most of
// a trivial step's cost on this daemon (bench/buildkit). Commit still works when the chain
// needs a snapshot (a cached step): the daemon pauses the idle container and commits it.

// idleScript is the container's init: a shell builtin loop blocking on the open stdin, so no
// binary beyond /bin/sh is needed. SIGCHLD ignored makes the kernel reap the orphans a step
// leaves to init (stepWrapper kills them), which would otherwise stay as zombies holding
// PIDs (and passing `kill -0`) in the next step. A reap can cut a read short, hence the
// loop around it rather than `while read`. (The daemon holds stdin open while the container
// lives, so the read blocks.)
const idleScript = `trap '' CHLD; while :; do read -r _; done`

// stepWrapper runs the step as `/bin/sh -c CMD` (so $0 and the exit status are those of the
// ordinary lifecycle), then kills every process the step left behind: kill -1 spares only the
// caller and the PID namespace's init, so the next step starts with no process of this one,
// as if from a snapshot.
const stepWrapper = `/bin/sh -c "$1"; s=$?; kill -9 -1 2>/dev/null; exit $s`

// idleConfig turns a step's container config into the idle container's. The environment is
// the image's alone: each exec brings its own step's Spec.Env, and no step's variables may
// reach a later step through the container.
func idleConfig(cfg *container.Config) {
	cfg.Entrypoint = []string{"/bin/sh", "-c", idleScript}
	cfg.Env = nil
	cfg.OpenStdin = true
	cfg.AttachStdout, cfg.AttachStderr = false, false
}

var _ vm.Continuer = (*machine)(nil)

// Continue implements vm.Continuer for a continuable machine that ran to exit code 0.
func (m *machine) Continue(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.exec:
		return nil, fmt.Errorf("docker: continue: %w: the machine was not created continuable", errs.ErrInfra)
	case m.Destroyed || m.removed:
		return nil, fmt.Errorf("docker: continue: %w: machine destroyed", errs.ErrInfra)
	case !m.Ran || m.Exit != 0:
		return nil, fmt.Errorf("docker: continue: %w: the step did not run to exit code 0", errs.ErrInfra)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("docker: continue: %w", err)
	}
	owner, err := m.b.ownerOf(spec.Owner.PID)
	if err != nil {
		return nil, fmt.Errorf("docker: continue: %w: owner process %d: %v", errs.ErrInfra, spec.Owner.PID, err)
	}
	spec.Image, spec.Parent = m.spec.Image, m.spec.Parent
	m.removed = true // the child owns the container now, and its network holder
	net := m.net
	m.net = nil
	return &machine{b: m.b, id: m.id, spec: spec, owner: owner, baseEnv: m.baseEnv, exec: true, netName: m.netName, net: net}, nil
}

// runExec is Run for a continuable machine: the step is an exec in the idle container.
func (m *machine) runExec(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	ex, err := m.b.cli.ContainerExecCreate(ctx, m.id, container.ExecOptions{
		Cmd:          []string{"/bin/sh", "-c", stepWrapper, "sh", m.spec.Cmd},
		Env:          m.spec.Env,
		WorkingDir:   vm.Workdir,
		User:         "0:0",
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return -1, m.runErr(ctx, "exec create", err)
	}
	// Not canceled with ctx, like a container start: the kill below ends the exec.
	bg := context.WithoutCancel(ctx)
	hj, err := m.b.cli.ContainerExecAttach(bg, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, m.runErr(ctx, "exec start", err)
	}
	defer hj.Close()
	// On ctx done, SIGKILL the container: its init dies, and the kernel kills every process
	// in its PID namespace. The chain ends there; the step's children do not run.
	stop := context.AfterFunc(ctx, func() { _ = m.b.cli.ContainerKill(bg, m.id, "KILL") })
	defer stop()
	outW, errW := &latchWriter{w: orDiscard(stdout)}, &latchWriter{w: orDiscard(stderr)}
	_, copyErr := stdcopy.StdCopy(outW, errW, hj.Reader)

	code, err := m.execExit(bg, ex.ID)
	m.mu.Lock()
	destroyed := m.Destroyed
	m.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return -1, vm.RunAborted(ctx, "docker")
	case destroyed:
		return -1, fmt.Errorf("docker: run: %w: machine destroyed while running", errs.ErrCanceled)
	case err != nil:
		return -1, m.runErr(ctx, "exec inspect", err)
	case copyErr != nil:
		return -1, fmt.Errorf("docker: run: %w: reading output: %v", errs.ErrInfra, copyErr)
	}
	if werr := errors.Join(outW.err, errW.err); werr != nil {
		return -1, fmt.Errorf("docker: run: %w: writing output: %v", errs.ErrInfra, werr)
	}
	m.mu.Lock()
	m.Ran, m.Exit = true, code
	m.mu.Unlock()
	return code, nil
}

// execExit returns the exit code of an exec whose output stream has ended. The daemon may
// close the stream a moment before it records the exit, hence the short poll.
func (m *machine) execExit(ctx context.Context, id string) (int, error) {
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		ins, err := m.b.cli.ContainerExecInspect(ctx, id)
		if err != nil {
			return -1, err
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		if delay >= 50*time.Millisecond {
			// Still running after its stream closed: the container was killed or is dying.
			st, err := m.b.cli.ContainerInspect(ctx, m.id)
			if err == nil && !st.State.Running {
				return -1, fmt.Errorf("%w: the container exited during the step", errs.ErrInfra)
			}
		}
		time.Sleep(delay)
	}
}
