// Command buildkit compares hm's Docker backend with the daemon's embedded BuildKit on the
// same daemon and base image, as issue #14 asks, interleaved round by round in one process so
// that load from other users of the machine hits both alike:
//
//   - chain: 30 trivial steps, each a builds_in child of the one before with a `forever`
//     cache policy; for BuildKit the same 30 commands as RUN lines of one Dockerfile;
//   - fanout: one root and 8 leaves building in it; for BuildKit a multi-stage Dockerfile
//     (a root stage, 8 leaf stages FROM it, and a final stage copying one file of each leaf,
//     since BuildKit builds only the stages the target needs);
//   - one: a single step, for BuildKit one RUN line;
//   - seq: three root steps, each depending on the one before; for BuildKit three stages,
//     each copying a file of the one before (BuildKit orders stages by their data only).
//
// Cold is `hm run --no-cache` against `docker build --no-cache`; fully cached is a re-run of
// each with its cache populated. Times are the wall time of the processes (hm's build_end
// duration is shown beside it), and beside them the CPU time the whole machine spent during
// each (all processes and cores: hm, the CLI, dockerd, containerd, shims, runc, the steps,
// the kernel), which bounds a build once every core is busy. After every hm run the daemon
// is checked for containers and ephemeral snapshots the run left behind (scoped to this
// bench's state dir: colleagues may share the daemon); any leftover fails the bench.
//
//	bash scripts/test-image.sh && go run ./bench/buildkit [-rounds 5] [-docker /usr/bin/docker] [-only chain|fanout|one|seq] [-kind cold|cached] [-before OLD-HM-BINARY] [-parallelism N]
//
// hm runs with its default parallelism (the CPUs) unless -parallelism adds a variant; the
// daemon's embedded BuildKit (v0.8 in docker 20.10) runs every ready vertex at once.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/hmci/hm/bench/internal/stats"
)

func main() {
	rounds := flag.Int("rounds", 5, "measured rounds (each runs every variant once)")
	img := flag.String("image", "hm-test-busybox:latest", "base image, local (scripts/test-image.sh)")
	dockerBin := flag.String("docker", "/usr/bin/docker", "docker CLI (the 20.10 client drives the embedded BuildKit)")
	only := flag.String("only", "", "run one workload only: chain, fanout, one or seq")
	kind := flag.String("kind", "", "run one kind only: cold or cached")
	before := flag.String("before", "", "an older hm binary to interleave as well (a before/after comparison)")
	par := flag.Int("parallelism", 0, "also run hm with --parallelism N, interleaved (BuildKit's embedded solver has no bound)")
	flag.Parse()
	if err := run(*rounds, *img, *dockerBin, *only, *kind, *before, *par); err != nil {
		fmt.Fprintln(os.Stderr, "bench/buildkit:", err)
		os.Exit(1)
	}
}

type workload struct {
	name       string
	ir         []byte
	dockerfile string
}

