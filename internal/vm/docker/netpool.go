package docker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
)

// Network holders. Most of what the daemon spends on a short container is its network, and
// not only for the bridge: for every mode but host it creates a libnetwork sandbox, runs the
// dockerd binary again as runc's prestart hook to hand the namespace over, sets up the veth
// pair and endpoint, and tears it all down when the container stops. A fan-out of nine
// trivial steps took 2.9 s with a namespace each and 1.3 s with every container joining one
// existing namespace (bench/buildkit, BENCHMARKS.md). So a step's container joins the network
// namespace of a holder (NetworkMode container:ID): an idle container the backend keeps for
// the run, with the configured network and nothing else.
//
// A holder serves one step at a time, never two at once: parallel steps keep their own
// loopback and ports, as with a namespace each. Sequential steps of one run share it, as the
// steps of a continued chain already share their container (exec.go), and as BuildKit's own
// CNI provider puts a build step's namespace back into a pool for the next step
// (util/network/cniprovider, cniNS.Close). What a step could leave in the namespace for the
// next one needs CAP_NET_ADMIN or a writable /proc/sys, which no step has (Docker's default
// set; /proc/sys is read-only); its sockets and processes die with its container. What it
// can leave is the three files the daemon shares with the containers that join a holder:
// /etc/hosts, /etc/resolv.conf and /etc/hostname (the holder's, bind-mounted writable). A
// holder is handed on only after those are stat'ed again and found as they were when it
// started (size, mode, modification time: any write changes them); otherwise it is removed
// and the next step gets a fresh one (TestHolderFilesChanged). A step that wrote one and
// then forged its times back could pass a line to a later step of the same run, which runs
// that pipeline's code anyway; never to another run.
//
// Lifecycle. A container is created with NetworkMode container:NAME, NAME fresh; the
// daemon looks the name up when the container starts, and right before that takeHolder
// renames a free holder of the run to NAME (a rename is a millisecond; making a holder is
// hundreds). So a holder is bound when its step runs, not when the machine is made: a
// machine prepared ahead (vm.Preparer) does not hold one while it waits for its slot. The
// holder is given back once no process of the step can be left in the namespace (the
// container has exited, or it is removed), checked, then free for the run's next step or
// removed. Holders are made ahead so that they are seldom waited for: one beside each
// container created in its slot while no holder is free, being made or being checked, and
// one spare at the run's first take (a fan-out after a first step is the common shape),
// unless the run's steps run one at a time (vm.Spec.Sequential), whose next step takes the
// first holder back.
// A free holder goes after holderIdle unused, at Drain (vm.Drainer: the scheduler says the
// run makes no more machines, so its holders' teardown overlaps the last steps instead of
// following them) unless a machine of the run is yet to take it, and at Close. Holders carry
// the same labels as step containers (ephemeral, the owner), so the owner records and
// Reconcile treat them like any container: a killed hm's holders are removed by the next
// start (TestDockerKill9RecordRecovery). Holders are per run: two builds never share a
// namespace. A holder is made from a root image of its run (never a snapshot, whose removal
// it would hold up); a step whose run has made no container from a root image in this
// process, a container never started (CopyArtifacts), a continuable one (its namespace
// serves its chain's steps one after another already), the run's last container when every
// holder free or coming is another's (vm.Spec.Last: one made now would serve it alone, and
// a one-step run measured 0.76–0.81× with a namespace of its own) and every step under
// --network host get no holder.

// holderIdle is how long a free holder waits for its run's next step before it is removed.
const holderIdle = 20 * time.Second

// holderFiles are the files a holder shares with the containers that join it.
var holderFiles = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

type holder struct {
	id    string
	run   string
	files map[string]container.PathStat // holderFiles as the holder started with them
	timer *time.Timer                   // removes the holder when it stays free for holderIdle
}

// netPool is a Backend's holders.
type netPool struct {
	mu     sync.Mutex
	runs   map[string]*runNets
	all    map[*holder]bool // every holder alive
	closed bool             // Close has begun: no holder is made or handed out any more
	broken bool             // a holder could not be made: containers keep their own network
	bg     sync.WaitGroup   // holders being made, checked or removed
}

