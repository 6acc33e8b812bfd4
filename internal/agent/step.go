package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// cleanupTimeout bounds Destroy and RemoveSnapshot of a step that ended.
const cleanupTimeout = 30 * time.Second

func jobPath(p, id string) string { return strings.Replace(p, "{job_id}", id, 1) }

// runJob runs one claimed job to its Finish, or drops it (409/404, or ctx ending: the lease
// lapses and the server retries the step). While claimCtx lasts, the Finish claims the next
// job for worker, which it returns (nil for none). The Finish is retried as it was sent,
// Next included: a retry after a lost reply gets the job the first one claimed.
func (a *Agent) runJob(ctx, claimCtx context.Context, worker string, j agentproto.Job) *agentproto.Job {
	log := a.cfg.Logger.With("job", j.JobID, "step", j.StepKey, "attempt", j.Attempt)
	start := time.Now()
	mask := secret.NewMasker(slices.Collect(maps.Values(j.Secrets))...)
	fin, err := a.execute(ctx, j, mask)
	if err != nil {
		if !errors.Is(err, ErrDropped) && ctx.Err() == nil {
			log.Warn("step dropped", "err", err.Error())
		} else {
			log.Info("step dropped", "err", err.Error())
		}
		return nil
	}
	fin.Attempt = j.Attempt
	fin.ErrorMessage = mask.String(fin.ErrorMessage) // it may quote the step's environment
	fin.DurationMillis = time.Since(start).Milliseconds()
	if claimCtx.Err() == nil {
		fin.Next = &agentproto.Claim{AgentID: a.id, Slots: 1, Worker: worker}
	}
	var st agentproto.State
	if _, err := a.c.call(ctx, http.MethodPost, jobPath(agentproto.PathFinish, j.JobID), fin, &st, agentproto.FinishNextWait, nil); err != nil {
		log.Warn("finish not recorded", "err", err.Error())
		if fin.Snapshot != "" {
			a.removeSnapshot(fin.Snapshot)
		}
		return nil
	}
	log.Info("step finished", "exit_code", fin.ExitCode, "state", st.State)
	return st.Next
}

func (a *Agent) removeSnapshot(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_ = a.cfg.Backend.RemoveSnapshot(ctx, id)
}

// infra is the Finish of a step that could not run.
func infra(err error) agentproto.Finish {
	return agentproto.Finish{ExitCode: -1, ErrorCode: "agent_error", ErrorMessage: err.Error()}
}

