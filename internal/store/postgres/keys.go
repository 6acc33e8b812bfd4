package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store/sqlq"
)

func (s *DB) SharedKey(ctx context.Context, name string, fresh []byte) ([]byte, error) {
	var v []byte
	err := s.write(ctx, "shared key", func(tx pgx.Tx) error {
		if _, err := exec(ctx, tx, sqlq.PutSharedKey, name, fresh); err != nil {
			return err
		}
		return row(ctx, tx, sqlq.GetSharedKey, name).Scan(&v)
	})
	return v, err
}
