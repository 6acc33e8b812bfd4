package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/execution/local"
	"github.com/hmci/hm/internal/frontend"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/prepare"
	"github.com/hmci/hm/internal/render"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/vm"
)

type runFlags struct {
	dir, file, backend, format, timeout string
	network                             string
	pidsLimit, memory, cpus             string
	mapImage, env, secrets              []string
	parallelism                         int
	keepGoing, noCache, logs, noColor   bool
	verbose                             bool
	branch, message                     string
	server, token, org                  string
	artifacts                           string
}

func newRunCmd(stdio IO) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [PIPELINE]",
		Short: "Run a pipeline",
		Long: `Run a pipeline discovered under <dir>/.hm/ (PIPELINE names it when there are several),
or a rendered IR file with --file. Exit codes: 0 passed, 1 failed, 2 usage, 4 infrastructure
unavailable, 7 pipeline invalid, 124 timed out, 130 canceled.`,
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return runBuild(c, stdio, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.dir, "dir", "d", ".", "source directory")
	fl.StringVar(&f.file, "file", "", "run this IR JSON file (graph or flat form; - for stdin) instead of discovering .hm/")
	fl.StringVar(&f.backend, "backend", "auto", "auto, docker, sandbox, host or remote")
	fl.StringVar(&f.network, "network", "private", "private (a network namespace of the step's own, with outbound access), none (loopback only) or host (the host's network)")
	fl.StringVar(&f.pidsLimit, "pids-limit", "", fmt.Sprintf("max tasks (processes and threads) per step; 0 for none (default %d)", config.DefaultPidsLimit))
	fl.StringVar(&f.memory, "memory", "", "max memory per step, e.g. 512m or 2GiB (default: none)")
	fl.StringVar(&f.cpus, "cpus", "", "max CPUs' worth of time per step, fractional, e.g. 1.5 (default: none)")
	fl.StringArrayVar(&f.mapImage, "map-image", nil, "use image TO wherever the pipeline names FROM (FROM=TO, repeatable)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "extra environment for every step (K=V, repeatable)")
	fl.StringArrayVar(&f.secrets, "secret", nil, "expose a secret as env NAME to the steps that name it: NAME takes the value from the environment, else .env (NAME=VALUE works too, but ps shows it); masked in all output (repeatable)")
	fl.IntVar(&f.parallelism, "parallelism", 0, "max concurrently executing steps (default: CPUs; 0 = 1)")
	fl.BoolVarP(&f.keepGoing, "keep-going", "k", false, "do not cancel independent branches after a failure")
	fl.BoolVar(&f.noCache, "no-cache", false, "run every step; do not register new cache entries")
	fl.StringVar(&f.timeout, "timeout", "", "whole-build limit, e.g. 10m (overrides the pipeline's timeout_seconds)")
	fl.StringVar(&f.format, "format", "human", "human (stderr) or json (NDJSON events on stdout)")
	fl.BoolVar(&f.logs, "logs", false, "plain prefixed log lines even on a terminal")
	fl.BoolVar(&f.noColor, "no-color", false, "no colours")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "more detail (cache-miss explanations, every log line)")
	fl.StringVar(&f.artifacts, "artifacts", "", "where steps' artifacts go, a build's in DIR/BUILD/STEP/ (default: .hm/artifacts of the source directory; or HM_ARTIFACTS, artifacts in config)")
	fl.StringVarP(&f.branch, "branch", "b", "", "source branch (remote backend)")
	fl.StringVarP(&f.message, "message", "m", "", "build message (remote backend)")
	fl.StringVar(&f.server, "server", "", "the hm server's URL (remote backend; or HM_API_URL, [remote] server)")
	fl.StringVar(&f.token, "token", "", "an API token of the org (remote backend; better: HM_API_TOKEN, which ps does not show)")
	fl.StringVar(&f.org, "org", "", "the organization on the server (remote backend; or HM_ORG, [remote] org)")
	return cmd
}

// settings are the config after flags.
type settings struct {
	config.Config
	parallelism int
	env         []string
	timeout     time.Duration
}

