package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"

	"github.com/hmci/hm/internal/store/sqlite"
	"github.com/hmci/hm/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Fixture {
		dir := t.TempDir()
		s, err := sqlite.Open(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		p := filepath.Join(dir, sqlite.FileName)
		return storetest.Fixture{Store: s, Files: []string{p, p + "-wal"}}
	})
}

// TestMain lets the test binary be a second claiming process (TestTwoProcessesClaim).
func TestMain(m *testing.M) {
	if path := os.Getenv("HM_STORE_TEST_CLAIMER"); path != "" {
		os.Exit(claimAll(path, os.Getenv("HM_STORE_TEST_AGENT")))
	}
	os.Exit(m.Run())
}

// claimAll claims jobs until there are none and prints their ids, one a line.
func claimAll(path, agent string) int {
	ctx := context.Background()
	s, err := sqlite.OpenFile(ctx, path)
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

// Two processes claiming from one file never get the same job: the claim's one statement
// under BEGIN IMMEDIATE serializes across processes, not only across one pool's connections.
func TestTwoProcessesClaim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // hang guard
	defer cancel()
	dir := t.TempDir()
	s, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, _ := s.CreateOrg(ctx, "acme", "Acme")
	p, _ := s.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	const n = 60
	var nj []store.NewJob
	for i := range n {
		nj = append(nj, store.NewJob{StepKey: fmt.Sprint(i)})
	}
	_, jobs, err := s.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}", Jobs: nj})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if _, err := s.ReleaseJob(ctx, j.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var outs [2]bytes.Buffer
	var cmds [2]*exec.Cmd
	for i := range cmds {
		agent := fmt.Sprintf("agent-%d", i)
		if _, err := s.UpsertAgent(ctx, store.Agent{ID: agent}, time.Now()); err != nil {
			t.Fatal(err)
		}
		cmds[i] = exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmds[i].Env = append(os.Environ(), "HM_STORE_TEST_CLAIMER="+filepath.Join(dir, sqlite.FileName), "HM_STORE_TEST_AGENT="+agent)
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

// Reopening keeps everything and does not migrate again; a newer schema is refused.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOrg(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOrgBySlug(ctx, "acme"); err != nil {
		t.Errorf("after reopen: %v", err)
	}
	s.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := sqlite.Open(ctx, dir); !errors.Is(err, errs.ErrInfra) || !strings.Contains(err.Error(), "999") {
		t.Errorf("open of a newer schema = %v, want an infrastructure error naming version 999", err)
	}
}
