package cli

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/server"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/blobdir"
)

// What the replicas of a deployment must share besides their store: the blobs, the log-token
// key and the secrets key.

// serverBlobs is where the server keeps sources and artifacts: in the store when it can hold
// them (PostgreSQL: replicas need no shared --data), over DATA/blobs for what an older hm
// wrote there; else DATA/blobs.
func serverBlobs(data string, st store.Store) (store.BlobStore, error) {
	dir, err := blobdir.Open(filepath.Join(data, "blobs"))
	if err != nil {
		return nil, err
	}
	if bs, ok := st.(store.BlobStore); ok {
		return blobdir.Fallback{Primary: bs, Dir: dir}, nil
	}
	return dir, nil
}

// serverLogKey is the log-token signing key, held by the store so that a log URL one replica
// signed is served by any: the first server to start stores its DATA/log-token.key (an older
// hm's) or fresh random bytes.
func serverLogKey(ctx context.Context, data string, st store.Store) ([]byte, error) {
	fresh, err := os.ReadFile(filepath.Join(data, "log-token.key"))
	if err != nil || len(fresh) < 32 {
		fresh = make([]byte, 32)
		rand.Read(fresh)
	}
	return st.SharedKey(ctx, "log-token", fresh)
}

// serverSecretsKey is DATA/secrets.key (created on first use). It stays out of the store, so
// that a copy of the database alone opens no secret; the store holds a check of it instead,
// and a replica whose key is not the deployment's refuses to start rather than seal what the
// others cannot open.
func serverSecretsKey(ctx context.Context, data string, st store.Store) ([]byte, error) {
	path := filepath.Join(data, "secrets.key")
	key, err := server.LoadKey(path)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hm secrets key check v1"))
	check := m.Sum(nil)
	stored, err := st.SharedKey(ctx, "secrets-key-check", check)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(stored, check) {
		return nil, errs.New(errs.ErrUsage, "secrets_key_mismatch",
			"copy secrets.key from the --data of a server of this deployment into this one's (replicas seal secrets with one key); if every copy is lost, delete the server_keys row 'secrets-key-check' to start over, and builds with secrets in flight fail",
			"%s is not the secrets key of the other servers on this store", path)
	}
	return key, nil
}
