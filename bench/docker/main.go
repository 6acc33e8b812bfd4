// Command docker measures the Docker backend's per-step overhead for a trivial step (`true`)
// including its commit, against what Docker itself costs for the same work, in the same run
// and interleaved round by round so that daemon drift hits every variant alike:
//
//   - baseline: `docker run --rm IMG true` + `docker commit`, replayed through the same Go
//     client the backend uses (the API calls the docker CLI makes: create with AutoRemove,
//     attach, wait for "removed", start; then a commit of an exited container, timed alone).
//   - hm step: the backend's Create, Inject (a one-file workspace), Run, Commit, Destroy.
//   - hm step without Inject, to show what the workspace copy costs.
//   - exec lifecycle: the alternative hm did not pick (idle container, copy in, exec the
//     command, commit, remove), for comparison.
//   - with -cli: the baseline through the docker CLI as processes (adds CLI start-up).
//
// It prints markdown table rows for BENCHMARKS.md.
//
//	scripts/test-image.sh && go run ./bench/docker [-n 30] [-image hm-test-busybox:latest] [-cli]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/hmci/hm/bench/internal/stats"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/docker"
)

func main() {
	n := flag.Int("n", 30, "measured rounds (each runs every variant once)")
	warm := flag.Int("warmup", 3, "unmeasured rounds first")
	ref := flag.String("image", "hm-test-busybox:latest", "image to run (scripts/test-image.sh builds the default)")
	withCLI := flag.Bool("cli", false, "also time the baseline through the docker CLI")
	flag.Parse()
	if err := run(*n, *warm, *ref, *withCLI); err != nil {
		errs.Print(os.Stderr, err)
		os.Exit(errs.ExitCode(err))
	}
}

type variant struct {
	name string
	fn   func(ctx context.Context) (time.Duration, error)
	d    []time.Duration
}

func run(n, warm int, ref string, withCLI bool) error {
	ctx := context.Background()
	b, err := docker.New(ctx, docker.Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	img, err := b.ResolveImage(ctx, ref)
	if err != nil {
		return err
	}
	ws, err := tinyWorkspace(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(ws.Root)
	cli := b.Client()
	ph := phases{}

	baseline := &variant{name: "baseline: run --rm + commit (API)", fn: func(ctx context.Context) (time.Duration, error) {
		return baselineAPI(ctx, cli, img)
	}}
	vs := []*variant{
		baseline,
		{name: "hm docker step (Create+Inject+Run+Commit+Destroy)", fn: func(ctx context.Context) (time.Duration, error) {
			return hmStep(ctx, b, img, ws, ph)
		}},
		{name: "hm docker step without Inject", fn: func(ctx context.Context) (time.Duration, error) {
			return hmStep(ctx, b, img, nil, nil)
		}},
		{name: "alternative: idle container + exec (+copy, commit)", fn: func(ctx context.Context) (time.Duration, error) {
			return execLifecycle(ctx, cli, img, ws)
		}},
	}
	if withCLI {
		vs = append(vs, &variant{name: "baseline: docker run --rm + docker commit (CLI)", fn: func(ctx context.Context) (time.Duration, error) {
			return baselineCLI(ctx, img)
		}})
	}
	for round := range warm + n {
		for _, v := range vs {
			d, err := v.fn(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			if round >= warm {
				v.d = append(v.d, d)
			}
		}
	}

	ver, _ := cli.ServerVersion(ctx)
	fmt.Printf("<!-- go run ./bench/docker -n %d: dockerd %s (API %s, %s), %d CPUs, image %s -->\n",
		n, ver.Version, cli.ClientVersion(), ver.KernelVersion, runtime.NumCPU(), ref)
	fmt.Println("| measurement (trivial step `true`, with commit) | median | p90 | vs baseline |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	base := stats.Median(baseline.d)
	for _, v := range vs {
		m := stats.Median(v.d)
		fmt.Printf("| %s | %s | %s | %.2fx |\n", v.name, ms(m), ms(stats.Pct(v.d, 0.9)), float64(m)/float64(base))
	}
	for _, name := range []string{"Create", "Inject", "Run", "Commit", "Destroy"} {
		d := ph[name][warm:]
		fmt.Printf("| · hm step phase: %s | %s | %s | |\n", name, ms(stats.Median(d)), ms(stats.Pct(d, 0.9)))
	}
	return nil
}

// tinyWorkspace is a one-file source tree, the smallest realistic inject.
func tinyWorkspace(ctx context.Context) (*source.Tree, error) {
	dir, err := os.MkdirTemp("", "hm-bench-ws-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(dir+"/README", []byte("hello\n"), 0o644); err != nil {
		return nil, err
	}
	return source.Pack(ctx, dir, source.Options{})
}

var owner = vm.Owner{RunID: "bench", StepKey: "trivial", PID: os.Getpid()}

// hmStep is one step through the backend, as the scheduler drives it. The snapshot's removal
// is not timed: it is not part of a step (ephemeral ones go at the end of the build).
func hmStep(ctx context.Context, b *docker.Backend, img string, ws *source.Tree, ph phases) (time.Duration, error) {
	start := time.Now()
	lap := start
	mark := func(name string) {
		now := time.Now()
		if ph != nil {
			ph[name] = append(ph[name], now.Sub(lap))
		}
		lap = now
	}
	m, err := b.Create(ctx, vm.Spec{Image: img, Cmd: "true", Env: vm.BaseEnv, Owner: owner})
	if err != nil {
		return 0, err
	}
	mark("Create")
	if ws != nil {
		if err := m.Inject(ctx, ws); err != nil {
			return 0, err
		}
		mark("Inject")
	}
	code, err := m.Run(ctx, io.Discard, io.Discard)
	if err != nil || code != 0 {
		return 0, fmt.Errorf("run: exit %d, %v", code, err)
	}
	mark("Run")
	snap, err := m.Commit(ctx, true)
	if err != nil {
		return 0, err
	}
	mark("Commit")
	if err := m.Destroy(ctx); err != nil {
		return 0, err
	}
	mark("Destroy")
	d := time.Since(start)
	return d, b.RemoveSnapshot(ctx, snap)
}

// phases collects the duration of each backend call of the hm step.
type phases map[string][]time.Duration

// baselineAPI replays `docker run --rm IMG true` as the CLI does it, then times a commit of an
// exited container (made untimed, the way a `docker run` without --rm would leave it).
func baselineAPI(ctx context.Context, cli *client.Client, img string) (time.Duration, error) {
	start := time.Now()
	cfg := &container.Config{Image: img, Cmd: []string{"true"}, AttachStdout: true, AttachStderr: true}
	c, err := cli.ContainerCreate(ctx, cfg, &container.HostConfig{AutoRemove: true}, nil, nil, "")
	if err != nil {
		return 0, err
	}
	hj, err := cli.ContainerAttach(ctx, c.ID, container.AttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return 0, err
	}
	defer hj.Close()
	waitC, errC := cli.ContainerWait(ctx, c.ID, container.WaitConditionRemoved)
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return 0, err
	}
	if _, err := stdcopy.StdCopy(io.Discard, io.Discard, hj.Reader); err != nil {
		return 0, err
	}
	select {
	case w := <-waitC:
		if w.StatusCode != 0 {
			return 0, fmt.Errorf("exit %d", w.StatusCode)
		}
	case err := <-errC:
		return 0, err
	}
	runTime := time.Since(start)

	// The commit half: an exited container to commit.
	c, err = cli.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"true"}}, nil, nil, nil, "")
	if err != nil {
		return 0, err
	}
	defer cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	waitC, errC = cli.ContainerWait(ctx, c.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return 0, err
	}
	select {
	case <-waitC:
	case err := <-errC:
		return 0, err
	}
	start = time.Now()
	resp, err := cli.ContainerCommit(ctx, c.ID, container.CommitOptions{})
	if err != nil {
		return 0, err
	}
	commitTime := time.Since(start)
	_, err = cli.ImageRemove(ctx, resp.ID, image.RemoveOptions{Force: true})
	return runTime + commitTime, err
}

