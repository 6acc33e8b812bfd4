package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/artifact"
)

// backend is the vm.Backend whose machines are the build's jobs. Images, snapshots and their
// removal belong to the agents: here an image reference is its own id and snapshots are
// opaque names the agents reported.
type backend struct{ d *driver }

func (b *backend) Name() string { return b.d.cfg.Backend }

func (b *backend) ResolveImage(_ context.Context, ref string) (string, error) { return ref, nil }

func (b *backend) Create(ctx context.Context, spec vm.Spec) (vm.Machine, error) {
	j, ok := b.d.byKey[spec.Owner.StepKey]
	if !ok {
		return nil, fmt.Errorf("%w: no job for step %q", errs.ErrInfra, spec.Owner.StepKey)
	}
	// A job another driver released already (or an agent runs, or finished) is continued,
	// never released twice. Attempt n > 1 of the step's retry policy runs the failed job
	// again (RetryJob); a retry another driver made already is continued the same way.
	try := policyAttempt(spec.Env)
	var err error
	if try > 1 {
		_, err = b.d.cfg.Store.RetryJob(b.d.life, j.ID, try, b.d.cfg.Now())
	} else {
		_, err = b.d.cfg.Store.ReleaseJob(b.d.life, j.ID, b.d.cfg.Now())
	}
	if err != nil && !store.IsConflict(err) {
		return nil, err
	}
	return &machine{d: b.d, id: j.ID, try: try}, nil
}

// policyAttempt is the HM_ATTEMPT the scheduler gave the attempt's machine (the last one
// wins, as in an environment), 1 when there is none.
func policyAttempt(env []string) int {
	n := 1
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HM_ATTEMPT="); ok {
			if i, err := strconv.Atoi(v); err == nil && i > 0 {
				n = i
			}
		}
	}
	return n
}

var _ vm.ArtifactCopier = (*backend)(nil)

// CopyArtifacts answers the artifacts the step's job records: those its agent copied out of
// the snapshot and uploaded (FinishJob), or on a cache hit the entry's (PassCached). Their
// bytes stay in the server's blob dir, so nothing is written to dst: the scheduler publishes
// the step_artifact events, and a client downloads the files (the build's artifacts route).
func (b *backend) CopyArtifacts(ctx context.Context, _ string, owner vm.Owner, _ []string, _ *os.Root) (artifact.Result, error) {
	j, ok := b.d.byKey[owner.StepKey]
	if !ok {
		return artifact.Result{}, fmt.Errorf("%w: no job for step %q", errs.ErrInfra, owner.StepKey)
	}
	j, err := b.d.cfg.Store.GetJob(b.d.life, j.ID)
	if err != nil {
		return artifact.Result{}, err
	}
	a, err := ParseArtifacts(j.Artifacts)
	if err != nil {
		return artifact.Result{}, fmt.Errorf("%w: job %s: %w", errs.ErrInfra, j.ID, err)
	}
	return artifact.Result{Files: a.Files, Warnings: a.Warnings}, nil
}

// Artifacts is a job's (and a cache entry's) store.Job.Artifacts: the files, and the copy's
// warnings, which the scheduler logs on the run and on every hit, as locally.
type Artifacts struct {
	Files    []artifact.File `json:"files"`
	Warnings []string        `json:"warnings,omitempty"`
}

// ParseArtifacts reads stored artifacts; none for nil.
func ParseArtifacts(raw []byte) (Artifacts, error) {
	var a Artifacts
	if len(raw) == 0 {
		return a, nil
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return Artifacts{}, fmt.Errorf("stored artifacts: %w", err)
	}
	return a, nil
}

func (b *backend) SnapshotExists(context.Context, string) (bool, error) { return true, nil }
func (b *backend) Reconcile(context.Context) error                      { return nil }

// RemoveSnapshot queues the removal of an ephemeral snapshot (the scheduler removes only
// those) on the agent that committed it, which learns it from its next alive call. Queuing
// is idempotent, so a driver replaying the build queues it again harmlessly.
func (b *backend) RemoveSnapshot(_ context.Context, snapshot string) error {
	// The job that committed it, by the id Commit gave the scheduler: a parent run again
	// since (its agent restarted, UpsertAgent) holds another snapshot now, on another
	// agent, and that one is what no child needs any more.
	if id, ok := b.d.committed.Load(snapshot); ok {
		j, err := b.d.cfg.Store.GetJob(b.d.life, id.(string))
		if err != nil {
			return err
		}
		if j.Snapshot != "" && j.SnapshotAgent != "" && j.Attempt > 0 {
			return b.d.cfg.Store.QueueSnapshotRemoval(b.d.life, j.SnapshotAgent, j.Snapshot, b.d.cfg.Now())
		}
		return nil
	}
	js, err := b.d.cfg.Store.ListJobs(b.d.life, b.d.build.ID)
	if err != nil {
		return err
	}
	for _, j := range js {
		if j.Snapshot == snapshot && j.SnapshotAgent != "" && j.Attempt > 0 {
			return b.d.cfg.Store.QueueSnapshotRemoval(b.d.life, j.SnapshotAgent, snapshot, b.d.cfg.Now())
		}
	}
	return nil // not committed by an agent of this build: nothing of ours to remove
}
func (b *backend) PruneSnapshots(context.Context, func(string) bool) ([]string, error) {
	return nil, nil
}
func (b *backend) SnapshotSize(context.Context, string) (int64, error) { return 0, nil }

