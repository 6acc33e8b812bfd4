// Command sandbox benchmarks the sandbox backend and prints markdown table rows, each beside
// a baseline measured in the same run:
//
//   - per-step overhead of a trivial step (`true`) including commit, median, against
//     `unshare -mpui -f true` (the bare cost of the namespaces and a fork/exec): with steps
//     spaced out as in a pipeline, where the backend's spare init is ready, and back to
//     back, where every step waits for hm to be re-executed as its init;
//   - the cost of that re-execution, against fork+exec of /bin/true (which also says how
//     loaded the machine is);
//   - commit time of a step that wrote 100,000 files, against copying the same tree with
//     `cp -a` (what a copying snapshot costs);
//   - what confinement (spec § Isolation) and each network mode cost a trivial step, beside
//     the same step unconfined on the host's network, interleaved round by round.
//
// It needs root. Run it as `go run ./bench/sandbox` (flags: -n, -files, -reps, -image,
// -state).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hmci/hm/bench/internal/stats"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/sandbox"
	"github.com/hmci/hm/internal/vm/sandbox/sandboxinit"
)

func main() {
	sandbox.MaybeInit() // this binary is also the sandbox's init
	n := flag.Int("n", 100, "trivial steps (and baseline runs) to take the median of")
	files := flag.Int("files", 100_000, "files the commit benchmark's step writes")
	reps := flag.Int("reps", 3, "repetitions of the commit benchmark")
	image := flag.String("image", imagestore.HostID, "image of the steps (host, or a name in -state)")
	stateFlag := flag.String("state", "", "state dir (default: a fresh one under /var/tmp, removed at exit)")
	flag.Parse()
	if err := run(*n, *files, *reps, *image, *stateFlag); err != nil {
		fmt.Fprintln(os.Stderr, "bench/sandbox:", err)
		os.Exit(1)
	}
}

