package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"

	_ "modernc.org/sqlite" // registers "sqlite"
)

// sqliteDriver is modernc.org/sqlite's registered driver, what sql.Open("sqlite", …) uses.
var sqliteDriver = func() driver.Driver {
	db, _ := sql.Open("sqlite", "")
	defer db.Close()
	return db.Driver()
}()

// stmtsPerConn bounds each connection's statement cache. The driver's queries are constant
// strings (sqlq) plus the multi-row inserts (stmtEntry apart, DB.prepared), a few dozen in all.
const stmtsPerConn = 128

// stmtConnector opens modernc.org/sqlite connections that keep their statements prepared.
// modernc.org/sqlite parses and plans every query database/sql hands it as text, and the
// store sends every query as text: parsing was ~15 % of the server's CPU on the log path
// (a token lookup, a job read, a log page each parse their statement every time). A
// connection here prepares each query once and steps the same statement again; SQLite
// re-prepares it by itself if the schema changed.
type stmtConnector struct {
	dsn string
	drv driver.Driver
}

func (c stmtConnector) Connect(context.Context) (driver.Conn, error) {
	cn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &stmtConn{Conn: cn, stmts: map[string]*stmtEntry{}}, nil
}

func (c stmtConnector) Driver() driver.Driver { return c.drv }

// conn is one connection and its statements. database/sql uses a connection from one
// goroutine at a time (rows included), so the cache needs no lock.
type stmtConn struct {
	driver.Conn
	stmts map[string]*stmtEntry
	tick  uint64 // use counter, for eviction
}

type stmtEntry struct {
	st   driver.Stmt
	busy bool // its rows are open: a nested use of the same query prepares its own
	used uint64
}

var (
	_ driver.QueryerContext     = (*stmtConn)(nil)
	_ driver.ExecerContext      = (*stmtConn)(nil)
	_ driver.ConnBeginTx        = (*stmtConn)(nil)
	_ driver.ConnPrepareContext = (*stmtConn)(nil)
	_ driver.SessionResetter    = (*stmtConn)(nil)
	_ driver.Validator          = (*stmtConn)(nil)
	_ driver.Pinger             = (*stmtConn)(nil)
)

// stmt is the stmtEntry statement of query, prepared on first use; nil when it is in use.
func (c *stmtConn) stmt(ctx context.Context, query string) (*stmtEntry, error) {
	c.tick++
	if e, ok := c.stmts[query]; ok {
		if e.busy {
			return nil, nil
		}
		e.used = c.tick
		return e, nil
	}
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if len(c.stmts) >= stmtsPerConn {
		c.evict()
	}
	e := &stmtEntry{st: st, used: c.tick}
	c.stmts[query] = e
	return e, nil
}

// evict closes the least recently used statement that is not in use.
func (c *stmtConn) evict() {
	var old string
	var oldest *stmtEntry
	for q, e := range c.stmts {
		if !e.busy && (oldest == nil || e.used < oldest.used) {
			old, oldest = q, e
		}
	}
	if oldest != nil {
		oldest.st.Close()
		delete(c.stmts, old)
	}
}

func (c *stmtConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	e, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	r, err := e.st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	e.busy = true
	return &stmtRows{Rows: r, e: e}, nil
}

func (c *stmtConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	}
	return e.st.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *stmtConn) Close() error {
	for _, e := range c.stmts {
		e.st.Close()
	}
	c.stmts = nil
	return c.Conn.Close()
}

func (c *stmtConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *stmtConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *stmtConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *stmtConn) IsValid() bool { return c.Conn.(driver.Validator).IsValid() }

func (c *stmtConn) Ping(ctx context.Context) error { return c.Conn.(driver.Pinger).Ping(ctx) }

// rows frees its statement for the next use once closed (modernc.org/sqlite resets it).
type stmtRows struct {
	driver.Rows
	e *stmtEntry
}

func (r *stmtRows) Close() error {
	err := r.Rows.Close()
	r.e.busy = false
	return err
}
