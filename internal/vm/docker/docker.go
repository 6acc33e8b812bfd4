// Package docker is the `docker` VM backend: every step runs in a container of the Docker
// Engine, and a snapshot is an image committed from the step's container.
//
// # Lifecycle of a step
//
// Create makes a container (not started) from the root image or the parent snapshot, running
// `/bin/sh -c CMD` as root in /workspace; Inject streams the workspace as a tar through the
// archive API into the created container; Run attaches, starts, copies the demultiplexed
// output and waits; Commit commits the exited container; Destroy force-removes it. Apart from
// the copy these are the calls `docker run` + `docker commit` make; an idle container driven
// by exec measured slower (bench/docker compares all three) where all of it is on the step's
// path. A step's container joins the network namespace of a holder its run keeps
// (netpool.go) instead of having the daemon set one up and tear it down, which was most of a
// short step's cost. A machine prepared while its step waits for a slot (Prepare,
// vm.Preparer) is created and given the workspace then; with no holder to join (--network
// host, or a run with no root image seen) it is an idle container started before the slot,
// whose slot then holds one exec. The scheduler removes every container after the slot is
// freed.
//
// # Labels
//
// Everything hm creates carries dev.hm.run, dev.hm.step, dev.hm.owner (proc.Owner: PID and
// start time of the owning hm process), dev.hm.ephemeral (true for containers and ephemeral
// snapshots), dev.hm.host (the hostname, so that hm processes sharing one daemon from
// different hosts or containers never judge each other's PIDs) and dev.hm.state (the state
// directory, whose registry references the snapshot). Reconcile removes containers and
// ephemeral snapshots whose owner is gone; PruneSnapshots removes kept snapshots of the same
// state directory that its registry does not reference.
//
// # Snapshots
//
// A snapshot id is the committed image's id (sha256:...). Every live snapshot is also tagged
// hm-snapshot:k-RANDOM (kept) or hm-snapshot:e-RANDOM (ephemeral): the tag protects it from
// `docker image prune` and from the daemon's pruning of untagged parents, and marks it live.
// RemoveSnapshot removes the tag; the daemon deletes the image with it unless a child image
// (a snapshot committed on top of it) still needs its layers, in which case the untagged image
// lingers as an intermediate image and is pruned together with its last child. An image
// without its tag no longer counts as a snapshot (SnapshotExists is false, Create refuses it).
//
// # Environment
//
// The daemon copies a container's config into the image it commits (Config.Env merged, and
// the whole ContainerConfig), which would bake every step's variables (secrets included)
// into the snapshot and hand them to children. A step's environment therefore never enters
// its container's config: it comes on stdin or with the exec (env.go), and Commit stores the
// base image's variables as they were. A child sees exactly its own Spec.Env over the root
// image's environment, and no step's values are stored in any image.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
)

// Labels on every container and image hm creates.
const (
	LabelRun       = "dev.hm.run"
	LabelStep      = "dev.hm.step"
	LabelOwner     = "dev.hm.owner"
	LabelEphemeral = "dev.hm.ephemeral"
	LabelHost      = "dev.hm.host"
	LabelState     = "dev.hm.state"
)

// SnapshotRepo is the repository of the tags that mark live snapshots.
const SnapshotRepo = "hm-snapshot"

// Options configures New.
type Options struct {
	// Host is the daemon address (as DOCKER_HOST); "" uses the environment (DOCKER_HOST,
	// DOCKER_API_VERSION, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY) and then the default socket.
	Host string
	// PingTimeout bounds the check that a daemon answers; 0 means 5s.
	PingTimeout time.Duration
	// StateDir is hm's state directory. Snapshots are labelled with it, and PruneSnapshots
	// only considers snapshots of the same state directory: another one's registry may
	// reference the rest.
	StateDir string
	// Network is every container's network mode: "" the daemon's default (its bridge),
	// "none" or "host".
	Network string
	// Limits of every step's container (HostConfig.Resources); 0: none.
	PidsLimit int64   // tasks (--pids-limit)
	Memory    int64   // bytes (--memory)
	CPUs      float64 // CPUs' worth of time, fractional (--cpus)
}