func resolveSettings(fl *pflag.FlagSet, f *runFlags, getenv func(string) string) (settings, error) {
	cfg, err := config.Load(f.dir, getenv)
	if err != nil {
		return settings{}, err
	}
	s := settings{Config: cfg}
	changed := fl.Changed
	if changed("backend") {
		s.Backend = f.backend
	}
	if changed("parallelism") {
		s.Parallelism = f.parallelism
	}
	if changed("keep-going") {
		s.KeepGoing = f.keepGoing
	}
	if changed("no-cache") {
		s.NoCache = f.noCache
	}
	if changed("format") {
		s.Format = f.format
	}
	if changed("logs") {
		s.Logs = f.logs
	}
	if changed("no-color") {
		s.NoColor = f.noColor
	}
	if changed("network") {
		s.Network = f.network
	}
	if changed("server") {
		s.Remote.Server = f.server
	}
	if changed("token") {
		s.Remote.Token = f.token
	}
	if changed("org") {
		s.Remote.Org = f.org
	}
	switch s.Network {
	case "private", "none", "host":
	default:
		return s, usage("use --network private (the default), none or host", "unknown network mode %q", s.Network)
	}
	if changed("pids-limit") {
		n, err := config.ParsePidsLimit(f.pidsLimit)
		if err != nil {
			return s, usage("give --pids-limit a whole number of tasks, e.g. 4096, or 0 for none", "%v", err)
		}
		s.PidsLimit = n
	}
	if changed("memory") {
		n, err := config.ParseMemory(f.memory)
		if err != nil {
			return s, usage("give --memory a size of at least 6m, e.g. 512m or 2GiB, or 0 for none", "%v", err)
		}
		s.Memory = config.Size(n)
	}
	if changed("cpus") {
		n, err := config.ParseCPUs(f.cpus)
		if err != nil {
			return s, usage(fmt.Sprintf("give --cpus a number from 0.01 to %d, e.g. 1.5, or 0 for none", runtime.NumCPU()), "%v", err)
		}
		s.CPUs = config.CPUs(n)
	}
	if s.Format != "human" && s.Format != "json" {
		return s, usage("--format human|json", "unknown output format %q", s.Format)
	}
	s.parallelism = s.Parallelism
	if s.parallelism < 0 {
		return s, usage("give --parallelism a number >= 0", "invalid parallelism %d", s.parallelism)
	}
	if s.parallelism == 0 {
		s.parallelism = 1
	}
	s.timeout = s.Timeout.Duration
	if changed("timeout") {
		d, err := time.ParseDuration(f.timeout)
		if err != nil || d <= 0 {
			return s, usage("use a positive Go duration such as 90s, 10m or 1h", "invalid --timeout %q", f.timeout)
		}
		s.timeout = d
	}
	for _, m := range f.mapImage {
		from, to, ok := strings.Cut(m, "=")
		if !ok || from == "" || to == "" {
			return s, usage("write --map-image FROM=TO, e.g. --map-image ubuntu:24.04=hm-test", "invalid --map-image %q", m)
		}
		s.Images[from] = to
	}
	for k, v := range s.Env {
		s.env = append(s.env, k+"="+v)
	}
	for _, e := range f.env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return s, usage("write -e KEY=VALUE", "invalid -e %q", e)
		}
		s.env = append(s.env, e)
	}
	return s, nil
}

func usage(fix, format string, args ...any) error {
	return errs.New(errs.ErrUsage, "usage", fix, format, args...)
}

// loadPipeline reads the IR, verbatim: --file, or a discovered pipeline rendered, and says
// where it came from (for errors). It is parsed and validated with the rest of the build
// (prepare.New).
func loadPipeline(c *cobra.Command, stdio IO, f *runFlags, args []string) (data []byte, slug, source string, err error) {
	switch {
	case f.file != "" && len(args) > 0:
		return nil, "", "", usage("pass either PIPELINE or --file", "both a pipeline name and --file given")
	case f.file == "-":
		b, err := frontend.Read(stdio.In, "stdin", "ir")
		if _, limit := err.(*errs.LimitError); limit {
			return nil, "", "", err
		}
		if err != nil {
			return nil, "", "", usage("pipe the IR into hm run --file -", "cannot read stdin: %v", err)
		}
		data, slug, source = b, "stdin", "stdin"
	case f.file != "":
		b, err := frontend.ReadFile(f.file, "ir")
		if _, limit := err.(*errs.LimitError); limit {
			return nil, "", "", err
		}
		if err != nil {
			return nil, "", "", usage("check the path given to --file", "cannot read %s: %v", f.file, err)
		}
		data, source = b, f.file
		slug = strings.TrimSuffix(filepath.Base(f.file), filepath.Ext(f.file))
	default:
		p, err := selectPipeline(c.Context(), f.dir, args)
		if err != nil {
			return nil, "", "", err
		}
		if data, err = frontend.Render(c.Context(), p); err != nil {
			return nil, "", "", err
		}
		slug, source = p.Slug, p.Path
	}
	return data, slug, source, nil
}