func run(n, files, reps int, image, state string) error {
	ctx := context.Background()
	if state == "" {
		dir, err := os.MkdirTemp("/var/tmp", "hm-bench-sandbox-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		state = dir
	}
	b, err := sandbox.New(state, imagestore.Open(state), sandbox.Options{NoPull: true})
	if err != nil {
		return err
	}
	defer b.Close()
	if err := b.Reconcile(ctx); err != nil {
		return err
	}
	img, err := b.ResolveImage(ctx, image)
	if err != nil {
		return err
	}
	spec := func(cmd string) vm.Spec {
		return vm.Spec{Image: img, Cmd: cmd, Env: vm.BaseEnv, Owner: vm.Owner{RunID: "bench", PID: os.Getpid()}}
	}

	// Warm up the page cache and the kernel's overlay module.
	for range 3 {
		if _, _, err := step(ctx, b, spec("true")); err != nil {
			return err
		}
	}
	// Spaced out, as steps are in a pipeline (workspace injection, events, the scheduler),
	// each step finds the spare init ready: this is the per-step overhead a pipeline sees.
	spaced, spacedParts, err := steps(ctx, b, spec("true"), n, spacing)
	if err != nil {
		return err
	}
	// Back to back, trivial steps outrun the spare: each pays for re-executing hm.
	packed, _, err := steps(ctx, b, spec("true"), n, 0)
	if err != nil {
		return err
	}
	var base []time.Duration
	for range n {
		start := time.Now()
		if out, err := exec.Command("unshare", "-mpui", "-f", "true").CombinedOutput(); err != nil {
			return fmt.Errorf("baseline unshare: %v: %s", err, out)
		}
		base = append(base, time.Since(start))
	}

	// What re-executing costs, and how loaded the machine is: fork+exec of /bin/true, and
	// this binary started as a sandbox init that finds no config and exits at once.
	trueT, err := timeCmd(n, exec.Command("/bin/true"))
	if err != nil {
		return err
	}
	selfT, err := timeCmd(n, initCmd())
	if err != nil {
		return err
	}

	// Before the commit benchmark, whose deletions of 100,000-file trees run on in the
	// background and would load the machine under these steps.
	conf, err := confinementBench(ctx, state, img, n)
	if err != nil {
		return err
	}
	commitT, copyT, err := commitBench(ctx, b, spec, state, files, reps)
	if err != nil {
		return err
	}

	fmt.Println("| measurement | sandbox | baseline | baseline value | sandbox / baseline | target |")
	fmt.Println("|---|---|---|---|---|---|")
	row := func(what string, v time.Duration, baseWhat string, bv time.Duration, target string) {
		fmt.Printf("| %s | %s | %s | %s | %.2f× | %s |\n", what, ms(v), baseWhat, ms(bv), float64(v)/float64(bv), target)
	}
	row(fmt.Sprintf("trivial step `true` incl. commit, image %s, steps %v apart (spare init ready), median of %d", image, spacing, n),
		stats.Median(spaced), "`unshare -mpui -f true`", stats.Median(base), "≤ 5 ms")
	fmt.Printf("| … of which Create / Run / Commit / Destroy | %s / %s / %s / %s | | | | |\n",
		ms(stats.Median(spacedParts[0])), ms(stats.Median(spacedParts[1])), ms(stats.Median(spacedParts[2])), ms(stats.Median(spacedParts[3])))
	row(fmt.Sprintf("trivial step `true` incl. commit, back to back (re-exec of hm per step), median of %d", n),
		stats.Median(packed), "`unshare -mpui -f true`", stats.Median(base), "")
	row(fmt.Sprintf("re-exec of this binary as a sandbox init, exiting at once, median of %d", n), selfT,
		"fork+exec `/bin/true`", trueT, "")
	row(fmt.Sprintf("commit of a step that wrote %s files, median of %d", thousands(files), reps), commitT,
		"`cp -a` of the same tree", copyT, "≤ 5 ms")
	fmt.Println()
	fmt.Println("| trivial step `true` incl. commit, median of", n, "| spaced (spare ready) | back to back | spaced − unconfined | `unshare -mpui -f true` |")
	fmt.Println("|---|---|---|---|---|")
	for _, c := range conf {
		fmt.Printf("| %s | %s | %s | %+.2f ms | %s |\n", c.name, ms(c.spaced), ms(c.packed),
			float64(c.spaced-conf[0].spaced)/1e6, ms(stats.Median(base)))
	}
	return nil
}

// confined is one configuration of the confinement benchmark.
type confined struct {
	name           string
	spaced, packed time.Duration
}

// confinementBench measures a trivial step without confinement (as the sandbox was before
// spec § Isolation) and with it, on each network, interleaved round by round so that the
// machine's load falls on all alike.
func confinementBench(ctx context.Context, state, img string, n int) ([]confined, error) {
	configs := []struct {
		name string
		opts sandbox.Options
	}{
		{"unconfined, host network", sandbox.Options{NoPull: true, Unconfined: true, Network: sandbox.NetworkHost}},
		{"confined, host network", sandbox.Options{NoPull: true, Network: sandbox.NetworkHost}},
		{"confined, --network none", sandbox.Options{NoPull: true, Network: sandbox.NetworkNone}},
		{"confined, private network (default)", sandbox.Options{NoPull: true}},
	}
	backends := make([]*sandbox.Backend, len(configs))
	for i, c := range configs {
		b, err := sandbox.New(state, imagestore.Open(state), c.opts)
		if err != nil {
			return nil, err
		}
		defer b.Close()
		backends[i] = b
	}
	spec := vm.Spec{Image: img, Cmd: "true", Env: vm.BaseEnv, Owner: vm.Owner{RunID: "bench", PID: os.Getpid()}}
	spaced := make([][]time.Duration, len(configs))
	packed := make([][]time.Duration, len(configs))
	const round = 10
	for done := 0; done < n; done += round {
		for i, b := range backends {
			s, _, err := steps(ctx, b, spec, round, spacing)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", configs[i].name, err)
			}
			p, _, err := steps(ctx, b, spec, round, 0)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", configs[i].name, err)
			}
			spaced[i], packed[i] = append(spaced[i], s...), append(packed[i], p...)
		}
	}
	out := make([]confined, len(configs))
	for i, c := range configs {
		out[i] = confined{name: c.name, spaced: stats.Median(spaced[i]), packed: stats.Median(packed[i])}
	}
	return out, nil
}

// spacing separates the spaced-out steps: more than re-executing hm takes, even on a
// loaded machine.
const spacing = 100 * time.Millisecond

// initCmd starts this binary as a sandbox init with an empty config pipe: it exits with
// status 125 as soon as it runs.
func initCmd() *exec.Cmd {
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{sandboxinit.Arg0}
	return cmd
}

