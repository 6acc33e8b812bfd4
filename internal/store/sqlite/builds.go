package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) CreateBuild(ctx context.Context, nb store.NewBuild) (store.Build, []store.Job, error) {
	r, err := sqlq.PrepareBuild(nb)
	if err != nil {
		return store.Build{}, nil, err
	}
	var b store.Build
	var jobs []store.Job
	err = s.write(ctx, "create build", func(tx *sql.Tx) error {
		// The pipeline row is the counter: incrementing it takes the row (the write lock here,
		// a row lock on PostgreSQL), so concurrent creates get distinct, gap-free numbers.
		var number int64
		err := tx.QueryRowContext(ctx, sqlq.NextBuildNumber, nb.PipelineID, nb.OrgID).Scan(&number)
		if errors.Is(err, sql.ErrNoRows) {
			return &store.NotFoundError{Kind: "pipeline", Key: nb.PipelineID}
		}
		if err != nil {
			return err
		}
		b, err = sqlq.ScanBuild(tx.QueryRowContext(ctx, sqlq.InsertBuild, r.InsertBuildArgs(nb, number)...))
		if err != nil {
			return err
		}
		if nb.Secrets != nil {
			if _, err := tx.ExecContext(ctx, sqlq.InsertBuildSecrets, b.ID, nb.Secrets); err != nil {
				return err
			}
		}
		jobs = make([]store.Job, 0, len(nb.Jobs))
		for i, nj := range nb.Jobs {
			j, err := sqlq.ScanJob(tx.QueryRowContext(ctx, sqlq.InsertJob, r.InsertJobArgs(nj, b.ID, i)...))
			if isUnique(err) {
				return &store.ConflictError{Kind: "job", Key: nj.ID, Reason: "id already used"}
			}
			if err != nil {
				return err
			}
			for _, l := range nj.Labels {
				if _, err := tx.ExecContext(ctx, sqlq.InsertJobLabel,
					j.ID, l); err != nil {
					return err
				}
			}
			j.Labels = sqlq.Dedupe(nj.Labels)
			jobs = append(jobs, j)
		}
		return nil
	})
	if err != nil {
		return store.Build{}, nil, err
	}
	return b, jobs, nil
}

func (s *DB) GetBuild(ctx context.Context, id string) (store.Build, error) {
	b, err := one(s.db.QueryRowContext(ctx, sqlq.GetBuild, id), sqlq.ScanBuild, "build", id)
	return b, wrap("get build", err)
}

func (s *DB) GetBuildByNumber(ctx context.Context, pipelineID string, number int64) (store.Build, error) {
	b, err := one(s.db.QueryRowContext(ctx, sqlq.GetBuildByNumber,
		pipelineID, number), sqlq.ScanBuild, "build", fmt.Sprint(number))
	return b, wrap("get build", err)
}

func (s *DB) ListBuilds(ctx context.Context, pipelineID string, before int64, limit int) ([]store.Build, error) {
	if before <= 0 {
		before = 1 << 62
	}
	return list(ctx, s.db, "list builds", sqlq.ScanBuild, sqlq.ListBuilds, pipelineID, before, limit)
}

func (s *DB) ListUnfinishedBuilds(ctx context.Context) ([]store.Build, error) {
	return list(ctx, s.db, "list unfinished builds", sqlq.ScanBuild, sqlq.ListUnfinishedBuilds)
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
	in, args := sqlq.InList(from)
	var b store.Build
	err := s.write(ctx, "transition build", func(tx *sql.Tx) error {
		var err error
		b, err = sqlq.ScanBuild(tx.QueryRowContext(ctx, sqlq.TransitionBuild(in, bigint),
			append([]any{to, u.ErrorCode, u.ErrorCode, u.ErrorMessage, u.ErrorMessage, started, finished, finished, id}, args...)...))
		if errors.Is(err, sql.ErrNoRows) {
			cur, gerr := one(tx.QueryRowContext(ctx, sqlq.GetBuild, id), sqlq.ScanBuild, "build", id)
			if gerr != nil {
				return gerr
			}
			return &store.ConflictError{Kind: "build", Key: id, Reason: fmt.Sprintf("not in %v", from), State: string(cur.State)}
		}
		return err
	})
	if err == nil {
		s.hub.Notify(store.BuildChanged(id))
	}
	return b, err
}

func (s *DB) CancelBuild(ctx context.Context, id string, now time.Time) (store.Build, error) {
	var b store.Build
	err := s.write(ctx, "cancel build", func(tx *sql.Tx) error {
		var err error
		b, err = sqlq.ScanBuild(tx.QueryRowContext(ctx, sqlq.CancelBuild, id))
		if errors.Is(err, sql.ErrNoRows) {
			// Terminal or already canceling: cancel is idempotent and a terminal build stays.
			b, err = one(tx.QueryRowContext(ctx, sqlq.GetBuild, id), sqlq.ScanBuild, "build", id)
		}
		return err
	})
	if err == nil {
		s.hub.Notify(store.BuildChanged(id))
	}
	return b, err
}

func (s *DB) AcquireBuildLease(ctx context.Context, buildID, owner string, now time.Time, ttl time.Duration) (int64, error) {
	var epoch int64
	err := s.write(ctx, "acquire build lease", func(tx *sql.Tx) error {
		// One statement decides (sqlq.AcquireBuildLease).
		err := tx.QueryRowContext(ctx, sqlq.AcquireBuildLease,
			owner, ns(now), owner, ns(now.Add(ttl)), buildID, owner, ns(now)).Scan(&epoch)
		if errors.Is(err, sql.ErrNoRows) {
			var cur string
			var cepoch int64
			if err := tx.QueryRowContext(ctx, sqlq.BuildDriver, buildID).Scan(&cur, &cepoch); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
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
	err := s.write(ctx, "release build lease", func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, sqlq.ReleaseBuildLease, buildID, owner, epoch).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	if err == nil && state != "" && !store.BuildState(state).Terminal() {
		// Left without a driver: a manager of this process takes it now (other processes
		// on the file find it at their next scan).
		s.hub.Notify(store.DriversWanted())
	}
	return err
}
