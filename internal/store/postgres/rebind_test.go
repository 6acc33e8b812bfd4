package postgres

import "testing"

func TestRebind(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT ? , ?`, `SELECT $1 , $2`},
		{`WHERE a = '?' AND b = ?`, `WHERE a = '?' AND b = $1`},
		{"-- the agent's ? org\nAND x = ? AND y = 'it''s ?' AND z = ?::bigint", "-- the agent's ? org\nAND x = $1 AND y = 'it''s ?' AND z = $2::bigint"},
		{`a - b = ?`, `a - b = $1`},
	} {
		if got := rebind(c.in); got != c.want {
			t.Errorf("rebind(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
