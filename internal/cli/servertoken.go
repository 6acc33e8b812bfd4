package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

// hm server token create|ls|revoke: the API tokens of a server's orgs, on its store directly
// (no server needs to run). A revoked token is refused at once by a server started after,
// and within the servers' token cache (2 s) by one running.

func newServerTokenCmd(stdio IO) *cobra.Command {
	tok := &cobra.Command{Use: "token", Short: "Manage the server's API tokens"}
	tok.AddCommand(newServerTokenCreateCmd(stdio), newServerTokenLsCmd(stdio), newServerTokenRevokeCmd(stdio))
	return tok
}

// tokenStoreFlags adds --data and --db (one of them required) and opens the store they name.
func tokenStoreFlags(cmd *cobra.Command) func(ctx context.Context) (store.Store, error) {
	var data, db string
	cmd.Flags().StringVar(&data, "data", "", "the server's data directory")
	cmd.Flags().StringVar(&db, "db", "", "the server's --db, when it has one")
	cmd.MarkFlagsOneRequired("data", "db")
	return func(ctx context.Context) (store.Store, error) { return openStore(ctx, data, storeFlags{db: db}) }
}

func newServerTokenCreateCmd(stdio IO) *cobra.Command {
	var org, name string
	var agent bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token for --org (created when new) and print it once; only its hash is stored",
		Args:  cobra.NoArgs,
	}
	open := tokenStoreFlags(create)
	create.RunE = func(c *cobra.Command, _ []string) error {
		st, err := open(c.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		o, err := st.GetOrgBySlug(c.Context(), org)
		if store.IsNotFound(err) {
			o, err = st.CreateOrg(c.Context(), org, org)
			if store.IsConflict(err) {
				o, err = st.GetOrgBySlug(c.Context(), org)
			}
		}
		if err != nil {
			return err
		}
		kind := store.TokenUser
		if agent {
			kind = store.TokenAgent
		}
		secret, h := store.NewToken(kind)
		if _, err := st.CreateToken(c.Context(), store.Token{OrgID: o.ID, Kind: kind, Name: name, Hash: h}); err != nil {
			return err
		}
		fmt.Fprintln(stdio.Out, secret)
		return nil
	}
	create.Flags().StringVar(&org, "org", "", "organization slug (created when it does not exist)")
	create.Flags().StringVar(&name, "name", "", "a name to recognize the token by")
	create.Flags().BoolVar(&agent, "agent", false, "an agent token (agent routes only) instead of a user token")
	create.MarkFlagRequired("org")
	return create
}

// tokenRow is a token as hm server token ls prints it: never its secret or hash.
type tokenRow struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used"`
}

func newServerTokenLsCmd(stdio IO) *cobra.Command {
	var org string
	ls := &cobra.Command{Use: "ls", Short: "List the tokens of --org (ids, kinds, names, last use; never a secret)", Args: cobra.NoArgs}
	open := tokenStoreFlags(ls)
	asJSON := listFormat(ls)
	ls.RunE = func(c *cobra.Command, _ []string) error {
		js, err := asJSON()
		if err != nil {
			return err
		}
		st, err := open(c.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		o, err := st.GetOrgBySlug(c.Context(), org)
		if err != nil {
			return err
		}
		ts, err := st.ListTokens(c.Context(), o.ID)
		if err != nil {
			return err
		}
		rows := make([]tokenRow, 0, len(ts))
		for _, t := range ts {
			r := tokenRow{ID: t.ID, Kind: string(t.Kind), Name: t.Name, CreatedAt: t.CreatedAt.UTC()}
			if !t.LastUsed.IsZero() {
				lu := t.LastUsed.UTC()
				r.LastUsed = &lu
			}
			rows = append(rows, r)
		}
		if js {
			return writeJSONList(stdio.Out, rows)
		}
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tNAME\tCREATED\tLAST USED")
		for _, r := range rows {
			last := "never"
			if r.LastUsed != nil {
				last = r.LastUsed.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.Name, r.CreatedAt.Format(time.RFC3339), last)
		}
		return tw.Flush()
	}
	ls.Flags().StringVar(&org, "org", "", "organization slug")
	ls.MarkFlagRequired("org")
	return ls
}

func newServerTokenRevokeCmd(stdio IO) *cobra.Command {
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Delete a token (its id from hm server token ls): requests with it are refused from then on",
		Args:  cobra.ExactArgs(1),
	}
	open := tokenStoreFlags(revoke)
	revoke.RunE = func(c *cobra.Command, args []string) error {
		st, err := open(c.Context())
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.DeleteToken(c.Context(), args[0]); err != nil {
			if store.IsNotFound(err) {
				return errs.New(errs.ErrUsage, "token_not_found", "list the tokens with `hm server token ls --org ORG`",
					"no token %q", args[0])
			}
			return err
		}
		fmt.Fprintf(stdio.Err, "hm: token %s revoked (running servers refuse it within 2 s)\n", args[0])
		return nil
	}
	return revoke
}