// machine is one policy attempt of a job as the scheduler sees a machine.
type machine struct {
	d   *driver
	id  string
	try int       // the policy attempt (HM_ATTEMPT)
	job store.Job // as last read
}

func (m *machine) Inject(context.Context, *source.Tree) error { return nil }
func (m *machine) Destroy(context.Context) error              { return nil }

func (m *machine) Commit(context.Context, bool) (string, error) {
	if m.job.Snapshot == "" {
		return "", fmt.Errorf("%w: the agent committed no snapshot of step %s", errs.ErrInfra, m.job.StepKey)
	}
	m.d.committed.Store(m.job.Snapshot, m.id)
	return m.job.Snapshot, nil
}

// Run waits for the job's end, streaming its log chunks. See the package doc.
func (m *machine) Run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	st := m.d.cfg.Store
	life := m.d.life
	attempt, after := -1, int64(0)
	// The claims of earlier policy attempts are not this one's: their chunks are streamed
	// by their own machines.
	first := 1
	if m.try > 1 {
		t, err := m.tryRecord(m.try - 1)
		if err != nil {
			return 0, err
		}
		first = t.Attempt + 1
	}
	// An agent has several log calls in flight, so a later batch can be stored before an
	// earlier one: stream only up to the first gap (it fills, the agent resends until it
	// has), except once the attempt ended, when what is stored is all there will be.
	var buf bytes.Buffer
	stream := func(a int, ended bool) error {
		for {
			chunks, err := st.ListLogs(life, m.id, a, after, 1000)
			if err != nil {
				return err
			}
			n := len(chunks)
			if !ended {
				chunks = store.Contiguous(chunks, after)
			}
			// The lines of a stream go out in one write per run of its chunks (up to
			// 256 KiB), not one each: the masker and the line splitter cost per write.
			buf.Reset()
			cur := store.StreamStdout
			flush := func() error {
				w := stdout
				if cur != store.StreamStdout {
					w = stderr
				}
				_, err := w.Write(buf.Bytes())
				buf.Reset()
				return err
			}
			for _, c := range chunks {
				if buf.Len() > 0 && (c.Stream != cur || buf.Len() >= 256<<10) {
					if err := flush(); err != nil {
						return err
					}
				}
				cur = c.Stream
				buf.WriteString(c.Content)
				buf.WriteByte('\n')
				after = c.Seq
			}
			if buf.Len() > 0 {
				if err := flush(); err != nil {
					return err
				}
			}
			if n < 1000 || len(chunks) < n {
				return nil
			}
		}
	}
	// advance moves the stream on to claim upto of the job. The claims of this policy
	// attempt before it were lost agents' (the store requeued the job), and their lines
	// are this attempt's as much as the current claim's: each is streamed to its end
	// first, in claim order, which is what a live watcher saw and what a replay shows. A
	// claim that was requeued takes no more lines (a stale attempt's are refused), so what
	// is stored of it is all there will be.
	advance := func(upto int) error {
		if upto == attempt {
			return nil
		}
		for a := max(first, attempt); a < upto; a++ {
			if a != attempt {
				after = 0
			}
			if err := stream(a, true); err != nil {
				return err
			}
		}
		attempt, after = upto, 0
		return nil
	}
	stopped := false // we asked the agent to stop
	// Woken by the store on the job's transitions and stored chunks; the tick is the
	// fallback for a lost wake-up. Watching before the first read misses nothing.
	wake, unwatch := store.Watch(st, store.JobChanged(m.id), store.JobLogs(m.id))
	defer unwatch()
	tick := time.NewTicker(m.d.cfg.Poll)
	defer tick.Stop()
	for {
		j, err := st.GetJob(life, m.id)
		if err != nil {
			return 0, err
		}
		m.job = j
		if j.PolicyAttempt > m.try {
			// A replay: this attempt failed and the job was retried. It ends as it did.
			t, err := m.tryRecord(m.try)
			if err != nil {
				return 0, err
			}
			if err := advance(t.Attempt); err != nil {
				return 0, err
			}
			if err := stream(t.Attempt, true); err != nil {
				return 0, err
			}
			return failedEnd(t.ExitCode, t.ErrorCode, t.ErrorMessage)
		}
		if j.RerunAttempt > 0 && j.PolicyAttempt == m.try {
			// A replay of a step that passed and runs again since (its snapshot was lost
			// with its agent): it ends as the scheduler saw it end, with that claim's
			// lines and snapshot; the rerun is the placement's business, not the step's.
			if err := advance(j.RerunAttempt); err != nil {
				return 0, err
			}
			if err := stream(j.RerunAttempt, true); err != nil {
				return 0, err
			}
			m.job.Snapshot = j.RerunSnapshot
			return 0, nil
		}
		if err := advance(j.Attempt); err != nil { // a requeue: the lost claim's lines first
			return 0, err
		}
		if j.Attempt >= first {
			if err := stream(j.Attempt, j.State.Terminal()); err != nil {
				return 0, err
			}
		}
		if j.State.Terminal() {
			// The job was read before its chunks: every chunk written before FinishJob is
			// streamed already.
			return m.ended(ctx, j, stopped)
		}
		if ctx.Err() != nil && !stopped {
			if err := m.stop(ctx, j); err != nil {
				return 0, err
			}
			stopped = true
			continue
		}
		select {
		case <-wake:
		case <-tick.C:
		case <-life.Done():
			return 0, context.Cause(life)
		case <-ctx.Done():
			// Stop at once, not at the next tick.
		}
	}
}

