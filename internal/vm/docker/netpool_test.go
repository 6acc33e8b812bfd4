package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/vm"
)

// nsCmd prints the step's network namespace and whether it has an interface beyond lo.
const nsCmd = `readlink /proc/self/ns/net; test -e /sys/class/net/eth0 && echo eth0 || echo no-eth0`

// runOnce creates a machine for spec, runs it to exit 0, destroys it and returns its stdout.
func runOnce(t *testing.T, b *Backend, spec vm.Spec) string {
	t.Helper()
	m, err := b.Create(t.Context(), spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	var out, stderr strings.Builder
	code, err := m.Run(t.Context(), &out, &stderr)
	if derr := m.Destroy(context.Background()); derr != nil {
		t.Errorf("Destroy: %v", derr)
	}
	if err != nil || code != 0 {
		t.Fatalf("Run %q = %d, %v (stderr %q)", spec.Cmd, code, err, stderr.String())
	}
	return out.String()
}

func inRun(spec vm.Spec, run string) vm.Spec {
	spec.Owner.RunID = run
	return spec
}

// Steps of one run that follow each other share a few network namespaces (their holders),
// with the configured network; a step of another run never gets one of them.
func TestHolderSequentialSteps(t *testing.T) {
	for _, tc := range []struct {
		network string
		iface   string
	}{{"", "eth0"}, {"none", "no-eth0"}} {
		t.Run("network="+tc.network, func(t *testing.T) {
			b := newBackendOpts(t, Options{Network: tc.network})
			img := resolve(t, b, testImage)
			seen := map[string]bool{}
			for range 4 {
				ns, iface, _ := strings.Cut(strings.TrimSpace(runOnce(t, b, inRun(rootSpec(t, img, nsCmd), "run-a"))), "\n")
				if iface != tc.iface {
					t.Errorf("the step sees %s, want %s", iface, tc.iface)
				}
				seen[ns] = true
			}
			// At most the holder the first step took and the spare made beside it.
			if len(seen) > 2 {
				t.Errorf("4 steps one after another ran in %d network namespaces %v, want at most 2", len(seen), seen)
			}
			other := strings.SplitN(runOnce(t, b, inRun(rootSpec(t, img, nsCmd), "run-b")), "\n", 2)[0]
			if seen[other] {
				t.Errorf("a step of another run got namespace %s of run-a's steps", other)
			}
		})
	}
}

// Under --network host there is no namespace to set up, and no holder.
func TestHolderNotForHostNetwork(t *testing.T) {
	b := newBackendOpts(t, Options{Network: "host"})
	img := resolve(t, b, testImage)
	runOnce(t, b, rootSpec(t, img, "true"))
	if left := containersOf(t, b, proc.Self()); len(left) > 0 {
		t.Errorf("containers left with --network host once the step is destroyed: %v", left)
	}
}

// A continuable machine's own namespace serves its chain: no holder is made for it.
func TestHolderNotForContinuable(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	spec := rootSpec(t, img, nsCmd)
	spec.Continuable = true
	m, err := b.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy(context.Background())
	if left := containersOf(t, b, proc.Self()); len(left) != 1 {
		t.Errorf("containers beside a continuable machine's: %v, want its own alone", left)
	}
	var out strings.Builder
	if code, err := m.Run(t.Context(), &out, io.Discard); err != nil || code != 0 || !strings.Contains(out.String(), "\neth0") {
		t.Errorf("Run = %d, %v, %q; want the bridge's eth0", code, err, out.String())
	}
}

// The run's last machine (vm.Spec.Last) gets no holder made for it alone: a one-step run's
// container keeps a namespace of its own. One the run has free already it still joins.
func TestHolderNotForLastMachine(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	last := inRun(rootSpec(t, img, nsCmd), "run-one")
	last.Last = true
	m, err := b.Create(t.Context(), last)
	if err != nil {
		t.Fatal(err)
	}
	if left := containersOf(t, b, proc.Self()); len(left) != 1 {
		t.Errorf("containers beside a one-step run's: %v, want its own alone", left)
	}
	var out strings.Builder
	code, err := m.Run(t.Context(), &out, io.Discard)
	if derr := m.Destroy(context.Background()); derr != nil {
		t.Errorf("Destroy: %v", derr)
	}
	if err != nil || code != 0 || !strings.Contains(out.String(), "\neth0") {
		t.Errorf("Run = %d, %v, %q; want the bridge's eth0", code, err, out.String())
	}

	// A run whose earlier step left a holder free: its last step joins that one, or the spare
	// made beside it, whichever is free first. Both stay (no Drain here) until Close.
	first := strings.SplitN(runOnce(t, b, inRun(rootSpec(t, img, nsCmd), "run-two")), "\n", 2)[0]
	last = inRun(rootSpec(t, img, nsCmd), "run-two")
	last.Last = true
	ns := strings.SplitN(runOnce(t, b, last), "\n", 2)[0]
	holders := holdersOf(t, b, "run-two")
	if !slices.Contains(holders, first) || !slices.Contains(holders, ns) {
		t.Errorf("the first step ran in namespace %s, the last in %s; want both among the run's holders' %v", first, ns, holders)
	}
}

// A run whose steps run one at a time (vm.Spec.Sequential) gets no spare holder at its
// first take: its next step takes the first one back. Any other run gets one.
func TestHolderNoSpareWhenSequential(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	spared := func(run string) bool {
		b.nets.mu.Lock()
		defer b.nets.mu.Unlock()
		rn := b.nets.runs[run]
		return rn != nil && (rn.spared || rn.making > 0)
	}
	for _, seq := range []bool{true, false} {
		run := fmt.Sprintf("run-sequential-%v", seq)
		spec := inRun(rootSpec(t, img, nsCmd), run)
		spec.Sequential = seq
		first := strings.SplitN(runOnce(t, b, spec), "\n", 2)[0]
		if got := spared(run); got == seq {
			t.Errorf("Sequential %v: a spare holder made: %v", seq, got)
		}
		if !seq {
			continue
		}
		if next := strings.SplitN(runOnce(t, b, spec), "\n", 2)[0]; next != first {
			t.Errorf("the next step of a sequential run ran in namespace %s, the first in %s: want the one holder", next, first)
		}
		if h := holdersOf(t, b, run); len(h) != 1 {
			t.Errorf("a sequential run's holders: %v, want one", h)
		}
	}
}

// holdersOf returns the network namespaces (as readlink /proc/self/ns/net prints them) of
// run's running holders, read through their init's PID: the tests run beside the daemon.
func holdersOf(t *testing.T, b *Backend, run string) []string {
	t.Helper()
	cs, err := b.cli.ContainerList(t.Context(), container.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", LabelRun+"="+run))})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs {
		if c.Labels[LabelStep] != "" {
			continue // a step's container
		}
		ins, err := b.cli.ContainerInspect(t.Context(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", ins.State.Pid))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ns)
	}
	return out
}

// Steps running at the same time never share a namespace: the first holds its holder until
// its container has exited.
func TestHolderNotShared(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	long, err := b.Create(ctx, rootSpec(t, img, `readlink /proc/self/ns/net; sleep 60`))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Destroy(context.Background())
	first := &lineSignal{line: make(chan string, 1)}
	done := make(chan error, 1)
	go func() {
		_, err := long.Run(ctx, first, io.Discard)
		done <- err
	}()
	var busy string
	select {
	case busy = <-first.line:
	case err := <-done:
		t.Fatalf("the long step ended early: %v", err)
	case <-time.After(hangGuard):
		t.Fatal("the long step printed nothing")
	}
	for range 2 {
		if ns := strings.SplitN(runOnce(t, b, rootSpec(t, img, nsCmd)), "\n", 2)[0]; ns == busy {
			t.Fatalf("a step ran in namespace %s while another step still ran there", ns)
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("the long step was not stopped")
	}
}

// A step that changed a file the daemon shares with the steps joining its holder
// (/etc/hosts) leaves it to no later step: that holder is removed, and the next steps get
// another namespace and the daemon's own /etc/hosts.
func TestHolderFilesChanged(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	dirty := strings.SplitN(runOnce(t, b, rootSpec(t, img, `echo '10.9.9.9 hm-marker' >> /etc/hosts; readlink /proc/self/ns/net`)), "\n", 2)[0]
	for range 3 {
		out := runOnce(t, b, rootSpec(t, img, `readlink /proc/self/ns/net; grep -c hm-marker /etc/hosts || true`))
		ns, marks, _ := strings.Cut(strings.TrimSpace(out), "\n")
		if ns == dirty || marks != "0" {
			t.Fatalf("a later step ran in %s (the changed one: %s) and found the marker %s times in /etc/hosts", ns, dirty, marks)
		}
	}
}

// Close removes every holder; Drain removes those no machine of the run is yet to take.
func TestHolderRemoval(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		b := newBackend(t)
		img := resolve(t, b, testImage)
		runOnce(t, b, rootSpec(t, img, "true"))
		runOnce(t, b, inRun(rootSpec(t, img, "true"), "run-b"))
		if len(containersOf(t, b, proc.Self())) == 0 {
			t.Fatal("no holder is kept for the runs' next steps")
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if left := containersOf(t, newBackend(t), proc.Self()); len(left) > 0 {
			t.Errorf("left after Close: %v", left)
		}
	})
	t.Run("drain", func(t *testing.T) {
		b := newBackend(t)
		img := resolve(t, b, testImage)
		runOnce(t, b, rootSpec(t, img, "true"))
		prepared, err := b.Prepare(t.Context(), rootSpec(t, img, nsCmd))
		if err != nil {
			t.Fatal(err)
		}
		b.Drain(owner(t).RunID)
		// The prepared machine still gets a holder (one kept for it, or a new one).
		var out strings.Builder
		if code, err := prepared.Run(t.Context(), &out, io.Discard); err != nil || code != 0 || !strings.Contains(out.String(), "eth0") {
			t.Fatalf("prepared machine after Drain: %d, %v, %q", code, err, out.String())
		}
		if err := prepared.Destroy(context.Background()); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(hangGuard)
		for len(containersOf(t, b, proc.Self())) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("still there %v after Drain with no machine left: %v", hangGuard, containersOf(t, b, proc.Self()))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// hangGuard bounds waits on the daemon that must end, so that a hang fails with a message.
const hangGuard = 2 * time.Minute

// lineSignal sends the first line written to it.
type lineSignal struct {
	mu   sync.Mutex
	buf  []byte
	sent bool
	line chan string
}

func (l *lineSignal) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if i := strings.IndexByte(string(l.buf), '\n'); i >= 0 && !l.sent {
		l.sent = true
		l.line <- string(l.buf[:i])
	}
	return len(p), nil
}

// A holder that cannot be made fails the step that waited for it as infrastructure (its retry
// runs), and later containers keep a network of their own.
func TestHolderCannotBeMade(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	parent, _ := step(t, b, inRun(rootSpec(t, img, "true"), "other"))
	snap := commit(t, b, parent, true)
	// The run's root image is gone from the daemon (removed by a user mid-build): its
	// holders cannot be made from it.
	b.nets.mu.Lock()
	b.nets.run(owner(t).RunID).base = "sha256:" + strings.Repeat("0", 64)
	b.nets.mu.Unlock()
	m, err := b.Create(t.Context(), childSpec(t, snap, nsCmd))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Destroy(context.Background())
	if code, err := m.Run(t.Context(), io.Discard, io.Discard); err == nil || !errors.Is(err, errs.ErrInfra) {
		t.Fatalf("Run with no holder to be had = %d, %v; want an infrastructure error", code, err)
	}
	ns, iface, _ := strings.Cut(strings.TrimSpace(runOnce(t, b, childSpec(t, snap, nsCmd))), "\n")
	if iface != "eth0" || ns == "" {
		t.Errorf("the next step saw %q %q; want a network of its own", ns, iface)
	}
}

// A holder removed behind hm's back (docker rm -f) fails at most the step that takes it, as
// infrastructure, and is dropped: a later step gets a holder that exists.
func TestHolderRemovedBehindOurBack(t *testing.T) {
	b := newBackend(t)
	img := resolve(t, b, testImage)
	runOnce(t, b, rootSpec(t, img, "true"))
	cs, err := b.cli.ContainerList(t.Context(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelOwner+"="+proc.Self().String()), filters.Arg("label", LabelStep+"="))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) == 0 {
		t.Fatal("no holder kept after the first step")
	}
	for _, c := range cs {
		if err := b.cli.ContainerRemove(t.Context(), c.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; ; i++ {
		m, err := b.Create(t.Context(), rootSpec(t, img, nsCmd))
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		code, err := m.Run(t.Context(), &out, io.Discard)
		if derr := m.Destroy(context.Background()); derr != nil {
			t.Fatal(derr)
		}
		if err == nil && code == 0 && strings.Contains(out.String(), "\neth0") {
			return
		}
		if err == nil || !errors.Is(err, errs.ErrInfra) {
			t.Fatalf("step %d: %d, %v, %q; want it to run, or an infrastructure error", i, code, err, out.String())
		}
		if i >= len(cs) {
			t.Fatalf("%d steps failed after %d holders were removed: %v", i+1, len(cs), err)
		}
	}
}
