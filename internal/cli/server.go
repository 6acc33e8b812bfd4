package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/server"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/server/metrics"
)

// drainTimeout bounds how long SIGTERM waits for in-flight requests.
const drainTimeout = 30 * time.Second

func newServerCmd(stdio IO) *cobra.Command {
	var listen, data, db, maxSource string
	var leaseTTL, buildLeaseTTL, drainDelay, retention time.Duration
	var retries int
	var noMigrate bool
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Serve the Harmont API v0 subset and hm's event stream over a store in --data or --db",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var max config.Size
			if err := max.UnmarshalText([]byte(maxSource)); err != nil {
				return errs.New(errs.ErrUsage, "usage", "give a size such as 256MiB", "--max-source-size %q: %v", maxSource, err)
			}
			if retries < 0 {
				return errs.New(errs.ErrUsage, "usage", "give --agent-retries 0 or more", "--agent-retries %d is negative", retries)
			}
			if buildLeaseTTL < time.Second {
				return errs.New(errs.ErrUsage, "usage", "give --build-lease-ttl 1s or more", "--build-lease-ttl %s is too short", buildLeaseTTL)
			}
			if retention < 0 {
				return errs.New(errs.ErrUsage, "usage", "give --retention 0 (keep every build) or a duration such as 720h", "--retention %s is negative", retention)
			}
			return runServer(c.Context(), stdio, listen, data, storeFlags{db: db, noMigrate: noMigrate}, int64(max), leaseTTL, buildLeaseTTL, retries, drainDelay, retention)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to listen on")
	cmd.Flags().StringVar(&data, "data", "", "data directory: blobs, the log token key and (without --db) the SQLite store")
	cmd.Flags().StringVar(&db, "db", "", "the store: postgres://USER:PASSWORD@HOST/DB (several replicas) or sqlite:PATH; default DATA/store.db")
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "refuse a PostgreSQL store that is not at this hm's schema instead of migrating it")
	cmd.Flags().StringVar(&maxSource, "max-source-size", "256MiB", "largest source archive a build may submit")
	cmd.Flags().DurationVar(&leaseTTL, "lease-ttl", server.DefaultAgentLeaseTTL, "lease of a claimed step: an agent silent this long is lost")
	cmd.Flags().DurationVar(&buildLeaseTTL, "build-lease-ttl", driver.DefaultLeaseTTL,
		"lease of a build's driver: after a crash (kill -9) its builds wait this long before a server carries them on")
	cmd.Flags().DurationVar(&drainDelay, "drain-delay", 0, "on SIGTERM, answer /readyz 503 but keep serving this long before draining (a load balancer's probe interval)")
	cmd.Flags().DurationVar(&retention, "retention", 0,
		"delete builds (jobs, logs, events, artifacts) that ended longer ago than this, e.g. 720h; 0 keeps every build")
	cmd.Flags().IntVar(&retries, "agent-retries", 2, "requeues of a step whose agent was lost before it fails agent_lost")
	cmd.MarkFlagRequired("data")
	cmd.AddCommand(newServerTokenCmd(stdio), newServerMigrateCmd(stdio))
	return cmd
}

func runServer(ctx context.Context, stdio IO, listen, data string, sf storeFlags, maxSource int64, leaseTTL, buildLeaseTTL time.Duration, retries int, drainDelay, retention time.Duration) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	serverGC()
	st, err := openStore(ctx, data, sf)
	if err != nil {
		return err
	}
	defer st.Close()
	blobs, err := serverBlobs(data, st)
	if err != nil {
		return err
	}
	key, err := serverLogKey(ctx, data, st)
	if err != nil {
		return err
	}
	skey, err := serverSecretsKey(ctx, data, st)
	if err != nil {
		return err
	}
	sealer, err := secret.NewSealer(skey)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stdio.Err, nil))
	owner := "server-" + uuid.NewString()
	// Everything but the probes goes through the instrumented store: its latency, claims,
	// lease expiries and step durations are the metrics.
	met := metrics.New(st)
	raw := st
	st = met.Store(st)
	// The manager's 0 is its default and a negative value no retries.
	if retries == 0 {
		retries = -1
	}
	mgr := &driver.Manager{Driver: driver.Config{Store: st, Owner: owner, LeaseTTL: buildLeaseTTL, Secrets: sealer}, AgentTTL: leaseTTL,
		Logger: logger, MaxRetries: retries, Retention: retention, Blobs: blobs}
	srv, err := server.New(server.Config{Store: st, Blobs: blobs, LogKey: key, Secrets: sealer, MaxSourceBytes: maxSource, Logger: logger,
		AgentLeaseTTL: leaseTTL, OnBuild: mgr.Kick, Metrics: met.Handler()})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return errs.New(errs.ErrUnavailable, "listen", "choose a free address with --listen", "cannot listen on %s: %v", listen, err)
	}
	probes := &health{st: raw, next: srv}
	hs := &http.Server{Handler: probes, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	logger.Info("hm server listening", "addr", ln.Addr().String(), "data", data, "store", storeName(raw))
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	// The drivers stop with the server, without canceling their builds, and release their
	// leases: a restarted server (or another replica) takes the builds over at once.
	mctx, stopMgr := context.WithCancel(context.WithoutCancel(ctx))
	mgrDone := make(chan struct{})
	go func() { defer close(mgrDone); mgr.Run(mctx) }()
	defer func() { stopMgr(); <-mgrDone }()
	select {
	case err := <-done:
		return fmt.Errorf("server: %w: %w", errs.ErrInfra, err)
	case <-ctx.Done():
	}
	// Not ready from now on, so that a load balancer stops sending traffic here, while
	// requests already routed are still served for drainDelay.
	probes.draining.Store(true)
	if drainDelay > 0 {
		logger.Info("hm server not ready, draining soon", "delay", drainDelay)
		time.Sleep(drainDelay)
	}
	logger.Info("hm server draining")
	srv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("server: drain: %w: %w", errs.ErrInfra, err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w: %w", errs.ErrInfra, err)
	}
	logger.Info("hm server stopped")
	return nil
}

// serverGC collects less often than Go's default unless GOGC says otherwise. A log's bytes
// pass through the server as short-lived garbage (request bodies, chunks, events, frames) over
// a small live heap, so the default (GOGC=100) collected every few MB of log: ~8 % of the
// server's CPU per log line. At 400 the heap grows to 5× its live part between collections.
// GOMEMLIMIT, Go's own, still caps a server whose live heap is large.
func serverGC() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(serverGCPercent)
	}
}

const serverGCPercent = 400
