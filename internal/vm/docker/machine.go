package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

// machine is one step's container.
type machine struct {
	b       *Backend
	id      string
	spec    vm.Spec
	owner   proc.Owner
	baseEnv []string // Env of the image the container was created from
	// exec: the container idles and the step runs in it by exec, so that a child can
	// Continue in it (exec.go); otherwise the step's command is the container's own.
	exec bool

	mu      sync.Mutex
	started bool // Run was called
	vm.Lifecycle
	removed bool // the container is gone, or handed on to a continuing child
	// release unlocks the cache directories of the container (cachedirs.go); nil if none.
	release func()
	// netName is the name of the network holder the container joins (netpool.go), "" for
	// none; net is that holder while the machine has it.
	netName string
	net     *holder
	// toTake: the machine is yet to take its holder (counted in its run's pend, and in its
	// want if wanted); netpool.go.
	toTake, wanted bool
}

// takeNet gives the machine its network holder, before its container starts.
func (m *machine) takeNet(ctx context.Context) error {
	if m.netName == "" {
		return nil
	}
	m.mu.Lock()
	if !m.toTake {
		m.mu.Unlock()
		return nil // it has its holder (continued), or gave it back
	}
	wanted := m.wanted
	m.toTake, m.wanted = false, false
	m.mu.Unlock()
	h, err := m.b.takeHolder(ctx, m.spec, m.owner, m.netName, wanted)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.net = h
	m.mu.Unlock()
	return nil
}

// giveBackNet hands the machine's network holder back; with m.mu held, once no process of
// the step can be left in the namespace.
func (m *machine) giveBackNet() {
	if m.net != nil {
		m.b.giveBack(m.net)
		m.net = nil
	}
	if m.toTake {
		m.b.untake(m.spec.Owner.RunID, m.wanted)
		m.toTake, m.wanted = false, false
	}
}

var _ vm.Reinjector = (*machine)(nil)

// Reinject implements vm.Reinjector: Inject into the container the step left (exited, or the
// idle container of an exec step).
func (m *machine) Reinject(ctx context.Context, ws *source.Tree) error {
	m.mu.Lock()
	err := m.CommitAllowed()
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("docker: reinject: %w", err)
	}
	return m.Inject(ctx, ws)
}

// Inject implements vm.Machine: the tree is streamed as a tar rooted at / into the created
// container's filesystem; nothing is extracted on the host.
func (m *machine) Inject(ctx context.Context, ws *source.Tree) error {
	if ws == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("docker: inject: %w", err)
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := ws.WriteTar(pw, strings.TrimPrefix(vm.Workdir, "/")+"/")
		pw.CloseWithError(err)
		werr <- err
	}()
	// A directory in the image where the tree has a file (or the reverse) is replaced, as
	// the overlay rule says.
	err := m.b.cli.CopyToContainer(ctx, m.id, "/", pr, container.CopyToContainerOptions{AllowOverwriteDirWithFile: true})
	pr.CloseWithError(errors.New("copy ended")) // unblocks the writer if the daemon stopped reading
	if tarErr := <-werr; tarErr != nil {
		return fmt.Errorf("docker: inject: %w", tarErr)
	}
	if err != nil {
		return apiErr(ctx, "inject workspace", err)
	}
	return nil
}

