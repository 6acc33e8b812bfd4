package sqlq

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Retention (store.Retention): ended builds past a server's retention and the blob digests
// rows still reference.

const (
	// before (ns), limit: the oldest ended builds first, so that a pass bounded by limit
	// makes progress; finished_at > 0 leaves alone a build whose end was never recorded.
	PrunableBuilds = `SELECT id, source_digest FROM builds
		WHERE state IN ('passed', 'failed', 'canceled') AND finished_at > 0 AND finished_at < ?
		ORDER BY finished_at, id LIMIT ?`
	// build id, before (ns): the build row itself, last, still ended and old: a build taken
	// over meanwhile (it cannot be: ended is final) would be left whole.
	DeleteBuild = `DELETE FROM builds WHERE id = ? AND state IN ('passed', 'failed', 'canceled') AND finished_at < ?`
	// digest: the source blob's row once no build names it.
	DeleteUnusedSourceBlob = `DELETE FROM source_blobs WHERE digest = ?
		AND NOT EXISTS (SELECT 1 FROM builds WHERE source_digest = ?)`

	BlobRefsSources   = `SELECT DISTINCT source_digest FROM builds WHERE source_digest <> ''`
	BlobRefsJobs      = `SELECT artifacts FROM jobs WHERE artifacts <> ''`
	BlobRefsCache     = `SELECT artifacts FROM cache_entries WHERE artifacts <> ''`
	jobsOfBuild       = `SELECT id FROM jobs WHERE build_id = ?`
	deleteOfJobsWhere = ` WHERE job_id IN (` + jobsOfBuild + `)`
)

// deleteBuildRows are the statements that delete what a build owns, each taking its id,
// children before parents (SQLite checks the foreign keys): its jobs' labels, tries, log
// chunks and heads, its jobs, events and secrets. DeleteBuild then deletes the build.
var deleteBuildRows = []string{
	`DELETE FROM job_labels` + deleteOfJobsWhere,
	`DELETE FROM job_tries` + deleteOfJobsWhere,
	`DELETE FROM log_chunks` + deleteOfJobsWhere,
	`DELETE FROM log_heads` + deleteOfJobsWhere,
	`DELETE FROM jobs WHERE build_id = ?`,
	`DELETE FROM build_events WHERE build_id = ?`,
	`DELETE FROM build_secrets WHERE build_id = ?`,
}

// ArtifactDigests adds to refs the blob digest ("sha256:" + hex) of every file of an
// artifacts column: the server's {"files": [{path, size, sha256}], "warnings": [...]}
// (driver.Artifacts). A column that does not parse is an error: a sweep must not delete what
// it could not read.
func ArtifactDigests(refs map[string]bool, column string) error {
	var doc struct {
		Files []struct {
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(column), &doc); err != nil {
		return fmt.Errorf("an artifacts column does not parse: %w", err)
	}
	for _, f := range doc.Files {
		refs["sha256:"+f.SHA256] = true
	}
	return nil
}

// Exec runs a statement in a driver's transaction and returns the rows it changed.
type Exec func(query string, args ...any) (int64, error)

// PruneBuild deletes build id (ended before before, source its source digest) with its rows
// in the transaction of exec: errKept when it is not prunable after all, which the caller's
// transaction must roll back (the rows deleted before the check are its own).
func PruneBuild(exec Exec, id, source string, before int64) error {
	for _, q := range deleteBuildRows {
		if _, err := exec(q, id); err != nil {
			return err
		}
	}
	n, err := exec(DeleteBuild, id, before)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrKept
	}
	if source == "" {
		return nil
	}
	_, err = exec(DeleteUnusedSourceBlob, source, source)
	return err
}

// ErrKept rolls back the deletion of a build that is no longer prunable.
var ErrKept = errors.New("build kept")

// Victim is a build PrunableBuilds listed: its id and source digest.
type Victim struct{ ID, Source string }

// ScanVictim reads a row of PrunableBuilds.
func ScanVictim(r Scanner) (v Victim, err error) { return v, r.Scan(&v.ID, &v.Source) }

// PruneAll prunes each of vs with prune (PruneBuild in a transaction of the driver's) and
// returns how many went, forgetting each one's recent events; a build no longer prunable
// (ErrKept) is skipped, any other failure ends the pass.
func PruneAll(vs []Victim, prune func(Victim) error, forget func(id string)) (int, error) {
	n := 0
	for _, v := range vs {
		switch err := prune(v); {
		case err == nil:
			n++
			forget(v.ID)
		case !errors.Is(err, ErrKept):
			return n, err
		}
	}
	return n, nil
}

// BlobRefs is store.Retention's BlobRefs over a driver's query of one string column.
func BlobRefs(strings func(query string) ([]string, error)) (map[string]bool, error) {
	refs := map[string]bool{}
	srcs, err := strings(BlobRefsSources)
	if err != nil {
		return nil, err
	}
	for _, d := range srcs {
		refs[d] = true
	}
	for _, q := range []string{BlobRefsJobs, BlobRefsCache} {
		cols, err := strings(q)
		if err != nil {
			return nil, err
		}
		for _, c := range cols {
			if err := ArtifactDigests(refs, c); err != nil {
				return nil, err
			}
		}
	}
	return refs, nil
}
