// Package sqlitemigrate applies numbered schema migrations to a SQLite database inside the
// caller's write transaction, keeping the schema version in PRAGMA user_version. It is the
// one migration step hm's SQLite stores share (the snapshot registry, the server's store);
// opening, locking and transactions stay with each store.
package sqlitemigrate

import (
	"context"
	"database/sql"
	"fmt"
)

// Apply brings the schema from its user_version up to len(migrations), running
// migrations[i] to go from version i to i+1. A database newer than this hm knows is refused
// with tooNew(version), before anything is changed.
func Apply(ctx context.Context, tx *sql.Tx, migrations []string, tooNew func(version int) error) error {
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return tooNew(v)
	}
	for ; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("schema %d→%d: %w", v, v+1, err)
		}
	}
	// PRAGMA takes no bound parameters; v is an int we control.
	_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
	return err
}
