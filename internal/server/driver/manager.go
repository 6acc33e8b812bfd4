package driver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hmci/hm/internal/store"
)

// Manager runs the drivers of one server process and its lease reaper: a driver for every
// build it is told about (Kick, from createBuild) and, at start and every Scan, for every
// unfinished build of the store that no driver of this process runs. Drive takes the build's
// lease, so a build another replica drives is left to it (the attempt fails with a conflict
// and is retried at the next scan, which is how a dead replica's builds are taken over once
// its lease lapsed). Stopping the manager (Run's ctx) stops its drivers without canceling
// their builds: the next owner carries them on.
//
// The reaper calls ReapExpiredLeases every Reap: a job whose agent stopped heartbeating goes
// back to the queue, or fails agent_lost after MaxRetries requeues; and FailOrphans: a
// requeued job that no agent seen within AgentTTL could run fails agent_lost rather than
// waiting forever; RerunLostParents: a builds_in parent whose snapshot's agent was not seen
// within AgentTTL runs again while a child needs it; at most once a minute
// DropStaleSnapshotRemovals: the removals queued for agents not seen within
// RemovalRetention, which would otherwise stay forever; and at most every SweepEvery the
// builds past Retention are pruned and the blob dir swept (see Retention and Blobs). It runs
// once across the replicas of a deployment: only on the manager holding the store's leader
// lease LeaderName (store.LeaderLeases), taken or renewed at each round for LeaderTTL and
// released when Run ends, so that another replica takes over at its
// next round rather than after the lease lapsed. A build whose driver lease another replica
// released mid-build (store.DriversWanted, that replica draining) is scanned for at once.
type Manager struct {
	Driver Config
	// Scan is how often unfinished builds are looked for. Default 2 s.
	Scan time.Duration
	// Reap is how often lapsed job leases are reaped. Default 1 s.
	Reap time.Duration
	// MaxRetries is the infrastructure retry budget of a job whose agent was lost: 0 means
	// the default, 2; a negative value none (the first lost lease fails the job).
	MaxRetries int
	// AgentTTL is how long an agent counts as alive after it was last seen (a claim, a
	// heartbeat): the agents' lease TTL. Default 30 s.
	AgentTTL time.Duration
	// LeaderTTL is the reaper's leader lease: how long a dead leader's duties wait before
	// another replica takes them. Default 5 s (at least 3 Reap rounds).
	LeaderTTL time.Duration
	// RemovalRetention is how long the snapshot removals queued for an agent that is not
	// seen any more are kept (store.DropStaleSnapshotRemovals, by the reaper's leader at
	// most once a minute). Default 24 h.
	RemovalRetention time.Duration
	// Retention, when positive, is how long ended builds are kept: the leader deletes the
	// builds that ended longer ago, with their jobs, logs and events (store.PruneBuilds),
	// at most every SweepEvery. Zero keeps every build.
	Retention time.Duration
	// Blobs, when set, is the server's blob dir, swept by the leader at most every
	// SweepEvery: a blob no row references (store.BlobRefs: sources, artifacts) and not
	// written for BlobGrace is removed. The grace covers a blob uploaded before the row that
	// names it is committed (a source before its build, an artifact before its Finish).
	Blobs store.BlobStore
	// SweepEvery is how often builds are pruned and blobs swept. Default 10 min.
	SweepEvery time.Duration
	// BlobGrace: see Blobs. Default 1 h.
	BlobGrace time.Duration
	Logger    *slog.Logger

	once    sync.Once
	kick    chan string
	mu      sync.Mutex
	running map[string]bool
}

// LeaderName is the leader lease of the reaper.
const LeaderName = "reaper"

func (m *Manager) init() {
	m.once.Do(func() {
		m.kick = make(chan string, 1024)
		m.running = map[string]bool{}
		if m.Scan <= 0 {
			m.Scan = 2 * time.Second
		}
		if m.Reap <= 0 {
			m.Reap = time.Second
		}
		if m.AgentTTL <= 0 {
			m.AgentTTL = 30 * time.Second
		}
		if m.RemovalRetention <= 0 {
			m.RemovalRetention = 24 * time.Hour
		}
		if m.SweepEvery <= 0 {
			m.SweepEvery = 10 * time.Minute
		}
		if m.BlobGrace <= 0 {
			m.BlobGrace = time.Hour
		}
		if m.LeaderTTL <= 0 {
			m.LeaderTTL = max(5*time.Second, 3*m.Reap)
		}
		switch {
		case m.MaxRetries == 0:
			m.MaxRetries = 2
		case m.MaxRetries < 0:
			m.MaxRetries = 0
		}
		if m.Logger == nil {
			m.Logger = slog.New(slog.DiscardHandler)
		}
		if m.Driver.AgentTTL <= 0 {
			m.Driver.AgentTTL = m.AgentTTL
		}
		m.Driver.defaults()
	})
}

// pruneBatch and pruneRounds bound one sweep's work (pruneBatch builds a statement,
// pruneRounds statements), so that the leader's other duties do not wait behind a backlog:
// what is left is pruned at the next round.
const (
	pruneBatch  = 200
	pruneRounds = 10
)

