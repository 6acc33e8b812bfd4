package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/postgres"
	"github.com/hmci/hm/internal/store/sqlite"
)

// storeFlags choose the server's store: --db (postgres://… or sqlite:PATH), else the SQLite
// file in --data.
type storeFlags struct {
	db        string
	noMigrate bool
}

// openStore opens (and, unless told not to, migrates) the store the flags name. Its errors
// carry this CLI's fix.
func openStore(ctx context.Context, data string, sf storeFlags) (store.Store, error) {
	switch {
	case postgres.IsURL(sf.db):
		st, err := postgres.Open(ctx, sf.db, postgres.Options{NoMigrate: sf.noMigrate})
		if err != nil {
			return nil, storeFix(err)
		}
		return st, nil
	case sf.noMigrate:
		return nil, errs.New(errs.ErrUsage, "usage", "drop --no-migrate, or give a postgres:// --db",
			"--no-migrate applies to a PostgreSQL store: a SQLite store is one server's and is migrated when opened")
	case strings.HasPrefix(sf.db, "sqlite:"):
		return sqlite.OpenFile(ctx, strings.TrimPrefix(sf.db, "sqlite:"))
	case sf.db != "":
		scheme, _, _ := strings.Cut(sf.db, ":") // never the rest: it may hold a password
		return nil, errs.New(errs.ErrUsage, "usage", "give --db postgres://USER:PASSWORD@HOST/DATABASE or sqlite:PATH",
			"--db %q…: not a store this hm knows", scheme)
	case data == "":
		return nil, errs.New(errs.ErrUsage, "usage", "give --data DIR (the SQLite store in it) or --db", "no store given")
	}
	return sqlite.Open(ctx, data)
}

// storeFix adds the fix line to the PostgreSQL driver's typed errors.
func storeFix(err error) error {
	var ue *errs.UnavailableError
	if errors.As(err, &ue) && ue.Backend == "postgres" {
		return &errs.Error{Code: ue.Code(), Msg: ue.Msg, Exit: errs.ExitUnavailable, Err: err,
			Fix: fmt.Sprintf("check that PostgreSQL runs at %s and that --db's user, password and database are right", ue.Address)}
	}
	var se *postgres.SchemaError
	if errors.As(err, &se) {
		fix := "run `hm server migrate --db …` first, or start without --no-migrate"
		if se.Have > se.Known {
			fix = "upgrade hm to the version that migrated this database, or point --db at another database"
		}
		return &errs.Error{Code: se.Code(), Msg: se.Error(), Exit: errs.ExitCode(err), Err: err, Fix: fix}
	}
	if errors.Is(err, errs.ErrUsage) {
		return &errs.Error{Code: "usage", Msg: err.Error(), Exit: errs.ExitUsage, Err: err,
			Fix: "give --db as postgres://USER:PASSWORD@HOST[:PORT]/DATABASE, special characters of the password percent-encoded"}
	}
	return err
}

// storeName says which store a server runs on, for its log (never a password).
func storeName(st store.Store) string {
	switch s := st.(type) {
	case *postgres.DB:
		return "postgres " + s.Where()
	case *sqlite.DB:
		return "sqlite " + s.Path()
	}
	return fmt.Sprintf("%T", st)
}

func newServerMigrateCmd(stdio IO) *cobra.Command {
	var data, db string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Bring the store's schema up to this hm's (hm server also does on start, unless --no-migrate)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if postgres.IsURL(db) {
				st, err := postgres.Connect(c.Context(), db)
				if err != nil {
					return storeFix(err)
				}
				defer st.Close()
				from, to, err := st.Migrate(c.Context())
				if err != nil {
					return storeFix(err)
				}
				fmt.Fprintf(stdio.Out, "store postgres %s: schema %d → %d\n", st.Where(), from, to)
				return nil
			}
			st, err := openStore(c.Context(), data, storeFlags{db: db})
			if err != nil {
				return err
			}
			defer st.Close()
			fmt.Fprintf(stdio.Out, "store %s: schema current\n", storeName(st))
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the server's data directory (its SQLite store)")
	cmd.Flags().StringVar(&db, "db", "", "the server's --db")
	cmd.MarkFlagsOneRequired("data", "db")
	return cmd
}
