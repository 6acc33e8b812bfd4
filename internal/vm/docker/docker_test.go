package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/vmtest"
)

// testImage is built by scripts/test-image.sh.
const testImage = "hm-test-busybox:latest"

// requireEnv turns the skips below into failures, for CI, where dockerd is started on
// purpose and a skip would hide a broken setup.
const requireEnv = "HM_TEST_REQUIRE_DOCKER"

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv(requireEnv) != "" {
		t.Fatalf(format+" ("+requireEnv+" is set)", args...)
	}
	t.Skipf(format, args...)
}

// newBackend connects to the daemon, skipping the test when there is none or when the test
// image is missing.
func newBackend(t *testing.T) *Backend {
	t.Helper()
	return newBackendOpts(t, Options{})
}

// newBackendOpts is newBackend with opts (a state dir of its own).
func newBackendOpts(t *testing.T, opts Options) *Backend {
	t.Helper()
	opts.StateDir = t.TempDir()
	b, err := New(t.Context(), opts)
	if errors.Is(err, errs.ErrUnavailable) {
		skipOrFail(t, "needs a Docker daemon: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if _, err := b.cli.ImageInspect(t.Context(), testImage); cerrdefs.IsNotFound(err) {
		skipOrFail(t, "needs the image %s: run scripts/test-image.sh", testImage)
	} else if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	vmtest.Run(t, func(t *testing.T) vmtest.Fixture {
		b := newBackend(t)
		return vmtest.Fixture{
			Backend:    b,
			Image:      testImage,
			IsolatedFS: true,
			// The network holders kept for the run's next machines go with the backend.
			Leftovers: func() []string { b.closeHolders(); return containersOf(t, b, proc.Self()) },
		}
	})
}

// containersOf lists the containers labelled as owned by o.
func containersOf(t *testing.T, b *Backend, o proc.Owner) []string {
	cs, err := b.cli.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelOwner+"="+o.String()))})
	if err != nil {
		return []string{fmt.Sprintf("listing containers: %v", err)}
	}
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("container %.12s (%s, step %q)", c.ID, c.State, c.Labels[LabelStep]))
	}
	return out
}

func owner(t *testing.T) vm.Owner {
	return vm.Owner{RunID: "docker-test", StepKey: t.Name(), PID: os.Getpid()}
}

func rootSpec(t *testing.T, img, cmd string, env ...string) vm.Spec {
	return vm.Spec{Image: img, Cmd: cmd, Env: append(slices.Clone(vm.BaseEnv), env...), Owner: owner(t)}
}

func childSpec(t *testing.T, parent, cmd string, env ...string) vm.Spec {
	s := rootSpec(t, "", cmd, env...)
	s.Parent = parent
	return s
}

// step creates a machine for spec, runs it and returns it with its stdout; it fails the test
// unless the command exits 0. The machine is destroyed at cleanup.
func step(t *testing.T, b *Backend, spec vm.Spec) (vm.Machine, string) {
	t.Helper()
	m, err := b.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	var out, stderr strings.Builder
	code, err := m.Run(t.Context(), &out, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("Run %q = %d, %v (stderr %q)", spec.Cmd, code, err, stderr.String())
	}
	return m, out.String()
}

func destroy(t *testing.T, ms ...vm.Machine) {
	t.Helper()
	for _, m := range ms {
		if err := m.Destroy(t.Context()); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	}
}

// commit commits m and removes the snapshot at cleanup.
func commit(t *testing.T, b *Backend, m vm.Machine, ephemeral bool) string {
	t.Helper()
	id, err := m.Commit(t.Context(), ephemeral)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	t.Cleanup(func() {
		if err := b.RemoveSnapshot(context.Background(), id); err != nil {
			t.Errorf("RemoveSnapshot: %v", err)
		}
	})
	return id
}

func resolve(t *testing.T, b *Backend, ref string) string {
	t.Helper()
	id, err := b.ResolveImage(t.Context(), ref)
	if err != nil {
		t.Fatalf("ResolveImage(%s): %v", ref, err)
	}
	return id
}

// cliAdvice are words of hm's CLI that a backend must not put in its errors: a remote agent
// would pass them to a user who has no such flags (internal/cli writes the fix line).
var cliAdvice = []string{"--backend", "--map-image", "hm image"}

