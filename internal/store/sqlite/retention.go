package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) PruneBuilds(ctx context.Context, before time.Time, limit int) (int, error) {
	vs, err := list(ctx, s.db, "prune builds", sqlq.ScanVictim, sqlq.PrunableBuilds, ns(before), limit)
	if err != nil {
		return 0, err
	}
	return sqlq.PruneAll(vs, func(v sqlq.Victim) error {
		return s.write(ctx, "prune build", func(tx *sql.Tx) error {
			return sqlq.PruneBuild(func(q string, args ...any) (int64, error) {
				res, err := tx.ExecContext(ctx, q, args...)
				if err != nil {
					return 0, err
				}
				return res.RowsAffected()
			}, v.ID, v.Source, ns(before))
		})
	}, s.recent.Forget)
}

func (s *DB) BlobRefs(ctx context.Context) (map[string]bool, error) {
	refs, err := sqlq.BlobRefs(func(q string) ([]string, error) {
		return list(ctx, s.db, "blob refs", func(r sqlq.Scanner) (v string, err error) { return v, r.Scan(&v) }, q)
	})
	return refs, wrap("blob refs", err)
}
