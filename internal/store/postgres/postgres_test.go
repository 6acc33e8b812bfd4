package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/postgres"
	"github.com/hmci/hm/internal/store/postgres/pgtest"
	"github.com/hmci/hm/internal/store/storetest"
)

func open(t *testing.T, url string) *postgres.DB {
	t.Helper()
	s, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Fixture {
		url := pgtest.URL(t)
		return storetest.Fixture{Store: open(t, url), Dump: func() ([]byte, error) { return pgtest.Dump(url) }}
	})
}

// TestMain lets the test binary be a second claiming process (TestTwoProcessesClaim).
func TestMain(m *testing.M) {
	if url := os.Getenv("HM_STORE_TEST_CLAIMER"); url != "" {
		os.Exit(claimAll(url, os.Getenv("HM_STORE_TEST_AGENT")))
	}
	os.Exit(m.Run())
}

// claimAll claims jobs until there are none and prints their ids, one a line.
func claimAll(url, agent string) int {
	ctx := context.Background()
	s, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	o, err := s.GetOrgBySlug(ctx, "acme")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		j, ok, err := s.ClaimJob(ctx, store.Claim{AgentID: agent, OrgID: o.ID, Now: time.Now(), LeaseTTL: time.Minute})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if !ok {
			return 0
		}
		fmt.Println(j.ID)
	}
}

// readyJobs makes an org "acme" with one build of n released jobs and the agents.
func readyJobs(t *testing.T, ctx context.Context, s store.Store, n int, agents ...string) (store.Org, store.Build) {
	t.Helper()
	o, err := s.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	if err != nil {
		t.Fatal(err)
	}
	var nj []store.NewJob
	for i := range n {
		nj = append(nj, store.NewJob{StepKey: fmt.Sprint(i)})
	}
	b, jobs, err := s.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}", Jobs: nj})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if _, err := s.ReleaseJob(ctx, j.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range agents {
		if _, err := s.UpsertAgent(ctx, store.Agent{ID: a, OrgID: o.ID}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return o, b
}

// Two processes, each with its own pool, claiming from one database never get the same job:
// what several replicas do.
func TestTwoProcessesClaim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // hang guard
	defer cancel()
	url := pgtest.URL(t)
	s := open(t, url)
	const n = 60
	readyJobs(t, ctx, s, n, "agent-0", "agent-1")
	var outs [2]bytes.Buffer
	var cmds [2]*exec.Cmd
	for i := range cmds {
		cmds[i] = exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmds[i].Env = append(os.Environ(), "HM_STORE_TEST_CLAIMER="+url, fmt.Sprintf("HM_STORE_TEST_AGENT=agent-%d", i))
		cmds[i].Stdout, cmds[i].Stderr = &outs[i], os.Stderr
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("claimer %d: %v", i, err)
		}
		for _, id := range strings.Fields(outs[i].String()) {
			seen[id]++
			if seen[id] > 1 {
				t.Errorf("job %s claimed twice", id)
			}
		}
	}
	if len(seen) != n {
		t.Errorf("%d jobs claimed, want %d", len(seen), n)
	}
}