// Run implements vm.Machine: attach (before start, so no output is lost), start, copy the
// demultiplexed output until the container's streams close, then read the exit code.
func (m *machine) Run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	m.mu.Lock()
	switch {
	case m.Destroyed:
		m.mu.Unlock()
		return -1, fmt.Errorf("docker: run: %w: machine destroyed", errs.ErrInfra)
	case m.started:
		m.mu.Unlock()
		return -1, fmt.Errorf("docker: run: %w: Run called twice", errs.ErrInfra)
	}
	m.started = true
	m.mu.Unlock()
	if ctx.Err() != nil {
		return -1, vm.RunAborted(ctx, "docker")
	}
	if m.exec {
		return m.runExec(ctx, stdout, stderr)
	}

	hj, err := m.b.cli.ContainerAttach(ctx, m.id, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return -1, m.runErr(ctx, "attach", err)
	}
	defer hj.Close()
	outW, errW := &latchWriter{w: orDiscard(stdout)}, &latchWriter{w: orDiscard(stderr)}
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(outW, errW, hj.Reader)
		copied <- err
	}()

	if err := m.takeNet(ctx); err != nil {
		hj.Close()
		<-copied
		return -1, m.runErr(ctx, "network", err)
	}
	// Start is not canceled with ctx: a request cut short might start the container after
	// the kill below has already found nothing to kill.
	bg := context.WithoutCancel(ctx)
	// The exit status is asked for before the start, so that it comes with the end of the
	// output instead of a round trip after it: the daemon registers a next-exit wait before
	// it answers with the headers, which the call waits for (no exit can slip past it).
	waitCtx, endWait := context.WithCancel(bg)
	defer endWait()
	waitC, waitErrC := m.b.cli.ContainerWait(waitCtx, m.id, container.WaitConditionNextExit)
	if err := m.b.cli.ContainerStart(bg, m.id, container.StartOptions{}); err != nil {
		hj.Close()
		<-copied
		return -1, m.runErr(ctx, "start", err)
	}
	// On ctx done, SIGKILL the container: its init dies, and the kernel kills every other
	// process in its PID namespace, however it daemonised.
	stop := context.AfterFunc(ctx, func() { _ = m.b.cli.ContainerKill(bg, m.id, "KILL") })
	defer stop()
	// The step's environment, then EOF: the command's stdin is empty (env.go). Not waited
	// for: a container that never reads it ends the attach stream all the same.
	go func() {
		_, _ = io.WriteString(hj.Conn, envScript(m.spec.Env))
		_ = hj.CloseWrite()
	}()

	copyErr := <-copied // the attach stream ends when the container has exited
	code, err := waitStatus(waitC, waitErrC)
	if err != nil && ctx.Err() == nil {
		// The early wait's connection failed where the attach held (a proxy in front of
		// the daemon that cuts an idle request during a long step): ask again, the output
		// has ended.
		code, err = waitStatus(m.b.cli.ContainerWait(bg, m.id, container.WaitConditionNotRunning))
	}

	m.mu.Lock()
	destroyed := m.Destroyed
	m.mu.Unlock()
	switch {
	case ctx.Err() != nil:
		return -1, vm.RunAborted(ctx, "docker")
	case destroyed:
		return -1, fmt.Errorf("docker: run: %w: machine destroyed while running", errs.ErrCanceled)
	case err != nil:
		return -1, m.runErr(ctx, "wait", err)
	case copyErr != nil:
		return -1, fmt.Errorf("docker: run: %w: reading output: %v", errs.ErrInfra, copyErr)
	}
	if werr := errors.Join(outW.err, errW.err); werr != nil {
		return -1, fmt.Errorf("docker: run: %w: writing output: %v", errs.ErrInfra, werr)
	}
	m.mu.Lock()
	m.Ran, m.Exit = true, code
	// The container's init has exited, and with it every process of its PID namespace:
	// nothing of the step is left in the holder's network namespace.
	m.giveBackNet()
	m.mu.Unlock()
	return code, nil
}

// waitStatus is the exit status a ContainerWait delivers.
func waitStatus(waitC <-chan container.WaitResponse, errC <-chan error) (int, error) {
	select {
	case w := <-waitC:
		if w.Error != nil && w.Error.Message != "" {
			return int(w.StatusCode), errors.New(w.Error.Message)
		}
		return int(w.StatusCode), nil
	case err := <-errC:
		return -1, err
	}
}

func (m *machine) runErr(ctx context.Context, op string, err error) error {
	m.mu.Lock()
	destroyed := m.Destroyed
	m.mu.Unlock()
	if destroyed && ctx.Err() == nil {
		return fmt.Errorf("docker: run: %w: machine destroyed while running (%s: %v)", errs.ErrCanceled, op, err)
	}
	if ctx.Err() != nil {
		return vm.RunAborted(ctx, "docker")
	}
	return apiErr(ctx, "run: "+op, err)
}

// Commit implements vm.Machine.
func (m *machine) Commit(ctx context.Context, ephemeral bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.CommitAllowed(); err != nil {
		return "", fmt.Errorf("docker: commit: %w", err)
	}
	kind := "k-"
	if ephemeral {
		kind = "e-"
	}
	ref := SnapshotRepo + ":" + kind + randomHex(12)
	env := m.baseEnv // the step's own never entered the container's config (env.go)
	cfg := &container.Config{Env: env, Labels: m.b.labels(m.spec.Owner, m.owner, ephemeral)}
	m.b.wrote()
	resp, err := m.b.cli.ContainerCommit(ctx, m.id, container.CommitOptions{Reference: ref, Config: cfg})
	if err != nil {
		// A canceled request may still have committed: drop the image by its tag.
		if ctx.Err() != nil {
			_ = m.b.RemoveSnapshot(context.WithoutCancel(ctx), ref) // marks the account failed if it fails
		}
		return "", apiErr(ctx, "commit", err)
	}
	if ephemeral {
		m.b.madeEphemeral(resp.ID)
	}
	m.Committed = true
	m.b.cacheEnv(resp.ID, env)
	return resp.ID, nil
}

// Destroy implements vm.Machine: the container is force-removed, which kills it if it runs
// (a concurrent Run then returns an error). Idempotent.
func (m *machine) Destroy(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Destroyed = true
	if m.removed {
		return nil
	}
	if err := m.b.removeContainer(ctx, m.id); err != nil {
		return err
	}
	m.removed = true
	m.giveBackNet()
	if m.release != nil {
		m.release() // the container is gone: nothing writes to its cache volumes any more
	}
	return nil
}

// latchWriter passes writes on until the first error, then swallows them and keeps the error:
// the container's output must keep draining, or it blocks on a full pipe and never exits.
type latchWriter struct {
	w   io.Writer
	err error
}

func (l *latchWriter) Write(p []byte) (int, error) {
	if l.err == nil {
		_, l.err = l.w.Write(p)
	}
	return len(p), nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
