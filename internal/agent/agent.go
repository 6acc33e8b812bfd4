// Package agent is `hm agent`: a process on a machine that executes steps, which claims them
// from an hm server (the protocol of internal/agentproto), runs each on its local VM backend
// (sandbox, docker or host, in its own state dir with its own images and snapshots) and
// reports their output and outcome. It knows only the server's URL and an agent token, and
// opens every connection itself. It is not the scheduler: which step runs, when, and what its
// outcome means for the build are the server's.
//
// # Loop
//
// Each of Slots workers loops: claim (a long poll) → fetch the build's source by digest
// (checked, extracted once per digest under STATE/agent/trees, the workspace tree being the
// archive's entries, never a re-walk) → Create the machine from the
// job's image or its parent's snapshot (the claim's placement put the job where that
// snapshot is) → Inject the source → Start → Run, streaming stdout and stderr as ordered log
// chunks (shipper) while a heartbeat extends the lease → Commit when the job needs a snapshot
// → Finish after every chunk is acknowledged → Destroy.
//
// The heartbeat runs every min(TTL/3, StopPoll): its reply carries cancel and timeout, which
// cancel the step's context, so they reach the running step within StopPoll.
//
// # Failures
//
// One function (classify, client.go) decides about every failed call: network errors and 5xx
// are retried with backoff (each call is idempotent or fenced by the attempt, so a repeat is
// safe), 409/404 drop the work (another attempt owns the step: the machine is destroyed and
// no Finish is sent), 401 stops the agent. A connection cut while a step runs costs nothing:
// the step goes on, its lines wait in the shipper's bounded buffer and are resent from the
// server's contiguous seq; only a cut longer than the lease loses the attempt (the server
// retries the step elsewhere).
//
// # Stopping
//
// Drain (SIGTERM) stops claiming and lets running steps finish and report; Run's own context
// ending kills running steps without a Finish (their leases lapse and the server retries
// them). At start the backend's Reconcile removes what a previous agent process left; the
// registration that follows carries a fresh boot id, which tells the server that the
// previous process's ephemeral snapshots are gone (it runs their builds_in parents again).
//
// # Snapshots
//
// The agent's alive call (at start, then every AlivePeriod) also answers which ephemeral
// snapshots no build needs any more; the agent removes them with its backend and
// acknowledges them in the next call. The server keeps the list in its store until then, so
// a removal survives a server restart and an agent restart. Cached snapshots stay.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
)

// Config is what an agent needs.
type Config struct {
	Server string // base URL, e.g. http://127.0.0.1:8080
	Token  string // an agent token
	// Backend runs the steps; StateDir holds the agent's id, sources and the backend's state.
	Backend  vm.Backend
	StateDir string
	Name     string   // default: the host name
	Labels   []string // "k=v"
	Slots    int      // steps at once; default 1
	// HTTP is the client of every call (tests inject faults through its Transport).
	HTTP *http.Client
	// StopPoll bounds how long a cancel takes to reach a running step. Default 500 ms.
	StopPoll time.Duration
	// ClaimWait is a claim's long poll. Default agentproto.MaxClaimWait.
	ClaimWait time.Duration
	// AlivePeriod is how often the agent says it is alive and asks which ephemeral snapshots
	// to remove. Default 10 s.
	AlivePeriod time.Duration
	Logger      *slog.Logger
}