// Backend is the Docker backend. It is safe for concurrent use, also by several hm processes
// sharing one daemon.
type Backend struct {
	cli   *client.Client
	host  string // hostname, for LabelHost
	state string // Options.StateDir, for LabelState
	opts  Options
	// ownerOf names the hm process behind vm.Owner.PID; tests replace it to fake dead owners.
	ownerOf func(pid int) (proc.Owner, error)

	mu sync.Mutex
	// envs caches the Env of images by id (images are immutable): root images as inspected,
	// snapshots as Commit wrote them. It saves an inspect per Create.
	envs map[string][]string
	// gen counts this backend's commits and snapshot removals; listing is Reconcile's.
	gen     uint64
	listing *listing
	// light: when Reconcile last found nothing to clean without asking the daemon (owners.go).
	light time.Time
	// The owner records this backend wrote, and its account of what it made (owners.go).
	records, live, eph, linger map[string]bool
	dirty                      bool
	resolved                   map[string]resolvedRef // ResolveLocal's answers, by reference

	nets netPool // network holders (netpool.go)
}

type resolvedRef struct {
	id string
	at time.Time
}

var (
	_ vm.Backend        = (*Backend)(nil)
	_ vm.SnapshotLister = (*Backend)(nil)
	_ vm.Preparer       = (*Backend)(nil)
)

// New connects to the Docker daemon and negotiates the API version. When no daemon answers
// it returns an *errs.UnavailableError (class errs.ErrUnavailable) naming the address it tried.
func New(ctx context.Context, opts Options) (*Backend, error) {
	copts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if opts.Host != "" {
		copts = append(copts, client.WithHost(opts.Host))
	}
	cli, err := client.NewClientWithOpts(copts...)
	if err != nil {
		return nil, &errs.UnavailableError{Backend: "docker", Err: err,
			Msg: fmt.Sprintf("cannot set up a Docker client: %v", err)}
	}
	timeout := opts.PingTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ping, err := cli.Ping(pctx)
	if err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("docker: connect: %w", ctx.Err())
		}
		return nil, &errs.UnavailableError{Backend: "docker", Address: cli.DaemonHost(), Err: err,
			Msg: fmt.Sprintf("no Docker daemon answers at %s: %v", cli.DaemonHost(), err)}
	}
	cli.NegotiateAPIVersionPing(ping)
	host, _ := os.Hostname()
	return &Backend{cli: cli, host: host, state: opts.StateDir, opts: opts, ownerOf: ownerOf, envs: map[string][]string{}}, nil
}

// Close removes the network holders (netpool.go), then this process's owner records when it
// left nothing behind (owners.go), and releases the client's connections.
func (b *Backend) Close() error {
	b.closeHolders()
	b.release()
	return b.cli.Close()
}

// Client is the Docker API client the backend uses (for benchmarks and diagnostics).
func (b *Backend) Client() *client.Client { return b.cli }

func ownerOf(pid int) (proc.Owner, error) {
	if pid == 0 || pid == os.Getpid() {
		return proc.Self(), nil
	}
	return proc.OwnerOf(pid)
}

// Name implements vm.Backend.
func (b *Backend) Name() string { return "docker" }

// ResolveImage implements vm.Backend: the local image's id, pulling the image first when it
// is absent and a registry answers.
func (b *Backend) ResolveImage(ctx context.Context, ref string) (string, error) {
	id, err := b.ResolveLocal(ctx, ref)
	if !errors.Is(err, errs.ErrImageNotFound) {
		return id, err
	}
	pullErr := b.pull(ctx, ref)
	var ins image.InspectResponse
	if pullErr == nil {
		if ins, err = b.cli.ImageInspect(ctx, ref); err == nil {
			b.cacheEnv(ins.ID, inspectEnv(ins))
			return ins.ID, nil
		}
		pullErr = err
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("docker: resolve image %s: %w", ref, ctx.Err())
	}
	if client.IsErrConnectionFailed(pullErr) {
		return "", apiErr(ctx, "pull "+ref, pullErr)
	}
	return "", &errs.ImageError{Ref: ref, Backend: "docker", Where: errs.InDocker,
		Class: errs.ErrImageNotFound, Err: pullErr,
		Msg: fmt.Sprintf("image %q is not in the Docker daemon and could not be pulled: %v", ref, pullErr)}
}

