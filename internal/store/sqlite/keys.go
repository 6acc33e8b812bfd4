package sqlite

import (
	"context"
	"database/sql"

	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) SharedKey(ctx context.Context, name string, fresh []byte) ([]byte, error) {
	var v []byte
	err := s.write(ctx, "shared key", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqlq.PutSharedKey, name, fresh); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, sqlq.GetSharedKey, name).Scan(&v)
	})
	return v, err
}
