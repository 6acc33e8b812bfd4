package sqlite

import (
	"context"
	"database/sql"

	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) GetBuildSecrets(ctx context.Context, buildID string) ([]byte, error) {
	b, err := one(s.db.QueryRowContext(ctx, sqlq.GetBuildSecrets, buildID),
		sqlq.ScanBytes, "build_secrets", buildID)
	return b, wrap("get build secrets", err)
}

func (s *DB) DeleteBuildSecrets(ctx context.Context, buildID string) error {
	return s.write(ctx, "delete build secrets", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, sqlq.DeleteBuildSecrets, buildID)
		return err
	})
}

func (s *DB) DeleteEndedBuildSecrets(ctx context.Context) (int, error) {
	var n int64
	err := s.write(ctx, "delete ended build secrets", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sqlq.DeleteEndedBuildSecrets)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return int(n), err
}
