package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

const buildCols = `id, org_id, pipeline_id, number, branch, commit_sha, message, source, ir, env, hm_options,
	source_digest, state, error_code, error_message, canceled, created_at, started_at, finished_at`

func scanBuild(r scanner) (store.Build, error) {
	var b store.Build
	var env, opts string
	var canceled int
	var c, st, fin int64
	err := r.Scan(&b.ID, &b.OrgID, &b.PipelineID, &b.Number, &b.Branch, &b.Commit, &b.Message, &b.Source, &b.IR,
		&env, &opts, &b.SourceDigest, &b.State, &b.ErrorCode, &b.ErrorMessage, &canceled, &c, &st, &fin)
	if err != nil {
		return b, err
	}
	if err := json.Unmarshal([]byte(env), &b.Env); err != nil {
		return b, fmt.Errorf("build %s: env: %w", b.ID, err)
	}
	if opts != "null" {
		b.Options = json.RawMessage(opts)
	}
	b.Canceled = canceled != 0
	b.CreatedAt, b.StartedAt, b.FinishedAt = tm(c), tm(st), tm(fin)
	return b, nil
}

// inList is "?, ?, …" for n values and the values as arguments.
func inList[T ~string](vs []T) (string, []any) {
	args := make([]any, len(vs))
	for i, v := range vs {
		args[i] = string(v)
	}
	return strings.TrimSuffix(strings.Repeat("?, ", len(vs)), ", "), args
}

func (s *DB) CreateBuild(ctx context.Context, nb store.NewBuild) (store.Build, []store.Job, error) {
	if err := checkJobs(nb.Jobs); err != nil {
		return store.Build{}, nil, err
	}
	env, err := json.Marshal(nb.Env)
	if err != nil || nb.Env == nil {
		env = []byte("{}")
	}
	opts := "null"
	if len(nb.Options) > 0 {
		if !json.Valid(nb.Options) {
			return store.Build{}, nil, fmt.Errorf("store: create build: hm_options is not JSON: %w", errs.ErrUsage)
		}
		opts = string(nb.Options)
	}
	source := nb.Source
	if source == "" {
		source = "api"
	}
	now := ns(nowOr(nb.Now))
	id := nb.ID
	if id == "" {
		id = uuid.NewString()
	}
	var b store.Build
	var jobs []store.Job
	err = s.write(ctx, "create build", func(tx pgx.Tx) error {
		// The pipeline row is the counter: incrementing it takes its row lock, so concurrent
		// creates get distinct, gap-free numbers.
		var number int64
		err := row(ctx, tx, `UPDATE pipelines SET build_seq = build_seq + 1 WHERE id = ? AND org_id = ?
			RETURNING build_seq`, nb.PipelineID, nb.OrgID).Scan(&number)
		if errors.Is(err, pgx.ErrNoRows) {
			return &store.NotFoundError{Kind: "pipeline", Key: nb.PipelineID}
		}
		if err != nil {
			return err
		}
		b, err = scanBuild(row(ctx, tx, `INSERT INTO builds (id, org_id, pipeline_id, number, branch, commit_sha,
			message, source, ir, env, hm_options, source_digest, state, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', ?) RETURNING `+buildCols,
			id, nb.OrgID, nb.PipelineID, number, nb.Branch, nb.Commit, nb.Message, source, nb.IR,
			string(env), opts, nb.SourceDigest, now))
		if err != nil {
			return err
		}
		if nb.Secrets != nil {
			if _, err := exec(ctx, tx, `INSERT INTO build_secrets (build_id, sealed) VALUES (?, ?)`, b.ID, nb.Secrets); err != nil {
				return err
			}
		}
		jobs = make([]store.Job, 0, len(nb.Jobs))
		for i, nj := range nb.Jobs {
			deps, _ := json.Marshal(nj.DependsOn)
			if nj.DependsOn == nil {
				deps = []byte("[]")
			}
			j, err := sqlq.ScanJob(row(ctx, tx, `INSERT INTO jobs (id, build_id, ordinal, step_key, name, command,
				depends_on, parent_id, backend, state, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?) RETURNING `+sqlq.JobCols,
				nj.ID, b.ID, i, nj.StepKey, nj.Name, nj.Command, string(deps), nj.ParentID, nj.Backend, now))
			if isUnique(err) {
				return &store.ConflictError{Kind: "job", Key: nj.ID, Reason: "id already used"}
			}
			if err != nil {
				return err
			}
			for _, l := range nj.Labels {
				if _, err := exec(ctx, tx, `INSERT INTO job_labels (job_id, label) VALUES (?, ?) ON CONFLICT DO NOTHING`,
					j.ID, l); err != nil {
					return err
				}
			}
			j.Labels = dedupe(nj.Labels)
			jobs = append(jobs, j)
		}
		return nil
	})
	if err != nil {
		return store.Build{}, nil, err
	}
	return b, jobs, nil
}