// Claimers on separate pools (replicas) race with a reaper and with heartbeats: no job is
// held by two agents at once, every job ends up claimed, and a claim answers "none" only
// when the queue is drained but for the jobs other claimers are taking that moment. The last
// is what SKIP LOCKED buys: without it, claimers that picked the same row queue on its lock
// and all but one come back empty-handed with the queue still full.
func TestClaimRaceAcrossPools(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // hang guard
	defer cancel()
	url := pgtest.URL(t)
	const replicas, agentsPer, n = 3, 4, 120
	pools := make([]*postgres.DB, replicas)
	for i := range pools {
		pools[i] = open(t, url)
	}
	var agents []string
	for r := range replicas {
		for a := range agentsPer {
			agents = append(agents, fmt.Sprintf("r%d-a%d", r, a))
		}
	}
	o, b := readyJobs(t, ctx, pools[0], n, agents...)
	var mu sync.Mutex
	owner := map[string]string{} // job → agent; a job is claimed exactly once (no lease lapses)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, a := range agents {
		s := pools[i/agentsPer]
		wg.Go(func() {
			<-start
			for {
				j, ok, err := s.ClaimJob(ctx, store.Claim{AgentID: a, OrgID: o.ID, Now: time.Now(), LeaseTTL: time.Hour})
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					js, err := s.ListJobs(ctx, b.ID)
					if err != nil {
						t.Error(err)
						return
					}
					left := 0
					for _, j := range js {
						if j.State == store.JobScheduled {
							left++
						}
					}
					if left > len(agents)-1 {
						t.Errorf("%s got no job with %d still scheduled", a, left)
					}
					return
				}
				mu.Lock()
				if prev, dup := owner[j.ID]; dup {
					t.Errorf("job %s handed to %s and %s", j.ID, prev, a)
				}
				owner[j.ID] = a
				mu.Unlock()
				if _, err := s.Heartbeat(ctx, j.ID, j.Attempt, time.Now(), time.Hour); err != nil {
					t.Errorf("heartbeat of %s by %s: %v", j.ID, a, err)
				}
			}
		})
	}
	// A reaper on every replica at once: leases are an hour long, so it must change nothing.
	for _, s := range pools {
		wg.Go(func() {
			<-start
			for range 20 {
				if r, err := s.ReapExpiredLeases(ctx, time.Now(), 2); err != nil || len(r) != 0 {
					t.Errorf("reaper: %d jobs, %v", len(r), err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if len(owner) != n {
		t.Errorf("%d jobs claimed, want %d", len(owner), n)
	}
}

// Replicas starting at once on an empty schema migrate it once: the others wait on the
// advisory lock and find it done.
func TestConcurrentMigrate(t *testing.T) {
	url := pgtest.URL(t)
	const n = 6
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for range n {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), url, postgres.Options{})
			if err == nil {
				s.Close()
			}
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, distinct, max int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT version), max(version) FROM hm_schema`).Scan(&rows, &distinct, &max); err != nil {
		t.Fatal(err)
	}
	if rows != max || distinct != max || max < 1 {
		t.Errorf("hm_schema: %d rows, %d versions, newest %d: want each version applied once", rows, distinct, max)
	}
}

// Without migrating, an empty database is refused, then accepted once migrated; a schema
// newer than this hm is refused with or without migrating, and nothing is changed.
func TestSchemaVersions(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	_, err := postgres.Open(ctx, url, postgres.Options{NoMigrate: true})
	var se *postgres.SchemaError
	if !errors.As(err, &se) || se.Code() != "store_not_migrated" || se.Have != 0 {
		t.Fatalf("open of an empty database without migrating = %v, want store_not_migrated at 0", err)
	}
	s := open(t, url)
	from, to, err := s.Migrate(ctx)
	if err != nil || from != to || to < 3 {
		t.Fatalf("second migrate = %d→%d, %v: want nothing to do", from, to, err)
	}
	if _, err := s.CreateOrg(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	s2, err := postgres.Open(ctx, url, postgres.Options{NoMigrate: true})
	if err != nil {
		t.Fatalf("open of a migrated database without migrating: %v", err)
	}
	if _, err := s2.GetOrgBySlug(ctx, "acme"); err != nil {
		t.Errorf("after reopen: %v", err)
	}
	s2.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO hm_schema (version, applied_at) VALUES (999, 0)`); err != nil {
		t.Fatal(err)
	}
	for _, o := range []postgres.Options{{}, {NoMigrate: true}} {
		_, err := postgres.Open(ctx, url, o)
		if !errors.As(err, &se) || se.Code() != "store_too_new" || se.Have != 999 || !errors.Is(err, errs.ErrInfra) {
			t.Errorf("open of a newer schema (%+v) = %v, want store_too_new naming 999", o, err)
		}
	}
}

// A database that does not answer is an unavailable backend, with its address and without
// the password; a URL that does not parse is a usage error. Neither needs a PostgreSQL.
func TestOpenErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = postgres.Open(ctx, "postgres://hm:s3cret@"+addr+"/hm?connect_timeout=5", postgres.Options{})
	var ue *errs.UnavailableError
	if !errors.As(err, &ue) || ue.Backend != "postgres" || !errors.Is(err, errs.ErrUnavailable) || !strings.Contains(ue.Address, addr) {
		t.Errorf("open of a closed port = %v, want a postgres UnavailableError naming %s", err, addr)
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error quotes the password: %v", err)
	}
	_, err = postgres.Open(ctx, "postgres://hm:s3cret@[::1/hm", postgres.Options{})
	if !errors.Is(err, errs.ErrUsage) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("open of a malformed URL = %v, want a usage error without the password", err)
	}
}
