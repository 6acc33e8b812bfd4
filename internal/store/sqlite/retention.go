package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) PruneBuilds(ctx context.Context, before time.Time, limit int) (int, error) {
	type victim struct{ id, source string }
	vs, err := list(ctx, s.db, "prune builds", func(r sqlq.Scanner) (v victim, err error) {
		return v, r.Scan(&v.id, &v.source)
	}, sqlq.PrunableBuilds, ns(before), limit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range vs {
		err := s.write(ctx, "prune build", func(tx *sql.Tx) error {
			for _, q := range sqlq.DeleteBuildRows {
				if _, err := tx.ExecContext(ctx, q, v.id); err != nil {
					return err
				}
			}
			res, err := tx.ExecContext(ctx, sqlq.DeleteBuild, v.id, ns(before))
			if err != nil {
				return err
			}
			if d, err := res.RowsAffected(); err != nil || d == 0 {
				return cmp.Or(err, errKept) // roll back: the build is not prunable after all
			}
			n++
			if v.source == "" {
				return nil
			}
			_, err = tx.ExecContext(ctx, sqlq.DeleteUnusedSourceBlob, v.source, v.source)
			return err
		})
		if err != nil && !errors.Is(err, errKept) {
			return n, err
		}
	}
	return n, nil
}

// errKept rolls back the deletion of a build that is no longer prunable.
var errKept = errors.New("build kept")

func (s *DB) BlobRefs(ctx context.Context) (map[string]bool, error) {
	refs := map[string]bool{}
	scan := func(r sqlq.Scanner) (v string, err error) { return v, r.Scan(&v) }
	srcs, err := list(ctx, s.db, "blob refs", scan, sqlq.BlobRefsSources)
	if err != nil {
		return nil, err
	}
	for _, d := range srcs {
		refs[d] = true
	}
	for _, q := range []string{sqlq.BlobRefsJobs, sqlq.BlobRefsCache} {
		cols, err := list(ctx, s.db, "blob refs", scan, q)
		if err != nil {
			return nil, err
		}
		for _, c := range cols {
			if err := sqlq.ArtifactDigests(refs, c); err != nil {
				return nil, wrap("blob refs", err)
			}
		}
	}
	return refs, nil
}