// ResolveLocal is ResolveImage without the pull: the id of the image the daemon has now, or
// an *errs.ImageError (errs.ErrImageNotFound). --backend auto asks it of every candidate
// before it pulls anything.
//
// A reference resolved within the last listingTTL is not asked again: a start resolves each
// root image twice (choosing the backend, then building), moments apart.
func (b *Backend) ResolveLocal(ctx context.Context, ref string) (string, error) {
	b.mu.Lock()
	r, ok := b.resolved[ref]
	b.mu.Unlock()
	if ok && time.Since(r.at) < listingTTL {
		return r.id, nil
	}
	ins, err := b.cli.ImageInspect(ctx, ref)
	if err == nil {
		b.cacheEnv(ins.ID, inspectEnv(ins))
		b.mu.Lock()
		if b.resolved == nil {
			b.resolved = map[string]resolvedRef{}
		}
		b.resolved[ref] = resolvedRef{id: ins.ID, at: time.Now()}
		b.mu.Unlock()
		return ins.ID, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return "", apiErr(ctx, "inspect image "+ref, err)
	}
	return "", &errs.ImageError{Ref: ref, Backend: "docker", Where: errs.InDocker, Class: errs.ErrImageNotFound,
		Msg: fmt.Sprintf("image %q is not in the Docker daemon", ref)}
}

