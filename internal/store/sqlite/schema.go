package sqlite

// Migrations returns the store's schema migrations in order, the text of migrations/: the
// PostgreSQL driver (internal/store/postgres) applies the same files, so that both drivers
// are always at the same schema version with the same tables.
func Migrations() ([]string, error) { return migrations() }
