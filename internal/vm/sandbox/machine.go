package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

// machine is one step's directory and, while Run runs, its sandbox init.
type machine struct {
	b        *Backend
	spec     vm.Spec
	cookie   string
	dir      string   // machines/COOKIE
	image    string   // image id the root stands on
	chain    []string // the parent snapshot's layers, top first
	lowers   int      // number of l/N links
	hostRoot bool     // a lower layer is the host's root filesystem

	owner proc.Owner // the hm process the machine belongs to

	mu   sync.Mutex
	init *initProc     // the running init, nil otherwise
	done chan struct{} // closed when Run returns; nil before Run
	vm.Lifecycle
	cgroups []string      // the step's cgroup directories, removed by Destroy
	reaped  chan struct{} // closed once the init that ran the step is gone; nil if none
}

// Inject implements vm.Machine: the workspace is written straight into the upper layer's
// /workspace, before anything is mounted (overlayfs allows changing a layer offline). What
// it adds or overwrites there hides the lower layers' entries of the same paths, which is
// exactly "files are added or overwritten, nothing is deleted".
func (m *machine) Inject(ctx context.Context, ws *source.Tree) error {
	if ws == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sandbox: inject: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Destroyed || m.done != nil {
		return fmt.Errorf("sandbox: inject: %w: machine already ran or was destroyed", errs.ErrInfra)
	}
	dir := filepath.Join(m.dir, "upper", vm.Workdir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sandbox: inject: %w: %w", errs.ErrInfra, err)
	}
	if err := ws.Materialize(dir); err != nil {
		return fmt.Errorf("sandbox: inject: %w", err)
	}
	return nil
}

// Run implements vm.Machine.
func (m *machine) Run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	m.mu.Lock()
	switch {
	case m.Destroyed:
		m.mu.Unlock()
		return -1, fmt.Errorf("sandbox: run: %w: machine destroyed", errs.ErrInfra)
	case m.done != nil:
		m.mu.Unlock()
		return -1, fmt.Errorf("sandbox: run: %w: Run called twice", errs.ErrInfra)
	case ctx.Err() != nil:
		m.mu.Unlock()
		return -1, vm.RunAborted(ctx, "sandbox")
	}
	m.done = make(chan struct{})
	m.mu.Unlock()
	defer close(m.done)

	code, err := m.run(ctx, stdout, stderr)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cgroups = nil // run removed them, or will once the init is gone
	switch {
	case ctx.Err() != nil:
		return -1, vm.RunAborted(ctx, "sandbox")
	case m.Destroyed:
		return -1, fmt.Errorf("sandbox: run: %w: machine destroyed while running", errs.ErrCanceled)
	case err != nil:
		return -1, err
	}
	m.Ran, m.Exit = true, code
	return code, nil
}

func (m *machine) run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	tstart := time.Now()
	if err := m.b.waitBusy(ctx, m.chain); err != nil {
		return -1, err
	}
	ip, err := m.b.takeInit(m.cookie, m.owner == proc.Self())
	if err != nil {
		return -1, err
	}
	sandboxinit.Trace(ip.cookie, "run: start "+strconv.FormatInt(tstart.UnixNano(), 10))
	defer sandboxinit.Trace(ip.cookie, "run: returns")
	m.mu.Lock()
	m.init = ip
	abort := m.Destroyed
	m.cgroups = ip.cgroups
	m.mu.Unlock()
	if abort {
		m.kill()
	}
	waitOutput := ip.copyOutput(stdout, stderr)
	cfg := sandboxinit.Config{
		Dir: m.dir, Lowers: m.lowers, Cmd: m.spec.Cmd, Env: m.spec.Env, Hostname: "hm",
		Loopback: m.b.network() != NetworkHost,
	}
	if m.b.network() == NetworkPrivate {
		cfg.ResolvConf = privateResolvConf()
	}
	// Held until every process of the step is gone, which run's return means.
	binds, release, err := m.b.useCacheDirs(m.spec.CacheDirs)
	if err != nil {
		ip.kill()
		return -1, err
	}
	defer release()
	cfg.Binds = binds
	if err := m.b.confine(&cfg, ip); err != nil {
		ip.kill()
		return -1, err
	}
	sandboxinit.Trace(ip.cookie, "run: sending config")
	_ = json.NewEncoder(ip.cfgW).Encode(cfg) // a failure means the init died; its status tells
	reports := make(chan sandboxinit.Report, 1)
	go func() {
		var r sandboxinit.Report
		_ = json.NewDecoder(ip.statR).Decode(&r) // nothing decoded: the init died
		reports <- r
	}()

	var rep sandboxinit.Report
	select {
	case rep = <-reports:
	case <-ctx.Done():
		m.kill()
		<-ip.exited
		rep = <-reports
	}
	m.b.refill()
	m.mu.Lock()
	m.init = nil
	m.mu.Unlock()
	if rep.Done {
		// Every process of the step is gone; the init's own exit and the teardown of
		// its namespaces need not hold the step up.
		sandboxinit.Trace(ip.cookie, "run: done reported")
		m.mu.Lock()
		m.reaped = ip.exited
		m.mu.Unlock()
		// The output is drained before the pipes may be closed: a slow consumer can still be
		// reading what the step wrote long after the init has exited.
		outErr := waitOutput()
		m.b.bg.Go(func() {
			<-ip.exited
			sandboxinit.Trace(ip.cookie, "run: init reaped")
			ip.waitHelpers()
			removeCgroups(ip.cgroups)
			ip.close()
		})
		if outErr != nil {
			return -1, fmt.Errorf("sandbox: run: %w: writing output: %v", errs.ErrInfra, outErr)
		}
		return rep.Exit, nil
	}
	<-ip.exited
	sandboxinit.Trace(ip.cookie, "run: init reaped")
	ip.waitHelpers()
	defer ip.close()
	removeCgroups(ip.cgroups) // its processes are gone with the init
	outErr := waitOutput()
	ws, _ := ip.state.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		return -1, fmt.Errorf("sandbox: run: %w: the sandbox init was killed (%v)", errs.ErrInfra, ws.Signal())
	case ws.ExitStatus() == sandboxinit.ExitSetup && rep.Stage != "":
		return -1, setupError(rep.Failure)
	case outErr != nil:
		return -1, fmt.Errorf("sandbox: run: %w: writing output: %v", errs.ErrInfra, outErr)
	}
	return ws.ExitStatus(), nil
}

