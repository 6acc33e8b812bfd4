package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) labels(ctx context.Context, q querier, j *store.Job) error {
	ls, err := list(ctx, q, "job labels", sqlq.ScanString, sqlq.JobLabels+` COLLATE "C"`, j.ID)
	j.Labels = ls
	return err
}

// labeledJobs runs a query of jobs (JobCols) in tx and reads each one's labels.
func (s *DB) labeledJobs(ctx context.Context, tx pgx.Tx, op, query string, args ...any) ([]store.Job, error) {
	jobs, err := list(ctx, tx, op, sqlq.ScanJob, query, args...)
	if err != nil {
		return nil, err
	}
	for i := range jobs {
		if err := s.labels(ctx, tx, &jobs[i]); err != nil {
			return jobs, err // as read: the caller's transaction fails
		}
	}
	return jobs, nil
}

func (s *DB) GetJob(ctx context.Context, id string) (store.Job, error) {
	j, err := one(row(ctx, s.pool, sqlq.GetJob, id), sqlq.ScanJob, "job", id)
	if err == nil {
		err = s.labels(ctx, s.pool, &j)
	}
	return j, wrap("get job", err)
}

func (s *DB) ListJobs(ctx context.Context, buildID string) ([]store.Job, error) {
	jobs, err := list(ctx, s.pool, "list jobs", sqlq.ScanJob, sqlq.ListJobs, buildID)
	if err != nil {
		return nil, err
	}
	type label struct{ job, label string }
	ls, err := list(ctx, s.pool, "list jobs", func(r scanner) (label, error) {
		var l label
		return l, r.Scan(&l.job, &l.label)
	}, sqlq.BuildJobLabels+` COLLATE "C"`, buildID)
	if err != nil {
		return nil, err
	}
	byJob := map[string][]string{}
	for _, l := range ls {
		byJob[l.job] = append(byJob[l.job], l.label)
	}
	for i := range jobs {
		jobs[i].Labels = byJob[jobs[i].ID]
	}
	return jobs, nil
}

// transition runs one UPDATE … RETURNING on a job. When it matches no row, the job is read
// back only to say why (never to decide anything): absent, a stale attempt (attempt > 0 given),
// or already in one of the states done, which makes the write an idempotent repeat.
func (s *DB) transition(ctx context.Context, op, id string, attempt int, done func(store.Job) bool, query string, args ...any) (store.Job, error) {
	var j store.Job
	err := s.write(ctx, op, func(tx pgx.Tx) error {
		var err error
		j, err = sqlq.ScanJob(row(ctx, tx, query, args...))
		if errors.Is(err, pgx.ErrNoRows) {
			cur, gerr := one(row(ctx, tx, sqlq.GetJob, id), sqlq.ScanJob, "job", id)
			if gerr != nil {
				return gerr
			}
			c := &store.ConflictError{Kind: "job", Key: id, State: string(cur.State), Attempt: cur.Attempt}
			switch {
			case attempt > 0 && cur.Attempt != attempt:
				c.Reason = fmt.Sprintf("attempt %d is not the current one", attempt)
				return c
			case done != nil && done(cur):
				j = cur
				return nil
			}
			c.Reason = op + " refused in this state"
			return c
		}
		if err != nil {
			return err
		}
		return s.labels(ctx, tx, &j)
	})
	// A heartbeat only extends a lease: no waiter cares.
	if err == nil && op != "heartbeat" {
		s.notify(store.JobChanged(id))
	}
	return j, err
}

func in(states ...store.JobState) func(store.Job) bool {
	return func(j store.Job) bool { return slices.Contains(states, j.State) }
}

func (s *DB) ReleaseJob(ctx context.Context, id string, now time.Time) (store.Job, error) {
	j, err := s.transition(ctx, "release job", id, 0, in(store.JobScheduled),
		sqlq.ReleaseJob, ns(now), id)
	if err == nil {
		s.notifyReleased(ctx, j)
	}
	return j, err
}

func (s *DB) NoteCacheMiss(ctx context.Context, id, note string) (store.Job, error) {
	// The first note stays: a replay must log the line the first run logged.
	return s.transition(ctx, "note cache miss", id, 0, func(store.Job) bool { return true },
		sqlq.NoteCacheMiss, note, id)
}