// checkJobs assigns missing ids and checks that every edge names an earlier job of the build:
// the list is in topological order, as listJobs must answer it.
func checkJobs(jobs []store.NewJob) error {
	seen := map[string]bool{}
	for i := range jobs {
		j := &jobs[i]
		if j.ID == "" {
			j.ID = uuid.NewString()
		}
		for _, d := range append([]string{j.ParentID}, j.DependsOn...) {
			if d != "" && !seen[d] {
				return fmt.Errorf("store: create build: job %q depends on %q, not an earlier job of the build: %w",
					j.StepKey, d, errs.ErrUsage)
			}
		}
		if seen[j.ID] {
			return fmt.Errorf("store: create build: job id %s twice: %w", j.ID, errs.ErrUsage)
		}
		seen[j.ID] = true
	}
	return nil
}

func dedupe(ls []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range ls {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

func (s *DB) GetBuild(ctx context.Context, id string) (store.Build, error) {
	b, err := one(row(ctx, s.pool, `SELECT `+buildCols+` FROM builds WHERE id = ?`, id), scanBuild, "build", id)
	return b, wrap("get build", err)
}

func (s *DB) GetBuildByNumber(ctx context.Context, pipelineID string, number int64) (store.Build, error) {
	b, err := one(row(ctx, s.pool, `SELECT `+buildCols+` FROM builds WHERE pipeline_id = ? AND number = ?`,
		pipelineID, number), scanBuild, "build", fmt.Sprint(number))
	return b, wrap("get build", err)
}

func (s *DB) ListBuilds(ctx context.Context, pipelineID string, before int64, limit int) ([]store.Build, error) {
	if before <= 0 {
		before = 1 << 62
	}
	return list(ctx, s.pool, "list builds", scanBuild, `SELECT `+buildCols+` FROM builds
		WHERE pipeline_id = ? AND number < ? ORDER BY number DESC LIMIT ?`, pipelineID, before, limit)
}

func (s *DB) ListUnfinishedBuilds(ctx context.Context) ([]store.Build, error) {
	return list(ctx, s.pool, "list unfinished builds", scanBuild, `SELECT `+buildCols+` FROM builds
		WHERE state NOT IN ('passed', 'failed', 'canceled') ORDER BY created_at, id COLLATE "C"`)
}

func (s *DB) TransitionBuild(ctx context.Context, id string, from []store.BuildState, to store.BuildState, u store.BuildUpdate) (store.Build, error) {
	if len(from) == 0 {
		return store.Build{}, fmt.Errorf("store: build %s → %s from no state: %w", id, to, store.ErrInvalidTransition)
	}
	for _, f := range from {
		if !f.CanTransition(to) {
			return store.Build{}, fmt.Errorf("store: build %s: %s → %s: %w", id, f, to, store.ErrInvalidTransition)
		}
	}
	now := ns(nowOr(u.Now))
	// Decided from to alone, not from anything read: which timestamps this edge sets.
	var started, finished int64
	if to == store.BuildRunning {
		started = now
	}
	if to.Terminal() {
		finished = now
	}
	in, args := inList(from)
	var b store.Build
	err := s.write(ctx, "transition build", func(tx pgx.Tx) error {
		var err error
		b, err = scanBuild(row(ctx, tx, `UPDATE builds SET state = ?,
			error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END,
			error_message = CASE WHEN ? <> '' THEN ? ELSE error_message END,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END,
			finished_at = CASE WHEN ?::bigint <> 0 THEN ? ELSE finished_at END
			WHERE id = ? AND state IN (`+in+`) RETURNING `+buildCols,
			append([]any{to, u.ErrorCode, u.ErrorCode, u.ErrorMessage, u.ErrorMessage, started, finished, finished, id}, args...)...))
		if errors.Is(err, pgx.ErrNoRows) {
			cur, gerr := one(row(ctx, tx, `SELECT `+buildCols+` FROM builds WHERE id = ?`, id), scanBuild, "build", id)
			if gerr != nil {
				return gerr
			}
			return &store.ConflictError{Kind: "build", Key: id, Reason: fmt.Sprintf("not in %v", from), State: string(cur.State)}
		}
		return err
	})
	if err == nil {
		s.notify(store.BuildChanged(id))
	}
	return b, err
}

func (s *DB) CancelBuild(ctx context.Context, id string, now time.Time) (store.Build, error) {
	var b store.Build
	err := s.write(ctx, "cancel build", func(tx pgx.Tx) error {
		var err error
		b, err = scanBuild(row(ctx, tx, `UPDATE builds SET state = 'canceling', canceled = 1
			WHERE id = ? AND state IN ('scheduled', 'running', 'failing') RETURNING `+buildCols, id))
		if errors.Is(err, pgx.ErrNoRows) {
			// Terminal or already canceling: cancel is idempotent and a terminal build stays.
			b, err = one(row(ctx, tx, `SELECT `+buildCols+` FROM builds WHERE id = ?`, id), scanBuild, "build", id)
		}
		return err
	})
	if err == nil {
		s.notify(store.BuildChanged(id))
	}
	return b, err
}

func (s *DB) AcquireBuildLease(ctx context.Context, buildID, owner string, now time.Time, ttl time.Duration) (int64, error) {
	var epoch int64
	err := s.write(ctx, "acquire build lease", func(tx pgx.Tx) error {
		// One statement decides: free, lapsed or ours. The epoch is kept only when the
		// owner renews a lease that is still live; any other take is a change of hands.
		err := row(ctx, tx, `UPDATE builds SET
				driver_epoch = CASE WHEN driver_owner = ? AND driver_expires >= ? THEN driver_epoch ELSE driver_epoch + 1 END,
				driver_owner = ?, driver_expires = ?
			WHERE id = ? AND (driver_owner = ? OR driver_expires < ?) RETURNING driver_epoch`,
			owner, ns(now), owner, ns(now.Add(ttl)), buildID, owner, ns(now)).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			var cur string
			var cepoch int64
			if err := row(ctx, tx, `SELECT driver_owner, driver_epoch FROM builds WHERE id = ?`, buildID).Scan(&cur, &cepoch); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					return &store.NotFoundError{Kind: "build", Key: buildID}
				}
				return err
			}
			return &store.ConflictError{Kind: "build", Key: buildID,
				Reason: fmt.Sprintf("driver lease held by %s (epoch %d)", cur, cepoch)}
		}
		return err
	})
	return epoch, err
}

func (s *DB) ReleaseBuildLease(ctx context.Context, buildID, owner string, epoch int64) error {
	var state string
	err := s.write(ctx, "release build lease", func(tx pgx.Tx) error {
		err := row(ctx, tx, `UPDATE builds SET driver_expires = 0 WHERE id = ? AND driver_owner = ? AND driver_epoch = ?
			RETURNING state`, buildID, owner, epoch).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err == nil && state != "" && !store.BuildState(state).Terminal() {
		// Left without a driver (its replica is stopping): another replica takes it now.
		s.notify(store.DriversWanted())
	}
	return err
}