// startError classifies a failure to start the init: the kernel refusing namespaces is the
// sandbox being unavailable here.
func startError(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EUSERS) {
		return Unavailable("the kernel refused to create the sandbox's namespaces: %v", err)
	}
	return fmt.Errorf("sandbox: start init: %w: %w", errs.ErrInfra, err)
}

// setupError turns the init's report into an error.
func setupError(f sandboxinit.Failure) error {
	switch syscall.Errno(f.Errno) {
	case syscall.EPERM, syscall.EACCES, syscall.ENODEV, syscall.ENOSYS:
		return Unavailable("sandbox setup failed: %s", f.Msg)
	}
	if f.Stage == "overlay" {
		return Unavailable("sandbox setup failed: %s (does the state dir's filesystem support overlayfs upper layers?)", f.Msg)
	}
	return fmt.Errorf("sandbox: init: %w: %s", errs.ErrInfra, f.Msg)
}

// kill SIGKILLs the init; the kernel then kills everything in its PID namespace.
func (m *machine) kill() {
	m.mu.Lock()
	ip := m.init
	m.mu.Unlock()
	if ip != nil {
		_ = ip.proc.Kill() // through a pidfd: never another process that got the number
	}
}

// Commit implements vm.Machine: the upper directory is renamed into an immutable layer and
// a record naming the chain is written, both under the lock, so the cost does not depend
// on how much the step wrote. A chain longer than MaxChain is flattened first.
func (m *machine) Commit(ctx context.Context, ephemeral bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.CommitAllowed(); err != nil {
		return "", fmt.Errorf("sandbox: commit: %w", err)
	}
	// The owner in the id lets reconcile drop an ephemeral snapshot once its run is dead,
	// and PruneSnapshots tell a kept one a live hm is about to register from an orphan.
	id := keptPrefix + m.cookie
	if ephemeral {
		id = ephemeralPrefix + m.cookie
	}
	layer := randomHex()
	chain := append([]string{layer}, m.chain...)
	src := filepath.Join(m.dir, "upper")
	if len(chain) > m.b.opts.MaxChain {
		dirs := []string{src}
		for _, l := range m.chain {
			dirs = append(dirs, m.b.layerDir(l))
		}
		flat := m.flatDir()
		if err := flatten(ctx, flat, reversed(dirs)); err != nil {
			return "", fmt.Errorf("sandbox: commit: %w: flattening a chain of %d layers: %v", errs.ErrInfra, len(chain), err)
		}
		src, chain = flat, []string{layer}
	}
	unlock, err := m.b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := os.Rename(src, m.b.layerDir(layer)); err != nil {
		return "", fmt.Errorf("sandbox: commit: %w: %w", errs.ErrInfra, err)
	}
	if src != m.flatDir() {
		// Run returned before the init's exit unmounted the step's overlay: the layer may
		// still be its upper directory for a few milliseconds.
		m.b.markBusy(layer, m.reaped)
	}
	if err := m.b.writeSnap(id, snapRecord{Image: m.image, Layers: chain}); err != nil {
		return "", fmt.Errorf("sandbox: commit: %w: %w", errs.ErrInfra, err)
	}
	m.Committed = true
	return id, nil
}

// Destroy implements vm.Machine. Idempotent; it may run concurrently with Run, which it
// aborts and waits for before deleting the machine's directory. The directory is moved to
// the trash and deleted in the background; Close waits for that.
func (m *machine) Destroy(ctx context.Context) error {
	m.mu.Lock()
	first := !m.Destroyed
	m.Destroyed = true
	done := m.done
	m.mu.Unlock()
	m.kill()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("sandbox: destroy: waiting for Run: %w", ctx.Err())
		}
	}
	m.mu.Lock()
	removeCgroups(m.cgroups)
	m.cgroups = nil
	reaped := m.reaped
	m.mu.Unlock()
	// The rename into the trash releases the machine at once; deleting its files can wait
	// (Close waits for it, and reconcile finishes it after a crash).
	t, err := m.b.toTrash(m.dir)
	if err != nil {
		return fmt.Errorf("sandbox: destroy: %w: %w", errs.ErrInfra, err)
	}
	m.b.removeInBackground(t, reaped)
	// A parent snapshot removed while this machine used its layers left them for the
	// collector; the machine's links are gone now.
	if first && m.spec.Parent != "" {
		if ok, err := m.b.SnapshotExists(ctx, m.spec.Parent); err == nil && !ok {
			if err := m.b.gc(); err != nil {
				return fmt.Errorf("sandbox: destroy: %w: %w", errs.ErrInfra, err)
			}
		}
	}
	return nil
}

func (m *machine) flatDir() string { return filepath.Join(m.dir, "flat") }
