package sqlite

import (
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
			return sqlq.PruneBuild(func(q string, args ...any) (int64, error) {
				res, err := tx.ExecContext(ctx, q, args...)
				if err != nil {
					return 0, err
				}
				return res.RowsAffected()
			}, v.id, v.source, ns(before))
		})
		switch {
		case err == nil:
			n++
			s.recent.Forget(v.id)
		case !errors.Is(err, sqlq.ErrKept):
			return n, err
		}
	}
	return n, nil
}

func (s *DB) BlobRefs(ctx context.Context) (map[string]bool, error) {
	refs, err := sqlq.BlobRefs(func(q string) ([]string, error) {
		return list(ctx, s.db, "blob refs", func(r sqlq.Scanner) (v string, err error) { return v, r.Scan(&v) }, q)
	})
	return refs, wrap("blob refs", err)
}