// runNets is one run's holders.
type runNets struct {
	base   string    // a root image a container of the run was made from
	free   []*holder // checked, waiting for a step
	making int       // holders being made
	check  int       // holders given back, being checked
	// want counts the run's containers made in a slot (Create, not Prepare) that have not
	// taken their holder yet: holders are made for them while they are created.
	want   int
	pend   int  // the run's containers (any) that have not taken their holder yet
	inUse  int  // holders a machine has
	spared bool // the run's spare holder was started (takeHolder)
	// drained: the run makes no more machines as far as its scheduler knows (Drain):
	// holders given back are removed, none is made ahead.
	drained bool
	err     error         // why the last holder could not be made, for a waiter
	ready   chan struct{} // closed (and replaced) when a holder becomes free or a making ends
}

// holderName returns the name a container made for spec finds its network holder by, ""
// when it gets none and keeps a network of its own. It is a fresh name: takeHolder gives it
// to the holder the container gets, right before the container starts. soon says the
// container is made in its step's slot and starts right away, so a holder is made for it
// now, while the container is created, if none is free.
func (b *Backend) holderName(spec vm.Spec, owner proc.Owner, soon bool) string {
	if b.opts.Network == "host" {
		return "" // no namespace to set up
	}
	p := &b.nets
	p.mu.Lock()
	defer p.mu.Unlock()
	rn := p.run(spec.Owner.RunID)
	if spec.Image != "" {
		rn.base = spec.Image
	}
	if rn.base == "" || p.closed || p.broken {
		return ""
	}
	if spec.Last && soon && len(rn.free)+rn.making+rn.check <= rn.want {
		// The run's last container, and every holder there is or will be is another's: one
		// made now would serve this container alone, and its making plus its teardown after
		// the step cost more than a namespace of the container's own (a one-step run).
		return ""
	}
	rn.pend++
	if soon {
		rn.want++
		for len(rn.free)+rn.making+rn.check < rn.want {
			b.makeHolder(spec, owner, rn)
		}
	}
	return "hm-net-" + randomHex(8)
}

// run returns run's holders, with p.mu held.
func (p *netPool) run(run string) *runNets {
	if p.runs == nil {
		p.runs, p.all = map[string]*runNets{}, map[*holder]bool{}
	}
	rn := p.runs[run]
	if rn == nil {
		rn = &runNets{ready: make(chan struct{})}
		p.runs[run] = rn
	}
	return rn
}

// forget drops rn once nothing of it is left, with p.mu held.
func (p *netPool) forget(run string, rn *runNets) {
	if len(rn.free) == 0 && rn.making == 0 && rn.check == 0 && rn.want == 0 && rn.pend == 0 && rn.inUse == 0 && p.runs[run] == rn {
		delete(p.runs, run)
	}
}

// makeHolder starts making a holder for rn in the background, with p.mu held.
func (b *Backend) makeHolder(spec vm.Spec, owner proc.Owner, rn *runNets) {
	p := &b.nets
	rn.making++
	rn.err = nil // a waiter reports the latest making's failure only
	base := rn.base
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		h, err := b.newHolder(context.Background(), spec, owner, base)
		p.mu.Lock()
		rn.making--
		if err == nil && (p.closed || rn.drained && rn.pend <= len(rn.free)) {
			p.mu.Unlock()
			b.dropHolder(context.Background(), h)
			p.mu.Lock()
		} else if err == nil {
			p.all[h] = true
			b.freeHolder(rn, h)
		} else {
			rn.err = err
			// Holders only spare work: once one cannot be made, later containers keep a
			// network of their own (the step that waited for it fails as infrastructure,
			// and its retry gets its own).
			p.broken = true
		}
		close(rn.ready)
		rn.ready = make(chan struct{})
		p.forget(spec.Owner.RunID, rn)
		p.mu.Unlock()
	}()
}

// freeHolder puts h among rn's free holders, with p.mu held.
func (b *Backend) freeHolder(rn *runNets, h *holder) {
	rn.free = append(rn.free, h)
	if h.timer == nil {
		h.timer = time.AfterFunc(holderIdle, func() { b.expireHolder(h) })
	} else {
		h.timer.Reset(holderIdle)
	}
}

