package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/vm"
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
	// never released twice.
	if _, err := b.d.cfg.Store.ReleaseJob(b.d.life, j.ID, b.d.cfg.Now()); err != nil && !store.IsConflict(err) {
		return nil, err
	}
	return &machine{d: b.d, id: j.ID}, nil
}

func (b *backend) SnapshotExists(context.Context, string) (bool, error) { return true, nil }
func (b *backend) RemoveSnapshot(context.Context, string) error         { return nil }
func (b *backend) Reconcile(context.Context) error                      { return nil }
func (b *backend) PruneSnapshots(context.Context, func(string) bool) ([]string, error) {
	return nil, nil
}
func (b *backend) SnapshotSize(context.Context, string) (int64, error) { return 0, nil }

// machine is one job as the scheduler sees a machine.
type machine struct {
	d   *driver
	id  string
	job store.Job // as last read
}

func (m *machine) Inject(context.Context, *source.Tree) error { return nil }
func (m *machine) Destroy(context.Context) error              { return nil }

func (m *machine) Commit(context.Context, bool) (string, error) {
	if m.job.Snapshot == "" {
		return "", fmt.Errorf("%w: the agent committed no snapshot of step %s", errs.ErrInfra, m.job.StepKey)
	}
	return m.job.Snapshot, nil
}

// Run waits for the job's end, streaming its log chunks. See the package doc.
func (m *machine) Run(ctx context.Context, stdout, stderr io.Writer) (int, error) {
	st := m.d.cfg.Store
	life := m.d.life
	attempt, after := -1, int64(0)
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
		if j.Attempt != attempt { // a retry on another agent streams its own log
			attempt, after = j.Attempt, 0
		}
		for j.Attempt > 0 {
			chunks, err := st.ListLogs(life, j.ID, j.Attempt, after, 1000)
			if err != nil {
				return 0, err
			}
			// An agent has several log calls in flight, so a later batch can be stored
			// before an earlier one: stream only up to the first gap (it fills, the agent
			// resends until it has), except once the job is terminal, when what is stored
			// is all there will be.
			if !j.State.Terminal() {
				chunks = store.Contiguous(chunks, after)
			}
			for _, c := range chunks {
				w := stdout
				if c.Stream != store.StreamStdout {
					w = stderr
				}
				if _, err := io.WriteString(w, c.Content+"\n"); err != nil {
					return 0, err
				}
				after = c.Seq
			}
			if len(chunks) < 1000 {
				break
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

// ended turns the job's terminal state into Run's answer.
func (m *machine) ended(ctx context.Context, j store.Job, stopped bool) (int, error) {
	switch j.State {
	case store.JobPassed:
		return 0, nil
	case store.JobFailed:
		if j.ErrorCode != "" {
			return 0, fmt.Errorf("%w: %s: %s", errs.ErrInfra, j.ErrorCode, j.ErrorMessage)
		}
		if j.ExitCode != nil {
			return *j.ExitCode, nil
		}
		return 0, fmt.Errorf("%w: job failed without an exit code", errs.ErrInfra)
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