func workloads(img string) []workload {
	const n = 30
	var chain []string
	var df strings.Builder
	fmt.Fprintf(&df, "FROM %s\nWORKDIR /workspace\nCOPY . .\n", img)
	for i := range n {
		cmd := fmt.Sprintf("echo %d >> chain.txt", i)
		chain = append(chain, cmd)
		fmt.Fprintf(&df, "RUN %s\n", cmd)
	}
	var fan strings.Builder
	fmt.Fprintf(&fan, "FROM %s AS root\nWORKDIR /workspace\nCOPY . .\nRUN echo root > root.txt\n", img)
	leaves := []string{"echo root > root.txt"}
	for i := range 8 {
		cmd := fmt.Sprintf("echo %d > leaf.txt", i)
		leaves = append(leaves, cmd)
		fmt.Fprintf(&fan, "FROM root AS leaf%d\nRUN %s\n", i, cmd)
	}
	fan.WriteString("FROM scratch\n")
	for i := range 8 {
		fmt.Fprintf(&fan, "COPY --from=leaf%d /workspace/leaf.txt /leaf%d.txt\n", i, i)
	}
	one := fmt.Sprintf("FROM %s\nWORKDIR /workspace\nCOPY . .\nRUN echo one > one.txt\n", img)
	var seq strings.Builder
	seqCmds := []string{"echo a > a.txt", "echo b > b.txt", "echo c > c.txt"}
	for i, c := range seqCmds {
		fmt.Fprintf(&seq, "FROM %s AS s%d\nWORKDIR /workspace\nCOPY . .\n", img, i)
		if i > 0 { // BuildKit orders stages by what they copy from each other
			fmt.Fprintf(&seq, "COPY --from=s%d /workspace/%c.txt /\n", i-1, 'a'+i-1)
		}
		fmt.Fprintf(&seq, "RUN %s\n", c)
	}
	return []workload{
		{name: fmt.Sprintf("%d-step builds_in chain", n), ir: ir(chain, true), dockerfile: df.String()},
		{name: "fan-out: 1 root + 8 leaves", ir: ir(leaves, false), dockerfile: fan.String()},
		{name: "one step", ir: ir([]string{"echo one > one.txt"}, false), dockerfile: one},
		{name: "3 steps in sequence (depends_on)", ir: irSequence(seqCmds), dockerfile: seq.String()},
	}
}

// ir renders the steps as pipeline IR: a chain (each builds in the one before) or a fan-out
// (every step after the first builds in the first). Every step is cached forever.
func ir(cmds []string, chain bool) []byte {
	var nodes, edges []string
	for i, c := range cmds {
		nodes = append(nodes, fmt.Sprintf(`{"step":{"key":"s%02d","cmd":%q,"image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}},"env":{}}`, i, c))
		switch {
		case i == 0:
		case chain:
			edges = append(edges, fmt.Sprintf(`[%d,%d,"builds_in"]`, i-1, i))
		default:
			edges = append(edges, fmt.Sprintf(`[0,%d,"builds_in"]`, i))
		}
	}
	return []byte(`{"version":"0","graph":{"nodes":[` + strings.Join(nodes, ",") + `],"edges":[` + strings.Join(edges, ",") + `]}}`)
}

// irSequence renders the steps as pipeline IR of root steps, each depending on the one
// before (depends_on: its own image, no snapshot of the one before).
func irSequence(cmds []string) []byte {
	var nodes, edges []string
	for i, c := range cmds {
		nodes = append(nodes, fmt.Sprintf(`{"step":{"key":"s%02d","cmd":%q,"image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}},"env":{}}`, i, c))
		if i > 0 {
			edges = append(edges, fmt.Sprintf(`[%d,%d,"depends_on"]`, i-1, i))
		}
	}
	return []byte(`{"version":"0","graph":{"nodes":[` + strings.Join(nodes, ",") + `],"edges":[` + strings.Join(edges, ",") + `]}}`)
}

type variant struct {
	name string
	fn   func() (result, error)
	wall []time.Duration
	eng  []time.Duration
	cpu  []time.Duration
}