// takeHolder returns a holder of spec's run, named name: a free one, else the next one made.
// wanted says the machine was counted in the run's want (holderName's soon). It is called
// once per holderName, unless untake is.
func (b *Backend) takeHolder(ctx context.Context, spec vm.Spec, owner proc.Owner, name string, wanted bool) (*holder, error) {
	p := &b.nets
	run := spec.Owner.RunID
	p.mu.Lock()
	rn := p.run(run)
	// Counted until it has a holder or gives up: a holder given back meanwhile is kept for
	// it even when the run is drained.
	taken := func() {
		rn.pend--
		if wanted {
			rn.want--
		}
	}
	for len(rn.free) == 0 {
		if p.closed {
			taken()
			p.mu.Unlock()
			return nil, fmt.Errorf("docker: network holder: %w: the backend is closing", errs.ErrCanceled)
		}
		if rn.making+rn.check == 0 {
			b.makeHolder(spec, owner, rn)
		}
		ready := rn.ready
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			taken()
			p.forget(run, rn)
			p.mu.Unlock()
			return nil, fmt.Errorf("docker: network holder: %w", ctx.Err())
		case <-ready:
		}
		p.mu.Lock()
		if len(rn.free) == 0 && rn.making+rn.check == 0 && rn.err != nil {
			err := rn.err
			rn.err = nil
			taken()
			p.forget(run, rn)
			p.mu.Unlock()
			return nil, err
		}
	}
	h := rn.free[len(rn.free)-1]
	rn.free = rn.free[:len(rn.free)-1]
	h.timer.Stop()
	rn.inUse++
	taken()
	// A run that takes a holder is likely to run another step beside it (a fan-out after a
	// first step): one more is made ahead, once per run, unless its steps run one at a time.
	if !rn.spared && !rn.drained && !spec.Sequential {
		rn.spared = true
		if len(rn.free)+rn.making == 0 {
			b.makeHolder(spec, owner, rn)
		}
	}
	p.mu.Unlock()
	if err := b.cli.ContainerRename(ctx, h.id, name); err != nil {
		// Checked like a used one: a holder removed behind hm's back fails the check and
		// goes (the step fails as infrastructure; its retry takes another).
		b.giveBack(h)
		return nil, apiErr(ctx, "rename network holder", err)
	}
	return h, nil
}

// newHolder creates and starts a holder from image base and stats its shared files.
func (b *Backend) newHolder(ctx context.Context, spec vm.Spec, owner proc.Owner, base string) (*holder, error) {
	cfg := &container.Config{Image: base, User: "0:0", Labels: b.labels(spec.Owner, owner, true)}
	cfg.Labels[LabelStep] = "" // the run's, no step's
	idleConfig(cfg)
	pids := int64(8)
	hc := &container.HostConfig{
		LogConfig:   container.LogConfig{Type: "none"},
		NetworkMode: container.NetworkMode(b.opts.Network),
		Resources:   container.Resources{PidsLimit: &pids},
	}
	name := "hm-net-" + randomHex(8)
	resp, err := b.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		return nil, apiErr(ctx, "create network holder", err)
	}
	b.madeContainer(resp.ID)
	h := &holder{id: resp.ID, run: spec.Owner.RunID}
	if err := b.cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		_ = b.removeContainer(ctx, resp.ID)
		return nil, apiErr(ctx, "start network holder", err)
	}
	if h.files, err = b.holderFiles(ctx, resp.ID); err != nil {
		_ = b.removeContainer(ctx, resp.ID)
		return nil, apiErr(ctx, "stat network holder's files", err)
	}
	return h, nil
}

