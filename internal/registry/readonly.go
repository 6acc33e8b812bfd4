package registry

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// OpenReadOnly opens an existing registry for reading: it creates, locks and migrates
// nothing, so that listing the cache, or a build whose steps are all cached, works on a full
// disk or a read-only state dir. Lookup then finds entries without marking them used; the
// write methods fail.
func OpenReadOnly(ctx context.Context, path string) (*Registry, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("registry: path %q contains '?': %w", path, errs.ErrUsage)
	}
	// mode=ro first: it reads what a WAL not yet checkpointed holds. It needs the WAL's -shm
	// file, which a read-only directory cannot get; immutable=1 then reads the main file as
	// it is (hm checkpoints on close, so that is everything unless an hm is still writing
	// through another mount).
	var last error
	for _, params := range []string{"mode=ro", "mode=ro&immutable=1"} {
		u := url.URL{Scheme: "file", Path: path, RawQuery: params +
			fmt.Sprintf("&_pragma=busy_timeout(%d)", busyTimeout.Milliseconds())}
		db, err := sql.Open("sqlite", u.String())
		if err != nil {
			return nil, fmt.Errorf("registry: open %s: %w: %w", path, errs.ErrInfra, err)
		}
		r := &Registry{db: db, path: path, now: time.Now, readOnly: true}
		if last = r.checkVersion(ctx); last == nil {
			return r, nil
		}
		db.Close()
	}
	return nil, last
}

// checkVersion fails unless the schema is the one this hm writes: a read-only registry
// cannot be migrated.
func (r *Registry) checkVersion(ctx context.Context) error {
	var v int
	if err := r.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return wrap("open read-only", err)
	}
	if v != len(migrations) {
		return errs.New(errs.ErrInfra, "registry_version",
			"run a build (which migrates the registry) with a writable state dir, or use the hm that wrote it",
			"snapshot registry %s has schema version %d; this hm reads version %d and cannot migrate it read-only", r.path, v, len(migrations))
	}
	return nil
}