func run(rounds int, img, dockerBin, only, kind, before string, par int) error {
	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	work, err := os.MkdirTemp("", "hm-bench-buildkit")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "hm")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/hm").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	state := filepath.Join(work, "state")
	env := append(os.Environ(), "HM_STATE_DIR="+state, "CI=true", "DOCKER_BUILDKIT=1")
	var tags []string
	defer func() {
		// The bench's own images: BuildKit's tagged results and hm's kept snapshots.
		for _, t := range tags {
			_, _ = cli.ImageRemove(ctx, t, image.RemoveOptions{Force: true})
		}
		c := exec.Command(bin, "cache", "clean", "--backend", "docker")
		c.Env = env
		_ = c.Run()
	}()

	var rows, notes []string
	for wi, w := range workloads(img) {
		if only != "" && !strings.HasPrefix(w.name, map[string]string{"chain": "30", "fanout": "fan", "one": "one", "seq": "3 steps"}[only]) {
			continue
		}
		dir := filepath.Join(work, fmt.Sprint("w", wi))
		src, bctx := filepath.Join(dir, "src"), filepath.Join(dir, "ctx")
		for _, d := range []string{filepath.Join(src, ".hm"), bctx} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		files := map[string][]byte{
			filepath.Join(src, ".hm", "bench.json"): w.ir,
			filepath.Join(src, "README"):            []byte("bench\n"),
			filepath.Join(bctx, "README"):           []byte("bench\n"),
			filepath.Join(dir, "Dockerfile"):        []byte(w.dockerfile),
		}
		for p, b := range files {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return err
			}
		}
		tag := fmt.Sprintf("hm-bench-buildkit:%d-%d", os.Getpid(), wi)
		tags = append(tags, tag)
		hmBin := func(bin string, extra ...string) func() (result, error) {
			return func() (result, error) {
				args := append([]string{"run", "-d", src, "--format", "json", "--backend", "docker",
					"--map-image", "ubuntu:24.04=" + img}, extra...)
				res, err := hmRun(bin, env, args)
				if err == nil {
					err = leftovers(ctx, cli, state)
				}
				return res, err
			}
		}
		hm := func(extra ...string) func() (result, error) { return hmBin(bin, extra...) }
		bk := func(extra ...string) func() (result, error) {
			return func() (result, error) {
				args := append([]string{"build", "-q", "-t", tag, "-f", filepath.Join(dir, "Dockerfile")}, extra...)
				c := exec.Command(dockerBin, append(args, bctx)...)
				c.Env = env
				var out bytes.Buffer
				c.Stdout, c.Stderr = &out, &out
				var res result
				err := measure(&res, c.Run)
				if err != nil {
					return res, fmt.Errorf("docker build: %v\n%s", err, out.String())
				}
				return res, nil
			}
		}
		// Populate both caches once, unmeasured; --no-cache runs leave them as they are.
		for _, f := range []func() (result, error){hm(), bk()} {
			if _, err := f(); err != nil {
				return err
			}
		}
		// Per kind: hm, BuildKit, then the older hm when asked for.
		var vs []*variant
		per := 2
		if before != "" {
			per++
		}
		if par > 0 {
			per++
		}
		add := func(name string, flags ...string) {
			vs = append(vs, &variant{name: "hm " + name, fn: hm(flags...)},
				&variant{name: "BuildKit " + name, fn: bk(flags...)})
			if before != "" {
				vs = append(vs, &variant{name: "hm before " + name, fn: hmBin(before, flags...)})
			}
			if par > 0 {
				vs = append(vs, &variant{name: fmt.Sprintf("hm --parallelism %d %s", par, name),
					fn: hm(append([]string{"--parallelism", fmt.Sprint(par)}, flags...)...)})
			}
		}
		if kind != "cached" {
			add("cold (--no-cache)", "--no-cache")
		}
		if kind != "cold" {
			add("fully cached")
		}
		for range rounds {
			for _, v := range vs {
				res, err := v.fn()
				if err != nil {
					return fmt.Errorf("%s, %s: %w", w.name, v.name, err)
				}
				v.wall, v.eng, v.cpu = append(v.wall, res.wall), append(v.eng, res.engine), append(v.cpu, res.cpu)
			}
		}
		for i := 0; i < len(vs); i += per {
			b := vs[i+1]
			for _, h := range append([]*variant{vs[i]}, vs[i+2:i+per]...) {
				kind := strings.TrimPrefix(h.name, "hm ")
				rows = append(rows, fmt.Sprintf("| %s | %s | %s (%s; engine %s) | %s (%s) | %.2f× (%s) | %s / %s, %.2f× |", w.name, kind,
					ms(stats.Median(h.wall)), spread(h.wall), ms(stats.Median(h.eng)), ms(stats.Median(b.wall)), spread(b.wall),
					float64(stats.Median(h.wall))/float64(stats.Median(b.wall)), ratioSpread(h.wall, b.wall),
					ms(stats.Median(h.cpu)), ms(stats.Median(b.cpu)), float64(stats.Median(h.cpu))/float64(stats.Median(b.cpu))))
			}
			if before != "" {
				// The two hm binaries' own comparison, round by round: on a shared machine the
				// load moves both sides of every row, and BuildKit's more than hm's.
				notes = append(notes, fmt.Sprintf("%s, %s: hm / hm before per round, median %s",
					w.name, strings.TrimPrefix(vs[i].name, "hm "), pairedRatio(vs[i].wall, vs[i+2].wall)))
			}
		}
	}
	ver, _ := cli.ServerVersion(ctx)
	fmt.Printf("<!-- go run ./bench/buildkit -rounds %d: dockerd %s, image %s, medians of %d interleaved rounds -->\n",
		rounds, ver.Version, img, rounds)
	fmt.Println("| workload | run | hm docker (wall, min–max) | BuildKit (wall, min–max) | hm / BuildKit (per-round min–max) | machine CPU: hm / BuildKit |")
	fmt.Println("|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Println(r)
	}
	if len(notes) > 0 {
		fmt.Println()
	}
	for _, n := range notes {
		fmt.Println(n)
	}
	return nil
}

