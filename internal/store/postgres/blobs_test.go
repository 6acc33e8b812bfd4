package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store/postgres/pgtest"
	"github.com/hmci/hm/internal/store/storetest"
)

func TestBlobStore(t *testing.T) {
	storetest.RunBlobStore(t, func(t *testing.T) storetest.BlobFixture {
		url := pgtest.URL(t)
		s := open(t, url)
		return storetest.BlobFixture{Store: s, Age: func(t *testing.T, digest string, by time.Duration) {
			conn, err := pgx.Connect(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			tag, err := conn.Exec(context.Background(), `UPDATE blob_files SET written_at = $1 WHERE digest = $2`,
				time.Now().Add(-by).UnixNano(), digest)
			if err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("aging %s: %v (%d rows)", digest, err, tag.RowsAffected())
			}
		}}
	})
}