// execute runs the step and returns its Finish; an error means drop the work. The step's
// secrets are in its environment only (never in a snapshot: a backend commits the
// filesystem, not the env), and mask masks them in its output before the shipper sees it.
func (a *Agent) execute(ctx context.Context, j agentproto.Job, mask *secret.Masker) (agentproto.Finish, error) {
	// The step's context: ctx (the agent killed), or a heartbeat's stop or drop.
	stepCtx, stopStep := context.WithCancelCause(ctx)
	defer stopStep(nil)
	// Start goes out while the machine is prepared (source, Create, Inject), not before:
	// its round trip is off the step's path. Nothing of the step runs, and nothing is
	// reported about it (logs, Finish), before the server has answered it: a refused start
	// drops the work, and the prepared machine is destroyed.
	hb := &heartbeat{}
	startc := make(chan error, 1)
	hbDone := make(chan struct{})
	hbCtx, stopHB := context.WithCancel(ctx)
	go func() {
		defer close(hbDone)
		var st agentproto.State
		_, err := a.c.call(ctx, http.MethodPost, jobPath(agentproto.PathStart, j.JobID), agentproto.Fence{Attempt: j.Attempt}, &st, 0, nil)
		startc <- err
		if err == nil {
			a.heartbeat(hbCtx, j, hb, stopStep)
		}
	}()
	defer func() { stopHB(); <-hbDone }()
	started := sync.OnceValue(func() error { return <-startc })
	ended := func(fin agentproto.Finish) (agentproto.Finish, error) {
		if err := started(); err != nil {
			return agentproto.Finish{}, err
		}
		return a.ended(ctx, hb, fin)
	}

	tree, err := a.source(stepCtx, j.SourceDigest)
	if err != nil {
		return ended(infra(fmt.Errorf("source: %w", err)))
	}
	env := slices.Clone(j.Env)
	for _, name := range slices.Sorted(maps.Keys(j.Secrets)) {
		env = append(env, name+"="+j.Secrets[name])
	}
	spec := vm.Spec{Parent: j.ParentSnapshot, Cmd: j.Command, Env: env,
		Owner: vm.Owner{RunID: j.BuildID, StepKey: j.StepKey, PID: os.Getpid()}}
	if err := ir.CheckCacheDirs("step "+j.StepKey, j.CacheDirs); err != nil {
		return ended(infra(err))
	}
	for _, p := range j.CacheDirs {
		spec.CacheDirs = append(spec.CacheDirs, vm.CacheDir{Org: j.CacheDirOrg, Pipeline: j.CacheDirPipeline, Path: p})
	}
	if j.ParentSnapshot == "" {
		if spec.Image, err = a.cfg.Backend.ResolveImage(stepCtx, j.Image); err != nil {
			return ended(infra(err))
		}
	}
	m, err := a.cfg.Backend.Create(stepCtx, spec)
	if err != nil {
		return ended(infra(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = m.Destroy(dctx)
	}()
	if tree != nil {
		if err := m.Inject(stepCtx, tree); err != nil {
			return ended(infra(fmt.Errorf("inject: %w", err)))
		}
	}

	if err := started(); err != nil {
		return agentproto.Finish{}, err
	}
	sh := newShipper(a.c, j.JobID, j.Attempt)
	shDone := make(chan struct{})
	go func() { defer close(shDone); sh.run(ctx) }()
	// Masked in the byte stream, before it is cut into lines: a value split across writes or
	// lines is still whole there.
	stdoutL := events.NewLineWriter(sh.stream(agentproto.Stdout))
	stderrL := events.NewLineWriter(sh.stream(agentproto.Stderr))
	stdout, stderr := mask.Writer(stdoutL), mask.Writer(stderrL)
	code, runErr := m.Run(stepCtx, stdout, stderr)
	_, _ = stdout.Flush(), stderr.Flush()
	stdoutL.Flush()
	stderrL.Flush()
	fin := agentproto.Finish{ExitCode: code}
	switch {
	case runErr != nil && hb.stop() != "":
		fin.ExitCode = 130 // the server records canceled or timed_out from its state
		if hb.stop() == agentproto.StopTimeout {
			fin.ExitCode = 124
		}
	case runErr != nil:
		if cause := context.Cause(stepCtx); cause != nil && (ctx.Err() != nil || errors.Is(cause, ErrDropped)) {
			return agentproto.Finish{}, fmt.Errorf("%w: %w", ErrDropped, cause)
		}
		fin = infra(runErr)
	case code == 0 && j.NeedsSnapshot:
		snap, err := m.Commit(stepCtx, j.Ephemeral)
		if err != nil {
			fin = infra(fmt.Errorf("commit: %w", err))
			break
		}
		fin.Snapshot = snap
		if len(j.Artifacts) == 0 {
			break
		}
		arts, warnings, err := a.collectArtifacts(stepCtx, j, snap)
		if err != nil {
			// The step fails as one that could not run; its snapshot is nobody's. Beyond
			// the bounds it is final, as locally: the same files would fail again.
			a.removeSnapshot(snap)
			fin = infra(fmt.Errorf("artifacts: %w", err))
			if errors.Is(err, artifact.ErrTooLarge) {
				e := artifact.Exceeded(err)
				fin.ErrorCode, fin.ErrorMessage = e.Code(), e.Error()
			}
			break
		}
		fin.Artifacts = arts
		for _, w := range warnings[:min(len(warnings), agentproto.MaxArtifactWarnings)] {
			fin.ArtifactWarnings = append(fin.ArtifactWarnings, mask.String(w))
		}
	}
	if _, err := sh.close(ctx); err != nil {
		if fin.Snapshot != "" {
			a.removeSnapshot(fin.Snapshot)
		}
		return agentproto.Finish{}, fmt.Errorf("logs: %w", err)
	}
	<-shDone
	return ended(fin)
}

// ended returns fin unless the heartbeat learned the work is not ours any more.
func (a *Agent) ended(ctx context.Context, hb *heartbeat, fin agentproto.Finish) (agentproto.Finish, error) {
	if err := hb.dropped(); err != nil {
		return agentproto.Finish{}, err
	}
	if ctx.Err() != nil {
		return agentproto.Finish{}, fmt.Errorf("%w: %w", ErrDropped, context.Cause(ctx))
	}
	return fin, nil
}

// heartbeat is what the heartbeat goroutine learned.
type heartbeat struct {
	mu      sync.Mutex
	stopped string
	drop    error
}

func (h *heartbeat) stop() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped
}

func (h *heartbeat) dropped() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drop
}

