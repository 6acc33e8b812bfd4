package sqlite

import (
	"context"
	"database/sql"
)

// terminalBuild is the SQL list of a build's terminal states.
const terminalBuild = `('passed', 'failed', 'canceled')`

func (s *DB) GetBuildSecrets(ctx context.Context, buildID string) ([]byte, error) {
	b, err := one(s.db.QueryRowContext(ctx, `SELECT sealed FROM build_secrets WHERE build_id = ?`, buildID),
		func(r scanner) ([]byte, error) {
			var b []byte
			return b, r.Scan(&b)
		}, "build_secrets", buildID)
	return b, wrap("get build secrets", err)
}

func (s *DB) DeleteBuildSecrets(ctx context.Context, buildID string) error {
	return s.write(ctx, "delete build secrets", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM build_secrets WHERE build_id = ?`, buildID)
		return err
	})
}

func (s *DB) DeleteEndedBuildSecrets(ctx context.Context) (int, error) {
	var n int64
	err := s.write(ctx, "delete ended build secrets", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM build_secrets
			WHERE build_id IN (SELECT id FROM builds WHERE state IN `+terminalBuild+`)`)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return int(n), err
}
