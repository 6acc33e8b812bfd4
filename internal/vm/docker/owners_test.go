package docker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
)

// unrecorded creates a container labelled as a dead owner's the way an hm without owner
// records did: nothing in the state dir names its owner.
func unrecorded(t *testing.T, b *Backend, img string, o proc.Owner) string {
	t.Helper()
	labels := b.labels(owner(t), o, true)
	resp, err := b.cli.ContainerCreate(t.Context(), &container.Config{Image: img, Cmd: []string{"true"}, Labels: labels},
		nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.removeContainer(context.Background(), resp.ID) })
	return resp.ID
}

func containerExists(t *testing.T, b *Backend, id string) bool {
	t.Helper()
	_, err := b.cli.ContainerInspect(t.Context(), id)
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestReconcileByRecords: a start with no dead owner's record and a recent full reconcile
// asks the daemon nothing; a dead owner's record, or a full reconcile older than the grace,
// makes it reconcile in full, and the record goes with what its owner left.
func TestReconcileByRecords(t *testing.T) {
	live := newBackend(t)
	ctx := t.Context()
	img := resolve(t, live, testImage)
	me := proc.Self()
	deadOwner := proc.Owner{PID: me.PID, Start: me.Start + 1}

	if err := live.Reconcile(ctx); err != nil { // no marker yet: full
		t.Fatal(err)
	}
	if _, err := os.Stat(live.markerPath()); err != nil {
		t.Fatalf("no marker after a full reconcile: %v", err)
	}
	old := unrecorded(t, live, img, deadOwner)
	// The next process on the same state dir.
	next, err := New(ctx, Options{StateDir: live.state})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := next.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !containerExists(t, live, old) {
		t.Fatal("Reconcile without a dead owner's record listed containers: the light path was not taken")
	}
	if _, err := next.ListSnapshots(ctx); !errors.Is(err, vm.ErrNotListed) {
		t.Errorf("ListSnapshots right after a light Reconcile = %v, want vm.ErrNotListed", err)
	}
	if removed, err := next.PruneSnapshots(ctx, func(string) bool { return false }); err != nil || len(removed) > 0 {
		t.Errorf("PruneSnapshots after a light Reconcile = %v, %v; want nothing", removed, err)
	}

	// A dead owner's record: the next Reconcile is full and removes its record.
	dead := fakeOwner(t, live, live.host, live.state, deadOwner)
	m, err := dead.Create(ctx, rootSpec(t, img, "true"))
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(live.ownersDir(), deadOwner.String())
	if _, err := os.Stat(rec); err != nil {
		t.Fatalf("Create wrote no owner record: %v", err)
	}
	if err := live.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if containerExists(t, live, m.(*machine).id) || containerExists(t, live, old) {
		t.Error("Reconcile with a dead owner's record left its containers")
	}
	if _, err := os.Stat(rec); !os.IsNotExist(err) {
		t.Errorf("dead owner's record still there after a full reconcile (%v)", err)
	}

	// A full reconcile older than the grace: full again, records or not.
	old = unrecorded(t, live, img, deadOwner)
	past := time.Now().Add(-untaggedGrace - time.Minute)
	if err := os.Chtimes(live.markerPath(), past, past); err != nil {
		t.Fatal(err)
	}
	if err := live.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if containerExists(t, live, old) {
		t.Error("Reconcile after the grace left a dead owner's container")
	}
	if st, err := os.Stat(live.markerPath()); err != nil || time.Since(st.ModTime()) > time.Minute {
		t.Errorf("marker not renewed by the full reconcile: %v, %v", st, err)
	}
}

// TestCloseRemovesRecord: a backend that removed everything it made removes its record at
// Close; one that still holds a container keeps it, so the next start reconciles in full.
func TestCloseRemovesRecord(t *testing.T) {
	for _, leave := range []bool{false, true} {
		b := newBackend(t)
		img := resolve(t, b, testImage)
		m, err := b.Create(t.Context(), rootSpec(t, img, "true"))
		if err != nil {
			t.Fatal(err)
		}
		id := m.(*machine).id
		rec := filepath.Join(b.ownersDir(), proc.Self().String())
		if _, err := os.Stat(rec); err != nil {
			t.Fatalf("no record after Create: %v", err)
		}
		if !leave {
			destroy(t, m)
		} else {
			t.Cleanup(func() { _ = b.cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}) })
		}
		b.closeHolders() // Close's first half: the network holders kept for the run
		b.release()
		_, err = os.Stat(rec)
		if kept := err == nil; kept != leave {
			t.Errorf("container left %v: record kept after release = %v (%v)", leave, kept, err)
		}
	}
}