func checkNoAdvice(t *testing.T, err error) {
	t.Helper()
	for _, w := range cliAdvice {
		if strings.Contains(err.Error(), w) {
			t.Errorf("error %q gives CLI advice (%q)", err, w)
		}
	}
	var e *errs.Error
	if errors.As(err, &e) && e.Fix != "" {
		t.Errorf("error carries a fix line %q; the CLI writes it", e.Fix)
	}
}

func TestNewUnavailable(t *testing.T) {
	const addr = "unix:///nonexistent/hm-test/docker.sock"
	_, err := New(t.Context(), Options{Host: addr})
	var e *errs.UnavailableError
	if !errors.As(err, &e) || !errors.Is(err, errs.ErrUnavailable) {
		t.Fatalf("New with no daemon = %v, want an *errs.UnavailableError of class ErrUnavailable", err)
	}
	if e.Backend != "docker" || e.Address != addr || e.Err == nil || !strings.Contains(e.Msg, "/nonexistent/hm-test/docker.sock") {
		t.Errorf("error = %+v; want backend docker, address %s and the cause", e, addr)
	}
	checkNoAdvice(t, err)
	if got := errs.ExitCode(err); got != errs.ExitUnavailable {
		t.Errorf("exit code %d, want %d", got, errs.ExitUnavailable)
	}
}

func TestImageNotFound(t *testing.T) {
	b := newBackend(t)
	const ref = "hm-test-no-such-image:v0"
	_, err := b.ResolveImage(t.Context(), ref)
	var e *errs.ImageError
	if !errors.As(err, &e) || !errors.Is(err, errs.ErrImageNotFound) {
		t.Fatalf("ResolveImage(%s) = %v, want an *errs.ImageError of class ErrImageNotFound", ref, err)
	}
	if e.Ref != ref || e.Backend != "docker" || e.Where != errs.InDocker || e.Err == nil || !strings.Contains(e.Msg, ref) {
		t.Errorf("error = %+v; want ref %s, backend docker, looked for in the daemon, with the pull's cause", e, ref)
	}
	checkNoAdvice(t, err)
	if got := errs.ExitCode(err); got != errs.ExitUnavailable {
		t.Errorf("exit code %d, want %d", got, errs.ExitUnavailable)
	}
}

func TestResolveImageID(t *testing.T) {
	b := newBackend(t)
	id := resolve(t, b, testImage)
	ins, err := b.cli.ImageInspect(t.Context(), testImage)
	if err != nil {
		t.Fatal(err)
	}
	if id != ins.ID || !strings.HasPrefix(id, "sha256:") {
		t.Errorf("ResolveImage = %q, want the image id %q", id, ins.ID)
	}
	if again := resolve(t, b, id); again != id {
		t.Errorf("ResolveImage(id) = %q, want %q", again, id)
	}
}