// heartbeat extends the lease every min(TTL/3, StopPoll) until ctx ends. A stop in the reply
// cancels the step; a refusal (409/404) drops it. A transient failure is retried at the next
// tick (each heartbeat is one request): a cut shorter than the lease loses nothing.
func (a *Agent) heartbeat(ctx context.Context, j agentproto.Job, h *heartbeat, stopStep context.CancelCauseFunc) {
	every := min(j.LeaseTTL()/3, a.cfg.StopPoll)
	if every <= 0 {
		every = a.cfg.StopPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var st agentproto.State
		_, err := a.c.once(ctx, http.MethodPost, jobPath(agentproto.PathHeartbeat, j.JobID), agentproto.Fence{Attempt: j.Attempt}, &st, max(every, time.Second))
		switch {
		case err == nil && st.Stop != "":
			h.mu.Lock()
			first := h.stopped == ""
			h.stopped = st.Stop
			h.mu.Unlock()
			if first {
				stopStep(errors.New("the server asked to stop the step: " + st.Stop))
			}
		case err != nil && classify(ctx, err) == drop:
			h.mu.Lock()
			h.drop = fmt.Errorf("%w: %w", ErrDropped, err)
			h.mu.Unlock()
			stopStep(h.drop)
			return
		}
	}
}

// source returns the build's source tree, fetched and extracted once per digest. The tree is
// the archive's entries as extracted (kept in tree.json beside the files), never a walk of
// the extracted directory: a walk would re-apply .gitignore files and this machine's git
// excludes to a source the client filtered already, and drop what they match.
func (a *Agent) source(ctx context.Context, digest string) (*source.Tree, error) {
	if digest == "" {
		return nil, nil
	}
	hex, ok := strings.CutPrefix(digest, source.DigestPrefix)
	if !ok || len(hex) != 64 || strings.ContainsAny(hex, "/.") {
		return nil, fmt.Errorf("bad digest %q", digest)
	}
	root := filepath.Join(a.cfg.StateDir, "agent", "trees")
	dir := filepath.Join(root, hex)
	if _, err := os.Stat(dir); err != nil {
		if err := a.fetch(ctx, digest, root, dir); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tree.json"))
	if err != nil {
		return nil, err
	}
	var t source.Tree
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, fmt.Errorf("source %s: tree.json: %w", digest, err)
	}
	t.Root = filepath.Join(dir, "files")
	return &t, nil
}

// fetch downloads and extracts the archive (files/, and its entries in tree.json) into a
// fresh directory renamed to dir once whole and checked, so a crash or a bad digest never
// leaves a half tree under the digest's name.
func (a *Agent) fetch(ctx context.Context, digest, root, dir string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	tmpArchive, err := os.CreateTemp(root, "fetch-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(tmpArchive.Name())
	defer tmpArchive.Close()
	reset := func() { _, _ = tmpArchive.Seek(0, 0); _ = tmpArchive.Truncate(0) }
	if _, err := a.c.call(ctx, http.MethodGet, strings.Replace(agentproto.PathSource, "{digest}", digest, 1), nil, tmpArchive, 5*time.Minute, reset); err != nil {
		return err
	}
	if _, err := tmpArchive.Seek(0, 0); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(root, "extract-*")
	if err != nil {
		return err
	}
	err = os.Mkdir(filepath.Join(tmp, "files"), 0o755)
	var tree *source.Tree
	if err == nil {
		tree, err = source.ExtractArchiveTree(tmpArchive, digest, filepath.Join(tmp, "files"))
	}
	var raw []byte
	if err == nil {
		tree.Root = "" // set when read: the directory is renamed
		raw, err = json.Marshal(tree)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(tmp, "tree.json"), raw, 0o600)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil {
			return nil // another slot extracted it first
		}
		return err
	}
	return nil
}