// Agent is a running agent.
type Agent struct {
	cfg     Config
	c       *client
	id      string
	boot    string // the boot id of this process (Register.BootID)
	drain   chan struct{}
	drained sync.Once
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.Server == "" || cfg.Token == "" || cfg.Backend == nil || cfg.StateDir == "" {
		return nil, fmt.Errorf("agent: a server URL, a token, a backend and a state dir are required: %w", errs.ErrUsage)
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	if cfg.StopPoll <= 0 {
		cfg.StopPoll = 500 * time.Millisecond
	}
	if cfg.ClaimWait <= 0 || cfg.ClaimWait > agentproto.MaxClaimWait {
		cfg.ClaimWait = agentproto.MaxClaimWait
	}
	if cfg.AlivePeriod <= 0 {
		cfg.AlivePeriod = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	return &Agent{cfg: cfg, drain: make(chan struct{}),
		c: &client{base: strings.TrimRight(cfg.Server, "/"), token: cfg.Token, hc: cfg.HTTP,
			timeout: 15 * time.Second, minBackoff: 100 * time.Millisecond, maxBackoff: 2 * time.Second}}, nil
}

// ID is the agent's id, kept in its state dir (known after Run registered).
func (a *Agent) ID() string { return a.id }

// Drain stops claiming; running steps finish and report, then Run returns.
func (a *Agent) Drain() { a.drained.Do(func() { close(a.drain) }) }

// Run registers, reconciles the backend and works until Drain (returning nil once the running
// steps ended) or ctx ends (killing them, without finishing them). A refused token is fatal.
func (a *Agent) Run(ctx context.Context) error {
	id, err := agentID(a.cfg.StateDir)
	if err != nil {
		return err
	}
	a.id = id
	if err := a.cfg.Backend.Reconcile(ctx); err != nil {
		return fmt.Errorf("agent: reconcile: %w", err)
	}
	a.boot = uuid.NewString()
	reg := agentproto.Register{AgentID: id, Name: a.cfg.Name, Backend: a.cfg.Backend.Name(), Labels: a.cfg.Labels,
		BootID: a.boot}
	if _, err := a.c.call(ctx, http.MethodPost, agentproto.PathRegister, reg, &agentproto.Registered{}, 0, nil); err != nil {
		return fmt.Errorf("agent: register: %w", err)
	}
	a.cfg.Logger.Info("hm agent registered", "agent", id, "backend", reg.Backend, "slots", a.cfg.Slots)

	// claimCtx ends on Drain: a long poll in flight is abandoned.
	claimCtx, stopClaims := context.WithCancel(ctx)
	defer stopClaims()
	go func() {
		select {
		case <-a.drain:
		case <-claimCtx.Done():
		}
		stopClaims()
	}()
	var wg sync.WaitGroup
	errc := make(chan error, a.cfg.Slots)
	for slot := range a.cfg.Slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.worker(ctx, claimCtx, a.boot+"/"+strconv.Itoa(slot)); err != nil {
				errc <- err
				stopClaims()
			}
		}()
	}
	go a.alive(claimCtx)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", errs.ErrCanceled, context.Cause(ctx))
	}
	return nil
}

// worker claims and runs jobs one at a time until claims stop. A job's Finish claims the
// next one too (agentproto.Finish.Next) while claims go on; one handed out that way runs
// even if claims stopped since: it is this agent's now. Its claims name it (id, unique to
// this process): it claims only while it holds no job, so the server answers a claim whose
// reply was lost again, to a repeat or to the next claim, instead of claiming another.
func (a *Agent) worker(ctx, claimCtx context.Context, id string) error {
	var next *agentproto.Job
	for next != nil || claimCtx.Err() == nil {
		var j agentproto.Job
		if next != nil {
			j, next = *next, nil
		} else {
			got, err := a.c.call(claimCtx, http.MethodPost, agentproto.PathClaim,
				agentproto.Claim{AgentID: a.id, Slots: 1, WaitSeconds: int(a.cfg.ClaimWait / time.Second), Worker: id}, &j, a.cfg.ClaimWait, nil)
			switch {
			case errors.Is(err, ErrAuth):
				return err
			case claimCtx.Err() != nil:
				return nil
			case err != nil:
				a.cfg.Logger.Warn("claim failed", "err", err.Error())
				continue
			case !got:
				continue
			}
		}
		next = a.runJob(ctx, claimCtx, id, j)
	}
	return nil
}

// alive tells the server the agent is there while it waits for work, and removes the
// ephemeral snapshots the server's reply lists (builds that needed them ended),
// acknowledging each in the next call. The first call is at once: a restarted agent removes
// what its builds left before it went away.
func (a *Agent) alive(ctx context.Context) {
	t := time.NewTicker(a.cfg.AlivePeriod)
	defer t.Stop()
	var removed []string
	for {
		var rep agentproto.AliveReply
		ok, err := a.c.once(ctx, http.MethodPost, agentproto.PathAlive, agentproto.Alive{AgentID: a.id, Removed: removed}, &rep, a.c.timeout)
		if err == nil && ok {
			removed = a.removeSnapshots(ctx, rep.RemoveSnapshots)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// removeSnapshots removes snapshots with the backend and returns those gone now. A failed
// removal is not acknowledged: the server asks for it again.
func (a *Agent) removeSnapshots(ctx context.Context, snaps []string) []string {
	var done []string
	for _, s := range snaps[:min(len(snaps), agentproto.MaxRemovals)] {
		if err := a.cfg.Backend.RemoveSnapshot(ctx, s); err != nil {
			a.cfg.Logger.Warn("removing an ephemeral snapshot", "snapshot", s, "err", err.Error())
			continue
		}
		a.cfg.Logger.Info("ephemeral snapshot removed", "snapshot", s)
		done = append(done, s)
	}
	return done
}

// agentID reads the agent's id from its state dir, choosing one the first time.
func agentID(stateDir string) (string, error) {
	p := filepath.Join(stateDir, "agent", "id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("agent: state dir: %w: %w", errs.ErrInfra, err)
	}
	id := uuid.NewString()
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("agent: state dir: %w: %w", errs.ErrInfra, err)
	}
	return id, nil
}