func (s *DB) RetryJob(ctx context.Context, id string, policyAttempt int, now time.Time) (store.Job, error) {
	var j store.Job
	err := s.write(ctx, "retry job", func(tx pgx.Tx) error {
		// Both statements are conditioned on the failed previous attempt: when it is not,
		// neither changes anything and the job is read back to say why.
		if _, err := exec(ctx, tx, sqlq.RetryJobTry, id, policyAttempt-1); err != nil {
			return err
		}
		var err error
		j, err = sqlq.ScanJob(row(ctx, tx, sqlq.RetryJob, policyAttempt, ns(now), id, policyAttempt-1))
		if errors.Is(err, pgx.ErrNoRows) {
			cur, gerr := one(row(ctx, tx, sqlq.GetJob, id), sqlq.ScanJob, "job", id)
			if gerr != nil {
				return gerr
			}
			if cur.PolicyAttempt >= policyAttempt {
				j = cur // retried already: a repeat
				return s.labels(ctx, tx, &j)
			}
			return &store.ConflictError{Kind: "job", Key: id, State: string(cur.State), Attempt: cur.Attempt,
				Reason: fmt.Sprintf("retry as policy attempt %d refused: the job is at policy attempt %d", policyAttempt, cur.PolicyAttempt)}
		}
		if err != nil {
			return err
		}
		return s.labels(ctx, tx, &j)
	})
	if err == nil && j.State == store.JobScheduled {
		s.notify(store.JobChanged(id))
		s.notifyReleased(ctx, j)
	}
	return j, err
}

func (s *DB) ListJobTries(ctx context.Context, id string) ([]store.JobTry, error) {
	return list(ctx, s.pool, "list job tries", sqlq.ScanJobTry, sqlq.ListJobTries, id)
}

func (s *DB) PassCached(ctx context.Context, id, snapshot, agentID string, artifacts []byte, now time.Time) (store.Job, error) {
	return s.transition(ctx, "pass cached job", id, 0, func(j store.Job) bool {
		return j.State == store.JobPassed && j.Snapshot == snapshot && j.Attempt == 0
	}, sqlq.PassCached, snapshot, agentID, string(artifacts), ns(now), id)
}

func (s *DB) SkipJob(ctx context.Context, id, reason string, now time.Time) (store.Job, error) {
	return s.transition(ctx, "skip job", id, 0, in(store.JobSkipped),
		sqlq.SkipJob, reason, ns(now), id)
}

func (s *DB) CancelJob(ctx context.Context, id string, now time.Time) (store.Job, error) {
	// A job already stopping, or finished, needs nothing more: cancel is idempotent.
	return s.transition(ctx, "cancel job", id, 0, func(j store.Job) bool { return j.State.Stopping() || j.State.Terminal() },
		sqlq.CancelJob, id)
}

func (s *DB) TimeOutJob(ctx context.Context, id string, now time.Time) (store.Job, error) {
	return s.transition(ctx, "time out job", id, 0, func(j store.Job) bool { return j.State.Stopping() || j.State.Terminal() },
		sqlq.TimeOutJob, id)
}

// claimQuery is sqlq.Claim with the PostgreSQL lock: the picked row is locked, skipping rows
// other claimers hold (OF j: not the build's row, which event appends and transitions take).
var claimQuery = sqlq.Claim(`
		FOR UPDATE OF j SKIP LOCKED`)

func (s *DB) ClaimJob(ctx context.Context, c store.Claim) (store.Job, bool, error) {
	var j store.Job
	var ok bool
	if c.OrgID == "" {
		return j, false, errors.New("claim job: no org") // a programming error: never claim across orgs
	}
	err := s.write(ctx, "claim job", func(tx pgx.Tx) error {
		var err error
		j, ok, err = s.claim(ctx, tx, c)
		if err == nil && ok {
			err = s.labels(ctx, tx, &j)
		}
		return err
	})
	if c.AfterJob != "" && isUnique(err) {
		// A concurrent claim for the same Finish (a repeat another replica answers) committed
		// first: the index on claim_finish refused this one, and that claim is the answer.
		ok = false
		err = s.write(ctx, "claim job", func(tx pgx.Tx) error {
			var err error
			j, ok, err = s.handBack(ctx, tx, c)
			return err
		})
	}
	if err == nil && ok {
		s.notify(store.JobChanged(j.ID))
	}
	return j, ok, err
}