// result is one measured run: its wall time, hm's build_end duration (0 for BuildKit), and
// the CPU time the whole machine spent meanwhile (every process, the daemon's included).
type result struct{ wall, engine, cpu time.Duration }

// measure runs fn, recording its wall time and the machine's busy CPU time in res.
func measure(res *result, fn func() error) error {
	c0 := busyCPU()
	t0 := time.Now()
	err := fn()
	res.wall, res.cpu = time.Since(t0), busyCPU()-c0
	return err
}

// busyCPU is the CPU time all cores have spent outside idle and iowait since boot (user,
// nice, system, irq, softirq: the first line of /proc/stat, in USER_HZ ticks, 100 on Linux);
// 0 where there is no /proc/stat. Time stolen by a hypervisor is not counted.
func busyCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system [idle iowait] irq softirq
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// hmRun runs hm and returns its measurement, build_end's duration read from its events.
func hmRun(bin string, env, args []string) (res result, err error) {
	c := exec.Command(bin, args...)
	c.Env = env
	var out, stderr bytes.Buffer
	c.Stdout, c.Stderr = &out, &stderr
	if err := measure(&res, c.Run); err != nil {
		return res, fmt.Errorf("hm: %v\n%s", err, stderr.String())
	}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var ev struct {
			Kind       string `json:"kind"`
			DurationMS int64  `json:"duration_ms"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Kind == "build_end" {
			res.engine = time.Duration(ev.DurationMS) * time.Millisecond
		}
	}
	return res, nil
}

// leftovers fails when containers or ephemeral snapshots of this state dir outlived a run.
func leftovers(ctx context.Context, cli *client.Client, state string) error {
	f := filters.NewArgs(filters.Arg("label", "dev.hm.state="+state))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return err
	}
	f.Add("label", "dev.hm.ephemeral=true")
	imgs, err := cli.ImageList(ctx, image.ListOptions{All: true, Filters: f})
	if err != nil {
		return err
	}
	if len(cs)+len(imgs) > 0 {
		return fmt.Errorf("left behind: %d containers, %d ephemeral images", len(cs), len(imgs))
	}
	return nil
}

// spread is the range of d, "min–max".
func spread(d []time.Duration) string {
	return fmt.Sprintf("%s–%s", ms(slices.Min(d)), ms(slices.Max(d)))
}

// ratioSpread is the range of the per-round ratios h[i]/b[i]: the two ran back to back, so
// a round's ratio saw the same load.
func ratioSpread(h, b []time.Duration) string {
	var r []float64
	for i := range h {
		r = append(r, float64(h[i])/float64(b[i]))
	}
	return fmt.Sprintf("%.2f–%.2f", slices.Min(r), slices.Max(r))
}

// pairedRatio is the median of the per-round ratios h/b, with their range.
func pairedRatio(h, b []time.Duration) string {
	var r []float64
	for i := range h {
		r = append(r, float64(h[i])/float64(b[i]))
	}
	slices.Sort(r)
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", r[len(r)/2], r[0], r[len(r)-1])
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