func runBuild(c *cobra.Command, stdio IO, f *runFlags, args []string) error {
	// Before anything is written (the backend notice included). A closed output (`hm run | head`) stops the output, not the build: without this, Go's
	// runtime kills hm at the first write to a broken stdout or stderr, mid-build, leaving
	// containers and ephemeral snapshots behind. With SIGPIPE caught, writes fail with EPIPE,
	// the renderers keep draining events, and the build ends as it would have.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	getenv := getenvOr(stdio)
	s, err := resolveSettings(c.Flags(), f, getenv)
	if err != nil {
		return err
	}
	var remoteExec execution.Backend
	if isRemote(s.Backend) { // before the source is walked: a missing --server is said at once
		if remoteExec, err = remoteBackend(s, f); err != nil {
			return err
		}
	}
	irData, slug, source, err := loadPipeline(c, stdio, f, args)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return usage("check --dir", "bad source directory %q: %v", f.dir, err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usage("point -d/--dir at an existing directory", "source directory %s does not exist", dir)
	}
	secrets, err := secret.Resolve(secret.Request{Flags: f.secrets, Config: s.Secrets, Dir: dir, Getenv: getenv})
	if err != nil {
		return err
	}
	var exclude []string
	if secrets.FromDotEnv { // the file a secret came from stays out of every snapshot
		exclude = []string{secret.DotEnv}
	}
	mask := secret.NewMasker(slices.Collect(maps.Values(secrets.Values))...)
	// Everything that does not depend on where the build runs, once, for either backend.
	build, err := prepare.New(c.Context(), prepare.Input{
		IR: irData, Slug: slug, Dir: dir, Org: getenv("HM_PIPELINE_ORG"), Getenv: getenv,
		MaxSourceBytes: int64(s.MaxSourceSize), Exclude: exclude,
		Options: prepare.Options{
			Parallelism: s.parallelism, KeepGoing: s.KeepGoing, NoCache: s.NoCache,
			Timeout: s.timeout, Env: s.env, MapImage: s.Images, Secrets: secrets.Values,
		},
	})
	if err != nil {
		return nameLimitFile(err, source)
	}
	defer build.Close()
	stateDir, err := config.StateDir(getenv)
	if err != nil {
		return err
	}
	exec, backendName := remoteExec, "remote"
	if exec == nil {
		lb, vmb, err := localBackend(c.Context(), stdio, s, stateDir, build)
		if err != nil {
			return err
		}
		defer closeVM(vmb)
		exec, backendName = lb, vmb.Name()
	}

	// Signals: the first SIGINT/SIGTERM cancels the build (cleanup runs, exit 130); a second
	// SIGINT exits at once and leaves the cleanup to the next start's reconcile. The handler
	// stays until hm exits: the VM backend closes (deferred above) after this function's
	// other work, and a Ctrl-C there must still exit 130 with the message, not kill hm by
	// the signal's default action halfway through that cleanup.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	artifacts, err := artifactsDir(c.Flags(), f, s, build.Source.Dir)
	if err != nil {
		return err
	}
	h, err := exec.Start(c.Context(), execution.Request{Build: build, ArtifactsDir: artifacts})
	if err != nil {
		return err
	}
	go func() {
		n := 0
		for sig := range sigs {
			n++
			if n == 1 {
				h.Cancel()
				continue
			}
			if sig == os.Interrupt {
				if backendName == "remote" {
					fmt.Fprintln(stdio.Err, "hm: interrupted again, exiting (the server was asked once to cancel the build)")
				} else {
					fmt.Fprintln(stdio.Err, "hm: interrupted again, exiting without cleanup (the next run reconciles)")
				}
				os.Exit(errs.ExitCanceled)
			}
		}
	}()

	// The build's record (hm logs, hm builds) is written from the same stream the output shows.
	rec := recordBuild(stdio, stateDir, s.Builds, slug, dir, backendName, artifacts, h.Events())
	var outErr error
	if s.Format == "json" {
		w := events.NewNDJSONWriter(stdio.Out)
		for e := range rec.events() {
			if outErr == nil {
				outErr = w.Write(e)
			}
			// Infrastructure failures also reach stderr as they happen: stdout may be a file
			// nobody reads. As a note, not an error[...] line: the first one's error, with its
			// code and fix, is printed once after the build.
			if cf := e.ChainFailed; cf != nil && cf.ExitCode == scheduler.ExitInfra {
				fmt.Fprintf(stdio.Err, "hm: %s\n", render.EscapeText(cf.Message))
			}
		}
	} else {
		live := false
		if fd, ok := stdio.Err.(*os.File); ok {
			live = render.UseLive(fd, s.Logs)
		}
		outErr = render.Run(context.WithoutCancel(c.Context()), stdio.Err, rec.events(), render.Options{
			NoColor: s.NoColor, Verbose: f.verbose, Live: live, LogHint: rec.hint,
		})
	}
	rec.finish()
	out := h.Wait()
	if id := rec.rec.ID(); s.Format != "json" && id != "" && artifacts != "" {
		// The step_artifact lines name paths in the workspace; this says where they are.
		if m := filepath.Join(artifacts, id, scheduler.ManifestName); fileExists(m) {
			fmt.Fprintf(stdio.Err, "hm: artifacts in %s (manifest %s)\n", filepath.Dir(m), scheduler.ManifestName)
		}
	}
	if out.Err != nil {
		// After the build's own report: why the first step that could not run failed, and
		// what to do about it. The exit code stays the build's.
		// An error may quote a step's output or environment: masked like the events.
		mw := mask.Writer(stdio.Err)
		printError(mw, out.Err)
		_ = mw.Flush()
	}
	_ = outErr // a closed pipe must not change the build's exit code
	return exitCode(out.ExitCode).orNil()
}