// claim sends the claim's statements in one batch, one round trip: the agent's touch (also its
// existence check: an unknown agent has no labels and must register first), the hand-back of
// a claim whose answer was lost (sqlq.HandBack), and the claim, which sees what the hand-back
// found and then claims nothing (sqlq.Claim's guards).
func (s *DB) claim(ctx context.Context, tx pgx.Tx, c store.Claim) (store.Job, bool, error) {
	b := &pgx.Batch{}
	b.Queue(rebind(sqlq.TouchAgent), ns(c.Now), c.AgentID)
	hq, hargs := sqlq.HandBack(c)
	if hq != "" {
		b.Queue(rebind(hq), hargs...)
	}
	b.Queue(rebind(claimQuery), sqlq.ClaimArgs(c)...)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	res, err := br.Exec()
	if err != nil {
		return store.Job{}, false, err
	}
	if res.RowsAffected() == 0 {
		return store.Job{}, false, &store.NotFoundError{Kind: "agent", Key: c.AgentID}
	}
	var j store.Job
	back := false
	if hq != "" {
		if j, err = sqlq.ScanJob(br.QueryRow()); err == nil {
			back = true
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return j, false, err
		}
	}
	claimed, err := sqlq.ScanJob(br.QueryRow())
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return j, back, br.Close()
	case err != nil:
		return j, false, err
	case back:
		// The guards make this impossible; the transaction is rolled back rather than
		// leave the agent two jobs.
		return j, false, fmt.Errorf("claim job: %s handed back and %s claimed at once", j.ID, claimed.ID)
	}
	return claimed, true, br.Close()
}

// handBack runs c's hand-back statement (sqlq.HandBack) in tx: the job a claim for c made
// whose answer was lost, if any.
func (s *DB) handBack(ctx context.Context, tx pgx.Tx, c store.Claim) (store.Job, bool, error) {
	q, args := sqlq.HandBack(c)
	if q == "" {
		return store.Job{}, false, nil
	}
	j, err := sqlq.ScanJob(row(ctx, tx, q, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return j, false, nil
	}
	if err != nil {
		return j, false, err
	}
	return j, true, s.labels(ctx, tx, &j)
}

func (s *DB) StartJob(ctx context.Context, id string, attempt int, now time.Time) (store.Job, error) {
	// Stopping states are accepted and kept: a cancel that arrived between claim and start
	// still reaches the agent through the job it gets back.
	return s.transition(ctx, "start job", id, attempt, nil,
		sqlq.StartJob, ns(now), id, attempt)
}

func (s *DB) Heartbeat(ctx context.Context, id string, attempt int, now time.Time, ttl time.Duration) (store.Job, error) {
	return s.transition(ctx, "heartbeat", id, attempt, nil,
		sqlq.Heartbeat,
		ns(now.Add(ttl)), id, attempt)
}

func (s *DB) FinishJob(ctx context.Context, id string, attempt int, f store.Finish) (store.Job, error) {
	// The end state follows from the job's state and the outcome, in the statement: a cancel
	// or timeout recorded while the step ran wins over its exit code. Only a passing step's
	// snapshot is recorded, with the agent that holds it (placement of builds_in children).
	ok := 0
	if f.ExitCode == 0 && f.ErrorCode == "" {
		ok = 1
	}
	return s.transition(ctx, "finish job", id, attempt, func(j store.Job) bool {
		return j.State.Terminal() && j.ExitCode != nil && *j.ExitCode == f.ExitCode &&
			(f.ErrorCode == "" || j.ErrorCode == f.ErrorCode)
	}, sqlq.FinishJob,
		ok, ok, f.Snapshot, ok, f.Snapshot, f.ExitCode, f.ErrorCode, f.ErrorCode, f.ErrorMessage, ok, string(f.Artifacts),
		ns(nowOr(f.Now)), id, attempt)
}

func (s *DB) ReapExpiredLeases(ctx context.Context, now time.Time, maxRetries int) ([]store.Job, error) {
	// One statement for every lapsed lease (sqlq.ReapLeases says how).
	const q = sqlq.ReapLeases
	m := maxRetries
	var jobs []store.Job
	err := s.write(ctx, "reap leases", func(tx pgx.Tx) error {
		var err error
		jobs, err = s.labeledJobs(ctx, tx, "reap leases", q, m, m, m, m, ns(now), m, m, m, ns(now))
		return err
	})
	slices.SortFunc(jobs, func(a, b store.Job) int { return a.ReadyAt.Compare(b.ReadyAt) })
	if err == nil {
		s.notifyJobs(jobs)
		s.notifyReleased(ctx, jobs...)
	}
	return jobs, err
}

func (s *DB) FailOrphans(ctx context.Context, now time.Time, agentTTL time.Duration) ([]store.Job, error) {
	// One statement for every job no agent seen since the cutoff can run (sqlq.FailOrphans).
	const q = sqlq.FailOrphans
	var jobs []store.Job
	err := s.write(ctx, "fail orphans", func(tx pgx.Tx) error {
		var err error
		jobs, err = s.labeledJobs(ctx, tx, "fail orphans", q, ns(now), ns(now.Add(-agentTTL)))
		return err
	})
	if err == nil {
		s.notifyJobs(jobs)
	}
	return jobs, err
}
