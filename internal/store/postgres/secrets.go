package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) GetBuildSecrets(ctx context.Context, buildID string) ([]byte, error) {
	b, err := one(row(ctx, s.pool, sqlq.GetBuildSecrets, buildID),
		sqlq.ScanBytes, "build_secrets", buildID)
	return b, wrap("get build secrets", err)
}

func (s *DB) DeleteBuildSecrets(ctx context.Context, buildID string) error {
	return s.write(ctx, "delete build secrets", func(tx pgx.Tx) error {
		_, err := exec(ctx, tx, sqlq.DeleteBuildSecrets, buildID)
		return err
	})
}

func (s *DB) DeleteEndedBuildSecrets(ctx context.Context) (int, error) {
	var n int64
	err := s.write(ctx, "delete ended build secrets", func(tx pgx.Tx) error {
		tag, err := exec(ctx, tx, sqlq.DeleteEndedBuildSecrets)
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
}