// pull pulls ref, reading the progress stream to its end: the daemon reports failures in it.
func (b *Backend) pull(ctx context.Context, ref string) error {
	rc, err := b.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// Create implements vm.Backend.
func (b *Backend) Create(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	return b.create(ctx, spec, inSlot)
}

// Prepare implements vm.Preparer: the container is created and started idle (exec.go), so
// that the step's slot holds an exec alone: no container start, and the exit status comes
// from an exec inspect instead of waiting for the daemon to tear the container down (its
// removal, which kills the idle init, happens after the slot is freed).
func (b *Backend) Prepare(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	return b.create(ctx, spec, ahead)
}

// createMode says what a container is made for.
type createMode int

const (
	inSlot createMode = iota // Create: its step has its slot and runs right away
	ahead                    // Prepare: its step waits for a slot
	inert                    // never started (CopyArtifacts): no network at all
)

// create makes a step's container; started idle when prepared without a network holder,
// continuable, or given an environment that cannot come on stdin.
func (b *Backend) create(ctx context.Context, spec vm.Spec, mode createMode) (vm.Machine, error) {
	ready := mode == ahead
	if (spec.Image == "") == (spec.Parent == "") {
		return nil, fmt.Errorf("docker: create: %w: exactly one of Image and Parent must be set", errs.ErrInfra)
	}
	owner, err := b.ownerOf(spec.Owner.PID)
	if err != nil {
		return nil, fmt.Errorf("docker: create: %w: owner process %d: %v", errs.ErrInfra, spec.Owner.PID, err)
	}
	base := spec.Image
	if spec.Parent != "" {
		base = spec.Parent
	}
	baseEnv, err := b.baseEnv(ctx, base, spec.Parent != "")
	if err != nil {
		return nil, err
	}
	if err := b.record(owner); err != nil {
		return nil, fmt.Errorf("docker: create: %w: record the owner in the state dir: %w", errs.ErrInfra, err)
	}
	name := "hm-" + randomHex(8)
	cfg := &container.Config{
		Image: base,
		// The entrypoint, not Cmd: an image's ENTRYPOINT must not wrap the step's shell.
		Entrypoint: []string{"/bin/sh", "-c", spec.Cmd},
		Env:        spec.Env,
		WorkingDir: vm.Workdir,
		// Steps run as root, who owns the injected workspace (source.Tree.WriteTar).
		User:         "0:0",
		AttachStdout: true,
		AttachStderr: true,
		Labels:       b.labels(spec.Owner, owner, true),
	}
	// Output reaches hm through the attach stream; a log file would only cost disk writes.
	hc := &container.HostConfig{
		LogConfig:   container.LogConfig{Type: "none"},
		NetworkMode: container.NetworkMode(b.opts.Network),
		Resources: container.Resources{
			Memory:   b.opts.Memory,
			NanoCPUs: int64(b.opts.CPUs * 1e9),
		},
	}
	if n := b.opts.PidsLimit; n > 0 {
		hc.Resources.PidsLimit = &n
	}
	release := func() {}
	if len(spec.CacheDirs) > 0 {
		if hc.Mounts, release, err = b.cacheMounts(ctx, spec.CacheDirs); err != nil {
			return nil, err
		}
	}
	// The network namespace is a holder's (netpool.go), found by name when the container
	// starts: an idle container takes one now, any other when its step runs.
	netName := ""
	switch {
	case mode == inert:
		hc.NetworkMode = "none"
	case spec.Continuable:
		// Its namespace serves the steps of its chain one after another already: a holder
		// would only add one to make and tear down.
	default:
		netName = b.holderName(spec, owner, mode == inSlot)
	}
	if netName != "" {
		hc.NetworkMode = container.NetworkMode("container:" + netName)
	}
	// The environment reaches the step on stdin or with an exec, never through the config
	// (env.go). A prepared machine with a network holder is only created: its start, with
	// no namespace to set up, is cheap, and taking the holder when the step runs keeps it
	// free for the step running meanwhile.
	execMode := ready && netName == "" || spec.Continuable || !stdinEnv(cfg, spec.Cmd, spec.Env)
	if execMode {
		idleConfig(cfg)
	}
	resp, err := b.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		release()
		if netName != "" {
			b.untake(spec.Owner.RunID, mode == inSlot)
		}
		// A canceled request may still have created the container: remove it by name.
		if ctx.Err() != nil {
			if b.removeContainer(context.WithoutCancel(ctx), name) != nil {
				b.failed()
			}
		}
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("docker: create from %s: %w: %w", base, errs.ErrInfra, err)
		}
		return nil, apiErr(ctx, "create container", err)
	}
	b.madeContainer(resp.ID)
	m := &machine{b: b, id: resp.ID, spec: spec, owner: owner, baseEnv: baseEnv, exec: execMode, release: release, netName: netName, toTake: netName != "", wanted: netName != "" && !ready}
	if execMode {
		err := m.takeNet(ctx)
		if err == nil {
			err = b.cli.ContainerStart(context.WithoutCancel(ctx), resp.ID, container.StartOptions{})
			if err != nil {
				err = apiErr(ctx, "start container", err)
			}
		}
		if err != nil {
			m.mu.Lock()
			if b.removeContainer(context.WithoutCancel(ctx), resp.ID) == nil {
				m.giveBackNet()
			}
			m.mu.Unlock()
			release()
			return nil, err
		}
	}
	return m, nil
}

// baseEnv returns the environment stored in image id. A snapshot must still carry its tag.
func (b *Backend) baseEnv(ctx context.Context, id string, snapshot bool) ([]string, error) {
	b.mu.Lock()
	env, ok := b.envs[id]
	b.mu.Unlock()
	if ok {
		return env, nil
	}
	ins, err := b.cli.ImageInspect(ctx, id)
	switch {
	case cerrdefs.IsNotFound(err):
		if snapshot {
			return nil, fmt.Errorf("docker: create: %w: snapshot %s does not exist", errs.ErrInfra, id)
		}
		return nil, errs.New(errs.ErrImageNotFound, "image_not_found",
			"resolve the image again (it was removed from the Docker daemon)", "image %s does not exist", id)
	case err != nil:
		return nil, apiErr(ctx, "inspect image "+id, err)
	case snapshot && snapshotTag(ins.RepoTags) == "":
		return nil, fmt.Errorf("docker: create: %w: snapshot %s was removed", errs.ErrInfra, id)
	}
	env = inspectEnv(ins)
	b.cacheEnv(ins.ID, env)
	return env, nil
}