// timeCmd runs a copy of cmd n times and returns the median wall time. A sandbox init
// without config exiting 125 counts as success.
func timeCmd(n int, cmd *exec.Cmd) (time.Duration, error) {
	var d []time.Duration
	for range n {
		c := exec.Command(cmd.Path, cmd.Args[1:]...)
		c.Args, c.Env = cmd.Args, cmd.Env
		start := time.Now()
		out, err := c.CombinedOutput()
		d = append(d, time.Since(start))
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == sandboxinit.ExitSetup) {
			return 0, fmt.Errorf("%s: %v: %s", cmd.Path, err, out)
		}
	}
	return stats.Median(d), nil
}

// steps runs n trivial steps, pause apart, and returns their total times and the times of
// their phases.
func steps(ctx context.Context, b *sandbox.Backend, spec vm.Spec, n int, pause time.Duration) ([]time.Duration, [4][]time.Duration, error) {
	var total []time.Duration
	var parts [4][]time.Duration
	for range n {
		time.Sleep(pause)
		t, p, err := step(ctx, b, spec)
		if err != nil {
			return nil, parts, err
		}
		total = append(total, t)
		for i := range p {
			parts[i] = append(parts[i], p[i])
		}
	}
	return total, parts, nil
}

// step runs one trivial step through the whole lifecycle and returns its total time and
// the time of each phase (create, run, commit, destroy). Removing the snapshot afterwards
// is not timed: it is not part of running a step.
func step(ctx context.Context, b *sandbox.Backend, spec vm.Spec) (time.Duration, [4]time.Duration, error) {
	var parts [4]time.Duration
	t0 := time.Now()
	m, err := b.Create(ctx, spec)
	if err != nil {
		return 0, parts, err
	}
	t1 := time.Now()
	code, err := m.Run(ctx, io.Discard, io.Discard)
	if err == nil && code != 0 {
		err = fmt.Errorf("%q exited %d", spec.Cmd, code)
	}
	if err != nil {
		m.Destroy(ctx)
		return 0, parts, err
	}
	t2 := time.Now()
	id, err := m.Commit(ctx, true)
	if err != nil {
		m.Destroy(ctx)
		return 0, parts, err
	}
	t3 := time.Now()
	if err := m.Destroy(ctx); err != nil {
		return 0, parts, err
	}
	t4 := time.Now()
	parts = [4]time.Duration{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3)}
	return t4.Sub(t0), parts, b.RemoveSnapshot(ctx, id)
}

// commitBench times Commit of a step that wrote files files, and `cp -a` of an identical
// tree made on the host.
func commitBench(ctx context.Context, b *sandbox.Backend, spec func(string) vm.Spec, state string, files, reps int) (time.Duration, time.Duration, error) {
	write := "mkdir /data && cd /data && seq 1 " + strconv.Itoa(files) + " | xargs touch"
	var commits, copies []time.Duration
	for range reps {
		m, err := b.Create(ctx, spec(write))
		if err != nil {
			return 0, 0, err
		}
		code, err := m.Run(ctx, io.Discard, os.Stderr)
		if err == nil && code != 0 {
			err = fmt.Errorf("writing %d files exited %d", files, code)
		}
		if err != nil {
			m.Destroy(ctx)
			return 0, 0, err
		}
		start := time.Now()
		id, err := m.Commit(ctx, false)
		commits = append(commits, time.Since(start))
		m.Destroy(ctx)
		if err != nil {
			return 0, 0, err
		}
		if err := b.RemoveSnapshot(ctx, id); err != nil {
			return 0, 0, err
		}

		src := filepath.Join(state, "bench-src")
		if err := os.MkdirAll(filepath.Join(src, "data"), 0o755); err != nil {
			return 0, 0, err
		}
		cmd := exec.Command("sh", "-c", "cd data && seq 1 "+strconv.Itoa(files)+" | xargs touch")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("baseline tree: %v: %s", err, out)
		}
		dst := filepath.Join(state, "bench-copy")
		start = time.Now()
		if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
			return 0, 0, fmt.Errorf("baseline cp -a: %v: %s", err, out)
		}
		copies = append(copies, time.Since(start))
		os.RemoveAll(src)
		os.RemoveAll(dst)
	}
	return stats.Median(commits), stats.Median(copies), nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