// sweep prunes the builds past Retention and then sweeps the blob dir; it reports whether it
// finished (no backlog left, no error), else the next reaper round sweeps again.
func (m *Manager) sweep(ctx context.Context, now time.Time) bool {
	if m.Retention > 0 {
		total := 0
		for range pruneRounds {
			n, err := m.Driver.Store.PruneBuilds(ctx, now.Add(-m.Retention), pruneBatch)
			total += n
			if err != nil {
				if ctx.Err() == nil {
					m.Logger.Warn("pruning ended builds", "err", err.Error())
				}
				return false
			}
			if n < pruneBatch {
				break
			}
		}
		if total > 0 {
			m.Logger.Info("ended builds pruned", "builds", total, "retention", m.Retention.String())
		}
		if total >= pruneBatch*pruneRounds {
			return false // more are left: the blobs wait until the builds are done
		}
	}
	if m.Blobs == nil {
		return true
	}
	// The references are read before the blob dir is listed: a blob written after this read
	// is younger than the grace, so a reference committed meanwhile is never missed.
	refs, err := m.Driver.Store.BlobRefs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.Logger.Warn("listing referenced blobs", "err", err.Error())
		}
		return false
	}
	// File times are the machine's clock, not the store's.
	n, size, err := m.Blobs.SweepBlobs(ctx, refs, time.Now().Add(-m.BlobGrace))
	if n > 0 {
		m.Logger.Info("unreferenced blobs removed", "blobs", n, "bytes", size)
	}
	if err != nil {
		m.Logger.Warn("sweeping blobs", "err", err.Error())
		return false
	}
	return true
}

// Kick asks for a driver of build id now (a new build). It never blocks: a kick that does not
// fit waits for the next scan.
func (m *Manager) Kick(id string) {
	m.init()
	select {
	case m.kick <- id:
	default:
	}
}

// Run drives builds and reaps leases until ctx is done, then waits for its drivers to stop.
func (m *Manager) Run(ctx context.Context) {
	m.init()
	var wg sync.WaitGroup
	defer wg.Wait()
	start := func(id string) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.running[id] || ctx.Err() != nil {
			return
		}
		m.running[id] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				m.mu.Lock()
				delete(m.running, id)
				m.mu.Unlock()
			}()
			if _, err := Drive(ctx, m.Driver, id); err != nil && ctx.Err() == nil && !store.IsConflict(err) {
				m.Logger.Warn("driver stopped", "build", id, "err", err.Error())
			}
		}()
	}
	scan := func() {
		bs, err := m.Driver.Store.ListUnfinishedBuilds(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.Logger.Warn("listing unfinished builds", "err", err.Error())
			}
			return
		}
		for _, b := range bs {
			start(b.ID)
		}
	}
	var epoch int64 // of the leader lease, when held
	leader := func() bool {
		e, ok, err := m.Driver.Store.AcquireLeader(ctx, LeaderName, m.Driver.Owner, m.Driver.Now(), m.LeaderTTL)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				m.Logger.Warn("leader lease", "err", err.Error())
			}
			return false
		case ok && e != epoch:
			m.Logger.Info("leading the reaper", "epoch", e)
		case !ok && epoch != 0:
			m.Logger.Info("no longer leading the reaper")
		}
		if !ok {
			e = 0
		}
		epoch = e
		return ok
	}
	defer func() {
		if epoch != 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			m.Driver.Store.ReleaseLeader(rctx, LeaderName, m.Driver.Owner, epoch)
		}
	}()
	var dropped time.Time // when stale snapshot removals were last dropped
	var swept time.Time   // when builds were last pruned and blobs swept
	reap := func() {
		if !leader() {
			return
		}
		if now := m.Driver.Now(); now.Sub(swept) >= m.SweepEvery && m.sweep(ctx, now) {
			swept = now
		}
		if now := m.Driver.Now(); now.Sub(dropped) >= time.Minute {
			n, err := m.Driver.Store.DropStaleSnapshotRemovals(ctx, now, m.RemovalRetention)
			switch {
			case err != nil && ctx.Err() == nil:
				m.Logger.Warn("dropping stale snapshot removals", "err", err.Error())
			case err == nil:
				dropped = now
				if n > 0 {
					m.Logger.Info("snapshot removals of agents gone dropped", "removals", n, "retention", m.RemovalRetention.String())
				}
			}
		}
		js, err := m.Driver.Store.ReapExpiredLeases(ctx, m.Driver.Now(), m.MaxRetries)
		if err != nil && ctx.Err() == nil {
			m.Logger.Warn("reaping leases", "err", err.Error())
		}
		for _, j := range js {
			m.Logger.Info("lease lapsed", "job", j.ID, "step", j.StepKey, "agent", j.AgentID, "state", string(j.State))
		}
		js, err = m.Driver.Store.FailOrphans(ctx, m.Driver.Now(), m.AgentTTL)
		if err != nil && ctx.Err() == nil {
			m.Logger.Warn("failing orphaned jobs", "err", err.Error())
		}
		for _, j := range js {
			m.Logger.Info("no live agent for a requeued job", "job", j.ID, "step", j.StepKey, "state", string(j.State))
		}
		// Secrets of builds that ended without their driver deleting them (it stopped).
		if _, err := m.Driver.Store.DeleteEndedBuildSecrets(ctx); err != nil && ctx.Err() == nil {
			m.Logger.Warn("deleting ended builds' secrets", "err", err.Error())
		}
		js, err = m.Driver.Store.RerunLostParents(ctx, m.Driver.Now(), m.AgentTTL)
		if err != nil && ctx.Err() == nil {
			m.Logger.Warn("running again parents whose agent is gone", "err", err.Error())
		}
		for _, j := range js {
			m.Logger.Info("parent run again: its snapshot's agent is gone", "job", j.ID, "step", j.StepKey)
		}
	}
	// Watching before the first scan: a lease released between the two is not missed.
	wanted, unwatch := store.Watch(m.Driver.Store, store.DriversWanted())
	defer unwatch()
	scan()
	scanT := time.NewTicker(m.Scan)
	defer scanT.Stop()
	reapT := time.NewTicker(m.Reap)
	defer reapT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-m.kick:
			start(id)
		case <-scanT.C:
			scan()
		case <-wanted:
			scan()
		case <-reapT.C:
			reap()
		}
	}
}