// tryRecord is the stored end of policy attempt n of the job (retried since).
func (m *machine) tryRecord(n int) (store.JobTry, error) {
	ts, err := m.d.cfg.Store.ListJobTries(m.d.life, m.id)
	if err != nil {
		return store.JobTry{}, err
	}
	for _, t := range ts {
		if t.PolicyAttempt == n {
			return t, nil
		}
	}
	return store.JobTry{}, fmt.Errorf("%w: job %s was retried but its attempt %d is not recorded", errs.ErrInfra, m.id, n)
}

// stop asks the job to stop because ctx ended: a step timeout or a cancel.
func (m *machine) stop(ctx context.Context, j store.Job) error {
	st, now := m.d.cfg.Store, m.d.cfg.Now()
	cause := context.Cause(ctx)
	timeout := cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, scheduler.ErrPipelineTimeout)
	for range 3 { // a claim racing the skip: then the job is leased and is canceled instead
		var err error
		if j.State == store.JobScheduled || j.State == store.JobPending {
			reason := "canceled"
			if timeout {
				reason = "step_timeout"
			}
			_, err = st.SkipJob(m.d.life, j.ID, reason, now)
		} else if timeout {
			_, err = st.TimeOutJob(m.d.life, j.ID, now)
		} else {
			_, err = st.CancelJob(m.d.life, j.ID, now)
		}
		if !store.IsConflict(err) {
			return err
		}
		if j, err = st.GetJob(m.d.life, j.ID); err != nil {
			return err
		}
	}
	return nil
}

// failedEnd is Run's answer for a failed attempt: its exit code, or the infrastructure
// failure that kept it from running. A lost agent's (agent_lost) was retried by the store as
// far as its budget goes: the step's retry policy does not retry it again.
func failedEnd(exit *int, code, msg string) (int, error) {
	switch {
	case code == store.CodeAgentLost:
		return 0, final{fmt.Errorf("%w: %s: %s", errs.ErrInfra, code, msg)}
	case code == errs.CodeArtifactsTooLarge: // the agent's artifact.Exceeded: final, as locally
		return 0, final{&errs.ArtifactLimitError{Msg: msg}}
	case code != "":
		return 0, fmt.Errorf("%w: %s: %s", errs.ErrInfra, code, msg)
	case exit != nil:
		return *exit, nil
	}
	return 0, fmt.Errorf("%w: job failed without an exit code", errs.ErrInfra)
}

// final is an error the step's retry policy must not retry (scheduler.ErrNoRetry), worded
// as its cause alone.
type final struct{ error }

func (f final) Unwrap() []error { return []error{f.error, scheduler.ErrNoRetry} }

// ended turns the job's terminal state into Run's answer.
func (m *machine) ended(ctx context.Context, j store.Job, stopped bool) (int, error) {
	switch j.State {
	case store.JobPassed:
		return 0, nil
	case store.JobFailed:
		return failedEnd(j.ExitCode, j.ErrorCode, j.ErrorMessage)
	}
	// canceled, timed_out, skipped: the end of a stop. On a replay (another driver asked),
	// the scheduler will make the same decision again; wait for it so that the step ends
	// as it did the first time.
	if !stopped {
		select {
		case <-ctx.Done():
		case <-m.d.life.Done():
			return 0, context.Cause(m.d.life)
		}
	}
	return 0, vm.RunAborted(ctx, m.d.cfg.Backend)
}