func TestCommitChildSeesOpt(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	root, _ := step(t, b, rootSpec(t, img, "mkdir -p /opt/tool && echo installed > /opt/tool/v"))
	snap := commit(t, b, root, false)
	if !strings.HasPrefix(snap, "sha256:") {
		t.Errorf("snapshot id %q is not an image id", snap)
	}
	_, out := step(t, b, childSpec(t, snap, "cat /opt/tool/v"))
	if out != "installed\n" {
		t.Errorf("child stdout %q, want the root's /opt file", out)
	}
	ins, err := b.cli.ImageInspect(t.Context(), snap)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{LabelRun: "docker-test", LabelStep: t.Name(), LabelOwner: proc.Self().String(),
		LabelEphemeral: "false", LabelHost: b.host}
	got := map[string]string{}
	for k := range want {
		got[k] = ins.Config.Labels[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("snapshot labels (-want +got):\n%s", diff)
	}
}

// envImage makes an image from the test image with IMGVAR=img in its config.
func envImage(t *testing.T, b *Backend) string {
	t.Helper()
	ctx := t.Context()
	c, err := b.cli.ContainerCreate(ctx, &container.Config{Image: testImage, Cmd: []string{"true"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
	resp, err := b.cli.ContainerCommit(ctx, c.ID, container.CommitOptions{Changes: []string{"ENV IMGVAR=img"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.cli.ImageRemove(context.Background(), resp.ID, image.RemoveOptions{Force: true, PruneChildren: true})
	})
	return resolve(t, b, resp.ID)
}

// TestSnapshotEnv: a step's variables reach neither the snapshot's config nor its children;
// the root image's own variables do.
func TestSnapshotEnv(t *testing.T) {
	b := newBackend(t)
	img := envImage(t, b)
	show := `echo "${IMGVAR-unset} ${SECRET-unset} ${ONLYCHILD-unset} $HOME"`
	root, out := step(t, b, rootSpec(t, img, show, "SECRET=s3cret-value"))
	if out != "img s3cret-value unset /root\n" {
		t.Errorf("root stdout %q", out)
	}
	snap := commit(t, b, root, true)
	ins, err := b.cli.ImageInspect(t.Context(), snap)
	if err != nil {
		t.Fatal(err)
	}
	base, err := b.cli.ImageInspect(t.Context(), img)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(base.Config.Env, ins.Config.Env); diff != "" {
		t.Errorf("snapshot Config.Env is not the image's (-image +snapshot):\n%s", diff)
	}
	// The daemon also stores the container's config beside the image's (ContainerConfig on
	// older daemons): nothing of the step's environment may be in any of it.
	raw, err := json.Marshal(ins)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "s3cret") {
		t.Errorf("the snapshot's inspect holds the step's value: %s", raw)
	}
	_, out = step(t, b, childSpec(t, snap, show, "ONLYCHILD=c"))
	if out != "img unset c /root\n" {
		t.Errorf("child stdout %q, want %q", out, "img unset c /root\n")
	}
	// The child commits over the parent's bare names; its grandchild still sees its own env.
	child, _ := step(t, b, childSpec(t, snap, "true", "SECRET=other"))
	grand := commit(t, b, child, true)
	_, out = step(t, b, childSpec(t, grand, show, "IMGVAR=override"))
	if out != "override unset unset /root\n" {
		t.Errorf("grandchild stdout %q", out)
	}
}

// TestRemoveParentSnapshot: removing a snapshot that a child snapshot builds on succeeds at
// once, the child keeps working, and the parent's image goes with the child.
func TestRemoveParentSnapshot(t *testing.T) {
	b := newBackend(t)
	ctx := t.Context()
	img := resolve(t, b, testImage)
	root, _ := step(t, b, rootSpec(t, img, "echo p > /opt/p"))
	parent, err := root.Commit(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.RemoveSnapshot(context.Background(), parent) })
	mid, _ := step(t, b, childSpec(t, parent, "echo c > /opt/c"))
	child := commit(t, b, mid, false)
	// Containers keep their images; the daemon prunes only images nothing uses.
	destroy(t, root, mid)

	if err := b.RemoveSnapshot(ctx, parent); err != nil {
		t.Fatalf("RemoveSnapshot(parent): %v", err)
	}
	if ok, err := b.SnapshotExists(ctx, parent); ok || err != nil {
		t.Errorf("SnapshotExists(removed parent) = %v, %v", ok, err)
	}
	if m, err := b.Create(ctx, childSpec(t, parent, "true")); err == nil {
		m.Destroy(context.Background())
		t.Error("Create from the removed parent succeeded")
	}
	grand, out := step(t, b, childSpec(t, child, "cat /opt/p /opt/c"))
	if out != "p\nc\n" {
		t.Errorf("grandchild stdout %q", out)
	}
	destroy(t, grand)
	if err := b.RemoveSnapshot(ctx, child); err != nil {
		t.Fatalf("RemoveSnapshot(child): %v", err)
	}
	for _, id := range []string{child, parent} {
		if _, err := b.cli.ImageInspect(ctx, id); !cerrdefs.IsNotFound(err) {
			t.Errorf("image %s still in the daemon after both snapshots were removed (%v)", id, err)
		}
	}
}

func TestListSnapshots(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	m1, _ := step(t, b, rootSpec(t, img, "true"))
	kept := commit(t, b, m1, false)
	m2, _ := step(t, b, rootSpec(t, img, "true"))
	eph := commit(t, b, m2, true)
	m3, _ := step(t, b, rootSpec(t, img, "true"))
	gone := commit(t, b, m3, false)
	if err := b.RemoveSnapshot(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	ids, err := b.ListSnapshots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, kept) || slices.Contains(ids, eph) || slices.Contains(ids, gone) || slices.Contains(ids, img) {
		t.Errorf("ListSnapshots = %v; want it to hold kept %s but not ephemeral %s, removed %s or image %s",
			ids, kept, eph, gone, img)
	}
}

// TestReconcileDeadOwner fakes machines and snapshots of a dead hm process (same PID, other
// start time: a reused PID) and of another host, and checks what Reconcile removes.
func TestReconcileDeadOwner(t *testing.T) {
	live := newBackend(t)
	ctx := t.Context()
	img := resolve(t, live, testImage)
	me := proc.Self()
	deadOwner := proc.Owner{PID: me.PID, Start: me.Start + 1}
	dead := fakeOwner(t, live, live.host, live.state, deadOwner)
	remote := fakeOwner(t, live, live.host+"-elsewhere", live.state, deadOwner)
	t.Cleanup(func() {
		for _, o := range []proc.Owner{deadOwner} {
			for _, c := range containersOf(t, live, o) {
				id := strings.Fields(c)[1]
				live.cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
			}
		}
	})

	type thing struct {
		name      string
		container vm.Machine // non-nil: a container
		snapshot  string     // else a snapshot
		wantGone  bool
	}
	var things []thing
	for _, tc := range []struct {
		name     string
		b        *Backend
		deadHere bool
	}{{"dead", dead, true}, {"live", live, false}, {"remote", remote, false}} {
		created, err := tc.b.Create(ctx, rootSpec(t, img, "sleep 60"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { created.Destroy(context.Background()) })
		running, err := tc.b.Create(ctx, rootSpec(t, img, "echo ready; sleep 60"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { running.Destroy(context.Background()) })
		runDone := make(chan error, 1)
		ready := make(chan struct{})
		go func() {
			_, err := running.Run(ctx, &markerWriter{marker: "ready", seen: ready}, nil)
			runDone <- err
		}()
		select {
		case <-ready:
		case err := <-runDone:
			t.Fatalf("%s: Run returned early: %v", tc.name, err)
		}
		t.Cleanup(func() { running.Destroy(context.Background()); <-runDone })
		var snaps []string
		for _, ephemeral := range []bool{true, false} {
			m, _ := step(t, tc.b, rootSpec(t, img, "true"))
			snaps = append(snaps, commit(t, tc.b, m, ephemeral))
		}
		things = append(things,
			thing{name: tc.name + " created container", container: created, wantGone: tc.deadHere},
			thing{name: tc.name + " running container", container: running, wantGone: tc.deadHere},
			thing{name: tc.name + " ephemeral snapshot", snapshot: snaps[0], wantGone: tc.deadHere},
			thing{name: tc.name + " kept snapshot", snapshot: snaps[1]},
		)
	}

	if err := live.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	for _, th := range things {
		var exists bool
		if th.container != nil {
			_, err := live.cli.ContainerInspect(ctx, th.container.(*machine).id)
			if err != nil && !cerrdefs.IsNotFound(err) {
				t.Fatal(err)
			}
			exists = err == nil
		} else {
			ok, err := live.SnapshotExists(ctx, th.snapshot)
			if err != nil {
				t.Fatal(err)
			}
			exists = ok
		}
		if exists == th.wantGone {
			t.Errorf("%s: exists after Reconcile = %v, want %v", th.name, exists, !th.wantGone)
		}
	}
}

// fakeOwner is a backend sharing b's client that labels what it makes with another owner,
// host and state directory.
func fakeOwner(t *testing.T, b *Backend, host, state string, o proc.Owner) *Backend {
	fb := &Backend{cli: b.cli, host: host, state: state, envs: map[string][]string{},
		ownerOf: func(int) (proc.Owner, error) { return o, nil }}
	t.Cleanup(fb.closeHolders) // before b's Close: the client is b's
	return fb
}

func TestPruneSnapshots(t *testing.T) {
	live := newBackend(t)
	ctx := t.Context()
	img := resolve(t, live, testImage)
	me := proc.Self()
	deadOwner := proc.Owner{PID: me.PID, Start: me.Start + 1}
	dead := fakeOwner(t, live, live.host, live.state, deadOwner)
	otherState := fakeOwner(t, live, live.host, live.state+"-other", deadOwner)

	snap := func(b *Backend, ephemeral bool) string {
		m, _ := step(t, b, rootSpec(t, img, "true"))
		return commit(t, b, m, ephemeral)
	}
	referenced := snap(dead, false)
	unreferenced := snap(dead, false)
	ephemeral := snap(dead, true)
	liveOwner := snap(live, false)
	otherDir := snap(otherState, false)

	removed, err := live.PruneSnapshots(ctx, func(id string) bool { return id == referenced })
	if err != nil {
		t.Fatalf("PruneSnapshots: %v", err)
	}
	if diff := cmp.Diff([]string{unreferenced}, removed); diff != "" {
		t.Errorf("PruneSnapshots removed (-want +got):\n%s", diff)
	}
	for id, want := range map[string]bool{referenced: true, unreferenced: false, ephemeral: true, liveOwner: true, otherDir: true} {
		if ok, err := live.SnapshotExists(ctx, id); err != nil || ok != want {
			t.Errorf("SnapshotExists(%s) = %v, %v; want %v", id, ok, err, want)
		}
	}
}

// TestReconcileRemovesUntagged: a snapshot removed while a container runs from it loses its
// tag at once but stays in the daemon; a later Reconcile deletes it.
func TestReconcileRemovesUntagged(t *testing.T) {
	live := newBackend(t)
	ctx := t.Context()
	img := resolve(t, live, testImage)
	me := proc.Self()
	dead := fakeOwner(t, live, live.host, live.state, proc.Owner{PID: me.PID, Start: me.Start + 1})
	m, _ := step(t, dead, rootSpec(t, img, "true"))
	snap := commit(t, dead, m, false)

	user, err := live.Create(ctx, childSpec(t, snap, "echo ready; sleep 60"))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	runDone := make(chan error, 1)
	go func() {
		_, err := user.Run(ctx, &markerWriter{marker: "ready", seen: ready}, nil)
		runDone <- err
	}()
	select {
	case <-ready:
	case err := <-runDone:
		t.Fatalf("Run returned early: %v", err)
	}
	if err := live.RemoveSnapshot(ctx, snap); err != nil {
		t.Fatalf("RemoveSnapshot while a container runs from it: %v", err)
	}
	if ok, err := live.SnapshotExists(ctx, snap); ok || err != nil {
		t.Errorf("SnapshotExists after RemoveSnapshot = %v, %v", ok, err)
	}
	if _, err := live.cli.ImageInspect(ctx, snap); err != nil {
		t.Fatalf("image of a running container is gone already (%v); the test cannot check Reconcile", err)
	}
	destroy(t, user)
	<-runDone
	if err := live.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if _, err := live.cli.ImageInspect(ctx, snap); !cerrdefs.IsNotFound(err) {
		t.Errorf("untagged image %s still there after Reconcile (%v)", snap, err)
	}
}

// markerWriter closes seen once marker has been written.
type markerWriter struct {
	marker string
	buf    strings.Builder
	seen   chan struct{}
}

func (w *markerWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.marker) {
		close(w.seen)
		w.seen = nil
	}
	return len(p), nil
}

// TestStepEnvValues: values reach the step exactly (quotes, newlines, $ and backslashes
// uninterpreted), by stdin or, for a name a shell cannot export, by exec; the command's
// stdin is empty either way, and no value reaches the snapshot's inspect.
func TestStepEnvValues(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	const tricky = "it's a \"$HOME\" \\ `x`\nline2 'end"
	for _, tc := range []struct {
		name string
		env  []string
		cmd  string
		want string
	}{
		{"stdin", []string{"V=" + tricky, "V2=first", "V2=second", "e=E", "l=L"}, `printf '%s|%s|' "$V" "$V2"; cat; echo "[$e$l${__hm_env-}]"`, tricky + "|second|[EL]\n"},
		{"exec for a name sh cannot export", []string{"V=" + tricky, "A-B=1"}, `printf '%s|' "$V"; cat; echo`, tricky + "|\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, out := step(t, b, rootSpec(t, img, tc.cmd, tc.env...))
			if out != tc.want {
				t.Errorf("stdout %q, want %q", out, tc.want)
			}
			snap := commit(t, b, m, true)
			ins, err := b.cli.ImageInspect(t.Context(), snap)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(ins)
			if strings.Contains(string(raw), "line2") || strings.Contains(string(raw), "second") {
				t.Errorf("the snapshot's inspect holds a step value: %s", raw)
			}
		})
	}
}
