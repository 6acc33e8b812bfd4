package driver

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// TestSecretsEnd: a build whose sealed secrets do not open under the driver's key fails
// secrets_unreadable before any step is released, its row deleted; the manager's reaper
// deletes the secrets of a build that ended without its driver deleting them.
func TestSecretsEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	org, err := st.CreateOrg(ctx, "o", "O")
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.CreatePipeline(ctx, store.Pipeline{OrgID: org.ID, Slug: "ci", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := secret.NewSealer(bytes.Repeat([]byte{1}, 32))
	theirs, _ := secret.NewSealer(bytes.Repeat([]byte{2}, 32))
	build := func(s *secret.Sealer) store.Build {
		id := uuid.NewString()
		sealed, err := s.Seal(id, map[string]string{"TOKEN": "v"})
		if err != nil {
			t.Fatal(err)
		}
		ir := `{"version":"0","steps":[{"type":"command","key":"a","cmd":"true","secrets":["TOKEN"]}]}`
		b, _, err := st.CreateBuild(ctx, store.NewBuild{ID: id, OrgID: org.ID, PipelineID: p.ID, IR: ir,
			Jobs: []store.NewJob{{StepKey: "a"}}, Secrets: sealed, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	b := build(theirs)
	if _, err := Drive(ctx, Config{Store: st, Owner: "d", Poll: 5 * time.Millisecond, Secrets: ours}, b.ID); err == nil {
		t.Fatal("Drive of a build whose secrets do not open: no error")
	}
	got, err := st.GetBuild(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	js, err := st.ListJobs(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.BuildFailed || got.ErrorCode != "secrets_unreadable" || js[0].State != store.JobPending {
		t.Errorf("build %s %s, job %s; want failed secrets_unreadable with the job never released", got.State, got.ErrorCode, js[0].State)
	}
	if _, err := st.GetBuildSecrets(ctx, b.ID); !store.IsNotFound(err) {
		t.Errorf("its secrets: %v, want deleted", err)
	}

	// Ended behind the driver's back (a driver that stopped before deleting them).
	ended := build(ours)
	if _, err := st.TransitionBuild(ctx, ended.ID, []store.BuildState{store.BuildScheduled}, store.BuildFailed,
		store.BuildUpdate{Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	m := &Manager{Driver: Config{Store: st, Owner: "m", Secrets: ours}, Reap: 10 * time.Millisecond}
	go func() { defer close(done); m.Run(mctx) }()
	defer func() { stop(); <-done }()
	for {
		if _, err := st.GetBuildSecrets(ctx, ended.ID); store.IsNotFound(err) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the reaper never deleted the ended build's secrets")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