func inspectEnv(ins image.InspectResponse) []string {
	if ins.Config == nil {
		return nil
	}
	return ins.Config.Env
}

func (b *Backend) cacheEnv(id string, env []string) {
	b.mu.Lock()
	b.envs[id] = env
	b.mu.Unlock()
}

func (b *Backend) forgetEnv(id string) {
	b.mu.Lock()
	delete(b.envs, id)
	b.mu.Unlock()
}

func (b *Backend) labels(o vm.Owner, owner proc.Owner, ephemeral bool) map[string]string {
	return map[string]string{
		LabelRun:       o.RunID,
		LabelStep:      o.StepKey,
		LabelOwner:     owner.String(),
		LabelEphemeral: fmt.Sprint(ephemeral),
		LabelHost:      b.host,
		LabelState:     b.state,
	}
}

// SnapshotSize implements vm.Backend: the bytes the committed image's own layer adds.
func (b *Backend) SnapshotSize(ctx context.Context, id string) (int64, error) {
	hist, err := b.cli.ImageHistory(ctx, id)
	if err != nil {
		return 0, apiErr(ctx, "snapshot size "+id, err)
	}
	if len(hist) == 0 {
		return 0, nil
	}
	return hist[0].Size, nil // newest first: the commit's layer
}

// SnapshotExists implements vm.Backend: the image exists and still carries its snapshot tag.
func (b *Backend) SnapshotExists(ctx context.Context, id string) (bool, error) {
	ins, err := b.cli.ImageInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, apiErr(ctx, "inspect snapshot "+id, err)
	}
	return snapshotTag(ins.RepoTags) != "", nil
}

// RemoveSnapshot implements vm.Backend. Idempotent. It removes the snapshot's tag; the
// daemon deletes the image with it, and any untagged parent images left from earlier
// removals that only this image kept alive.
func (b *Backend) RemoveSnapshot(ctx context.Context, id string) error {
	b.forgetEnv(id)
	b.wrote()
	ins, err := b.cli.ImageInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		b.removedSnapshot(id, false)
		return nil
	}
	if err != nil {
		b.failed()
		return apiErr(ctx, "remove snapshot "+id, err)
	}
	lingering := false
	for _, tag := range ins.RepoTags {
		if !strings.HasPrefix(tag, SnapshotRepo+":") {
			continue
		}
		// Removing a reference deletes the image when nothing else needs it, and otherwise
		// only the reference. Force lets it go while a (stopped or running) container uses
		// the image; the image itself then stays until reconcile finds it untagged.
		resp, err := b.cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			b.failed()
			return apiErr(ctx, "remove snapshot "+id, err)
		}
		lingering = err == nil && !slices.ContainsFunc(resp, func(r image.DeleteResponse) bool { return r.Deleted == ins.ID })
	}
	b.removedSnapshot(ins.ID, lingering)
	return nil
}

// snapshotTag returns the snapshot tag among tags, "" if there is none.
func snapshotTag(tags []string) string {
	for _, t := range tags {
		if strings.HasPrefix(t, SnapshotRepo+":") {
			return t
		}
	}
	return ""
}

// removeContainer force-removes a container (killing it if it runs); gone already is fine.
func (b *Backend) removeContainer(ctx context.Context, id string) error {
	err := b.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	// Gone already, or another Destroy or a reconcile is removing it right now.
	if err == nil || cerrdefs.IsNotFound(err) ||
		cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
		b.removedContainer(id)
		return nil
	}
	b.failed()
	return apiErr(ctx, "remove container "+id, err)
}

// apiErr classifies a Docker API error: a daemon that does not answer is
// errs.ErrUnavailable, the caller's cancellation stays itself, the rest is errs.ErrInfra.
func apiErr(ctx context.Context, op string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("docker: %s: %w", op, ctx.Err())
	case client.IsErrConnectionFailed(err):
		return fmt.Errorf("docker: %s: %w: %w", op, errs.ErrUnavailable, err)
	}
	return fmt.Errorf("docker: %s: %w: %w", op, errs.ErrInfra, err)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}