// baselineCLI is the baseline through the docker CLI: `docker run --rm` timed, then
// `docker commit` of a container left by an untimed `docker run`.
func baselineCLI(ctx context.Context, img string) (time.Duration, error) {
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "docker", "run", "--rm", img, "true").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("docker run: %v: %s", err, out)
	}
	runTime := time.Since(start)
	name := fmt.Sprintf("hm-bench-%d", time.Now().UnixNano())
	if out, err := exec.CommandContext(ctx, "docker", "run", "--name", name, img, "true").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("docker run: %v: %s", err, out)
	}
	defer exec.Command("docker", "rm", "-f", name).Run()
	start = time.Now()
	out, err := exec.CommandContext(ctx, "docker", "commit", name).Output()
	if err != nil {
		return 0, fmt.Errorf("docker commit: %v", err)
	}
	commitTime := time.Since(start)
	id := string(out[:len(out)-1])
	return runTime + commitTime, exec.Command("docker", "rmi", id).Run()
}

// execLifecycle is the alternative lifecycle: an idle container started first, the workspace
// copied in, the command run by exec, then the container stopped, committed and removed.
func execLifecycle(ctx context.Context, cli *client.Client, img string, ws *source.Tree) (time.Duration, error) {
	start := time.Now()
	cfg := &container.Config{Image: img, Entrypoint: []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"},
		WorkingDir: vm.Workdir, User: "0:0"}
	c, err := cli.ContainerCreate(ctx, cfg, &container.HostConfig{LogConfig: container.LogConfig{Type: "none"}}, nil, nil, "")
	if err != nil {
		return 0, err
	}
	defer cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(ws.WriteTar(pw, "workspace/")) }()
	if err := cli.CopyToContainer(ctx, c.ID, "/", pr, container.CopyToContainerOptions{AllowOverwriteDirWithFile: true}); err != nil {
		return 0, err
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return 0, err
	}
	ex, err := cli.ContainerExecCreate(ctx, c.ID, container.ExecOptions{Cmd: []string{"/bin/sh", "-c", "true"},
		Env: vm.BaseEnv, WorkingDir: vm.Workdir, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, err
	}
	hj, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, err
	}
	_, err = stdcopy.StdCopy(io.Discard, io.Discard, hj.Reader)
	hj.Close()
	if err != nil {
		return 0, err
	}
	ins, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil || ins.ExitCode != 0 {
		return 0, fmt.Errorf("exec: exit %d, %v", ins.ExitCode, err)
	}
	// Stop before committing: committing a running container pauses it, and the idle
	// process must not end up in the snapshot's state anyway.
	if err := cli.ContainerKill(ctx, c.ID, "KILL"); err != nil {
		return 0, err
	}
	waitC, errC := cli.ContainerWait(ctx, c.ID, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case err := <-errC:
		return 0, err
	}
	resp, err := cli.ContainerCommit(ctx, c.ID, container.CommitOptions{})
	if err != nil {
		return 0, err
	}
	if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
		return 0, err
	}
	d := time.Since(start)
	_, err = cli.ImageRemove(ctx, resp.ID, image.RemoveOptions{Force: true})
	return d, err
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