// holderFiles stats holderFiles in container id: size, mode and modification time, which
// any write changes (see the package's comment on what this check is for). The three are
// asked at once: the check lies between a step's end and the next step's start on its slot.
func (b *Backend) holderFiles(ctx context.Context, id string) (map[string]container.PathStat, error) {
	stats := make([]container.PathStat, len(holderFiles))
	failed := make([]error, len(holderFiles))
	var wg sync.WaitGroup
	for i, path := range holderFiles {
		wg.Go(func() {
			if stats[i], failed[i] = b.cli.ContainerStatPath(ctx, id, path); failed[i] != nil {
				failed[i] = fmt.Errorf("stat %s: %w", path, failed[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(failed...); err != nil {
		return nil, err
	}
	out := make(map[string]container.PathStat, len(holderFiles))
	for i, path := range holderFiles {
		out[path] = stats[i]
	}
	return out, nil
}

// giveBack returns h once no process of the step that took it is left in its namespace. It
// is checked in the background, then free for the run's next step, or removed.
func (b *Backend) giveBack(h *holder) {
	p := &b.nets
	p.mu.Lock()
	rn := p.run(h.run)
	rn.check++
	// Drained, a holder is still kept for the run's containers that are yet to take one
	// (made ahead, their steps waiting for a slot).
	wanted := func() bool { return p.all[h] && !p.closed && (!rn.drained || rn.pend > len(rn.free)) }
	check := wanted() // none for a holder that goes anyway
	p.mu.Unlock()
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		ctx := context.Background()
		same := check // kept only once checked
		if check {
			files, err := b.holderFiles(ctx, h.id)
			same = err == nil
			for path, want := range h.files {
				got := files[path]
				same = same && got.Size == want.Size && got.Mode == want.Mode &&
					got.Mtime.Equal(want.Mtime) && got.LinkTarget == want.LinkTarget
			}
		}
		p.mu.Lock()
		rn.inUse--
		rn.check--
		keep := same && wanted()
		if keep {
			b.freeHolder(rn, h)
		}
		close(rn.ready) // a waiter takes it, or makes one if it is gone
		rn.ready = make(chan struct{})
		p.forget(h.run, rn)
		p.mu.Unlock()
		if !keep {
			b.dropHolder(ctx, h)
		}
	}()
}

var _ vm.Drainer = (*Backend)(nil)

// Drain implements vm.Drainer: the run's free holders are removed now, and each one in use
// when it is given back, so that their teardown overlaps the run's last steps instead of
// following them at Close.
func (b *Backend) Drain(run string) {
	p := &b.nets
	p.mu.Lock()
	rn := p.runs[run]
	if rn == nil || p.closed {
		p.mu.Unlock()
		return
	}
	rn.drained = true
	n := max(len(rn.free)-rn.pend, 0) // those no container of the run is yet to take
	free := rn.free[len(rn.free)-n:]
	rn.free = rn.free[:len(rn.free)-n]
	for _, h := range free {
		h.timer.Stop()
	}
	p.forget(run, rn)
	p.bg.Add(len(free))
	p.mu.Unlock()
	for _, h := range free {
		go func() {
			defer p.bg.Done()
			b.dropHolder(context.Background(), h)
		}()
	}
}

// untake undoes holderName for a machine destroyed before it took its holder.
func (b *Backend) untake(run string, wanted bool) {
	p := &b.nets
	p.mu.Lock()
	rn := p.run(run)
	rn.pend--
	if wanted {
		rn.want--
	}
	p.forget(run, rn)
	p.mu.Unlock()
}

// expireHolder removes h if it is still free.
func (b *Backend) expireHolder(h *holder) {
	p := &b.nets
	p.mu.Lock()
	rn := p.runs[h.run]
	i := -1
	if rn != nil {
		i = slices.Index(rn.free, h)
	}
	if i < 0 {
		p.mu.Unlock()
		return // taken meanwhile
	}
	rn.free = slices.Delete(rn.free, i, i+1)
	p.forget(h.run, rn)
	p.bg.Add(1)
	p.mu.Unlock()
	defer p.bg.Done()
	b.dropHolder(context.Background(), h)
}

// dropHolder removes h's container.
func (b *Backend) dropHolder(ctx context.Context, h *holder) {
	b.nets.mu.Lock()
	delete(b.nets.all, h)
	b.nets.mu.Unlock()
	_ = b.removeContainer(ctx, h.id) // a failure marks the account (owners.go)
}

// closeHolders removes every holder, once those being made or checked are done; for Close.
func (b *Backend) closeHolders() {
	p := &b.nets
	p.mu.Lock()
	p.closed = true
	for _, rn := range p.runs {
		close(rn.ready) // waiters see closed
		rn.ready = make(chan struct{})
	}
	p.mu.Unlock()
	p.bg.Wait()
	p.mu.Lock()
	hs := make([]*holder, 0, len(p.all))
	for h := range p.all {
		if h.timer != nil {
			h.timer.Stop()
		}
		hs = append(hs, h)
	}
	p.all, p.runs = map[*holder]bool{}, map[string]*runNets{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() { _ = b.removeContainer(context.Background(), h.id) })
	}
	wg.Wait()
	p.bg.Wait() // an expiry that began before the lock
}
