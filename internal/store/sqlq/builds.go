package sqlq

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

// BuildCols are the columns ScanBuild reads, in its order.
const BuildCols = `id, org_id, pipeline_id, number, branch, commit_sha, message, source, ir, env, hm_options,
	source_digest, state, error_code, error_message, canceled, created_at, started_at, finished_at`

// ScanBuild reads a row of BuildCols.
func ScanBuild(r Scanner) (store.Build, error) {
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
	b.CreatedAt, b.StartedAt, b.FinishedAt = Tm(c), Tm(st), Tm(fin)
	return b, nil
}

// InList is "?, ?, …" for n values and the values as arguments.
func InList[T ~string](vs []T) (string, []any) {
	args := make([]any, len(vs))
	for i, v := range vs {
		args[i] = string(v)
	}
	return strings.TrimSuffix(strings.Repeat("?, ", len(vs)), ", "), args
}

// NewBuildRow is a new build's column values, checked, before its number is taken.
type NewBuildRow struct {
	ID, Source, Env, Options string
	Now                      int64
}

// PrepareBuild checks nb (its jobs: CheckJobs, which assigns their missing ids in place) and
// works out the values its rows store.
func PrepareBuild(nb store.NewBuild) (NewBuildRow, error) {
	if err := CheckJobs(nb.Jobs); err != nil {
		return NewBuildRow{}, err
	}
	env, err := json.Marshal(nb.Env)
	if err != nil || nb.Env == nil {
		env = []byte("{}")
	}
	r := NewBuildRow{ID: nb.ID, Source: nb.Source, Env: string(env), Options: "null", Now: NS(NowOr(nb.Now))}
	if len(nb.Options) > 0 {
		if !json.Valid(nb.Options) {
			return NewBuildRow{}, fmt.Errorf("store: create build: hm_options is not JSON: %w", errs.ErrUsage)
		}
		r.Options = string(nb.Options)
	}
	if r.Source == "" {
		r.Source = "api"
	}
	if r.ID == "" {
		r.ID = uuid.NewString()
	}
	return r, nil
}

// InsertBuildArgs are InsertBuild's parameters.
func (r NewBuildRow) InsertBuildArgs(nb store.NewBuild, number int64) []any {
	return []any{r.ID, nb.OrgID, nb.PipelineID, number, nb.Branch, nb.Commit, nb.Message, r.Source, nb.IR,
		r.Env, r.Options, nb.SourceDigest, r.Now}
}

// InsertJobArgs are InsertJob's parameters for the build's job nj at ordinal i.
func (r NewBuildRow) InsertJobArgs(nj store.NewJob, buildID string, i int) []any {
	deps, _ := json.Marshal(nj.DependsOn)
	if nj.DependsOn == nil {
		deps = []byte("[]")
	}
	return []any{nj.ID, buildID, i, nj.StepKey, nj.Name, nj.Command, string(deps), nj.ParentID, nj.Backend, r.Now}
}

// CheckJobs assigns missing ids and checks that every edge names an earlier job of the build:
// the list is in topological order, as listJobs must answer it.
func CheckJobs(jobs []store.NewJob) error {
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

// Dedupe is ls without repeats, in first-seen order.
func Dedupe(ls []string) []string {
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

// Creating a build: the pipeline row is the counter (NextBuildNumber: pipeline, org), then the
// rows (InsertBuildArgs, InsertJobArgs; InsertBuildSecrets: build, sealed; InsertJobLabel:
// job, label).
const (
	NextBuildNumber = `UPDATE pipelines SET build_seq = build_seq + 1 WHERE id = ? AND org_id = ?
			RETURNING build_seq`
	InsertBuild = `INSERT INTO builds (id, org_id, pipeline_id, number, branch, commit_sha,
			message, source, ir, env, hm_options, source_digest, state, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', ?) RETURNING ` + BuildCols
	InsertBuildSecrets = `INSERT INTO build_secrets (build_id, sealed) VALUES (?, ?)`
	InsertJob          = `INSERT INTO jobs (id, build_id, ordinal, step_key, name, command,
				depends_on, parent_id, backend, state, created_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?) RETURNING ` + JobCols
	InsertJobLabel = `INSERT INTO job_labels (job_id, label) VALUES (?, ?) ON CONFLICT DO NOTHING`
)

// Build reads. ListUnfinishedBuilds ends in its ORDER BY (PostgreSQL adds COLLATE "C").
const (
	GetBuild         = `SELECT ` + BuildCols + ` FROM builds WHERE id = ?`
	GetBuildByNumber = `SELECT ` + BuildCols + ` FROM builds WHERE pipeline_id = ? AND number = ?`
	// pipeline, before, limit
	ListBuilds = `SELECT ` + BuildCols + ` FROM builds
		WHERE pipeline_id = ? AND number < ? ORDER BY number DESC LIMIT ?`
	ListUnfinishedBuilds = `SELECT ` + BuildCols + ` FROM builds
		WHERE state NOT IN ('passed', 'failed', 'canceled') ORDER BY created_at, id`
)

// TransitionBuild moves a build from one of the states in (an InList) to another; bigint
// follows the finished_at parameter compared with 0 (see EventSeq). Parameters: to, error
// code twice, error message twice, started_at, finished_at twice, id, then the from states.
func TransitionBuild(in, bigint string) string {
	return `UPDATE builds SET state = ?,
			error_code = CASE WHEN ? <> '' THEN ? ELSE error_code END,
			error_message = CASE WHEN ? <> '' THEN ? ELSE error_message END,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END,
			finished_at = CASE WHEN ?` + bigint + ` <> 0 THEN ? ELSE finished_at END
			WHERE id = ? AND state IN (` + in + `) RETURNING ` + BuildCols
}

const (
	// id
	CancelBuild = `UPDATE builds SET state = 'canceling', canceled = 1
			WHERE id = ? AND state IN ('scheduled', 'running', 'failing') RETURNING ` + BuildCols
	// One statement decides: free, lapsed or ours. The epoch is kept only when the owner
	// renews a lease that is still live; any other take is a change of hands. Parameters:
	// owner, now, owner, expiry, build, owner, now.
	AcquireBuildLease = `UPDATE builds SET
				driver_epoch = CASE WHEN driver_owner = ? AND driver_expires >= ? THEN driver_epoch ELSE driver_epoch + 1 END,
				driver_owner = ?, driver_expires = ?
			WHERE id = ? AND (driver_owner = ? OR driver_expires < ?) RETURNING driver_epoch`
	// build
	BuildDriver = `SELECT driver_owner, driver_epoch FROM builds WHERE id = ?`
	// build, owner, epoch
	ReleaseBuildLease = `UPDATE builds SET driver_expires = 0 WHERE id = ? AND driver_owner = ? AND driver_epoch = ?
			RETURNING state`
)