func (e exitCode) orNil() error {
	if e == 0 {
		return nil
	}
	return e
}

// parseIR parses IR read from source (a file, "stdin"), naming it in a refusal of one of the
// input limits.
func parseIR(data []byte, source string) (*ir.Pipeline, error) {
	p, err := ir.Parse(data)
	return p, nameLimitFile(err, source)
}

// nameLimitFile names the IR's source in a limit error about it.
func nameLimitFile(err error, source string) error {
	var le *errs.LimitError
	if errors.As(err, &le) && le.File == "" {
		le.File = source
	}
	return err
}

// localBackend opens the VM backend a local build runs on (checking the state dir and the
// root images first) and the local execution backend over it.
func localBackend(ctx context.Context, stdio IO, s settings, stateDir string, build *prepare.Build) (*local.Backend, vm.Backend, error) {
	// An unwritable state dir (full, read-only) still serves a build whose steps are all
	// cached: local uses the registry read-only and fails a step that would have to run.
	//
	// The probe's synced write runs beside the backend's opening (docker: the daemon's ping),
	// which does not depend on it: the state dir exists before either begins. chooseVM takes
	// the verdict (settle) before it resolves or pulls any image and before it reports an
	// error of its own, so what is said and done is as if the probe had run first.
	probed := make(chan error, 1)
	if err := makeStateDir(stateDir); err != nil {
		probed <- err
	} else {
		go func() { probed <- probeStateDir(stateDir) }()
	}
	var unwritable error
	settle := func() error {
		err := <-probed
		if err == nil {
			return nil
		}
		var se *errs.StateDirError
		if _, statErr := os.Stat(local.RegistryPath(stateDir)); statErr != nil || !errors.As(err, &se) {
			return err // nothing is cached there, so nothing could run
		}
		unwritable = se.Err
		fmt.Fprintf(stdio.Err, "hm: warning: %v: only cached steps can be used; a step that must run fails\n", err)
		return nil
	}
	vmb, notice, err := chooseVM(ctx, s.Backend, stateDir, vmOptions{
		network: s.Network, pidsLimit: s.PidsLimit, memory: int64(s.Memory), cpus: float64(s.CPUs),
	}, rootImages(build.Pipeline, s.Images), settle)
	if err != nil {
		return nil, nil, err
	}
	if notice != "" {
		fmt.Fprintln(stdio.Err, notice)
	}
	return &local.Backend{
		VM: vmb, StateDir: stateDir, Unwritable: unwritable,
		MaxEntries: s.Cache.MaxEntries, MaxBytes: int64(s.Cache.MaxSize),
	}, vmb, nil
}

// artifactsDir is where the build's steps' artifacts go: --artifacts (relative to the
// working directory), else the config's artifacts (relative to the source directory), else
// the source directory's .hm/artifacts, which no workspace ever includes.
func artifactsDir(fl *pflag.FlagSet, f *runFlags, s settings, sourceDir string) (string, error) {
	if fl.Changed("artifacts") {
		if f.artifacts == "" {
			return "", usage("give --artifacts a directory", "--artifacts is empty")
		}
		abs, err := filepath.Abs(f.artifacts)
		if err != nil {
			return "", usage("check --artifacts", "bad artifacts directory %q: %v", f.artifacts, err)
		}
		return abs, nil
	}
	if s.Artifacts != "" {
		if filepath.IsAbs(s.Artifacts) {
			return filepath.Clean(s.Artifacts), nil
		}
		return filepath.Join(sourceDir, s.Artifacts), nil
	}
	return filepath.Join(sourceDir, ".hm", "artifacts"), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
