// Command chain measures whole builds through the hm binary on one backend, each beside
// baselines measured in the same run:
//
//   - a 30-step builds_in chain, every step cached: the cold run, then the fully cached re-run
//     (engine time = build_end.duration_ms, which excludes process start; the wall time of
//     the process is shown too, beside `hm version` as the cost of starting the binary);
//
//   - with -act PATH: the same shapes under nektos/act (one job, 30 `run:` steps; and one
//     trivial step), which has no step cache, beside hm's cold and cached runs.
//
//     go run ./bench/chain -backend docker -map ubuntu:24.04=hm-test-busybox:latest [-act ~/go/bin/act]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hmci/hm/bench/internal/stats"
)

func main() {
	backend := flag.String("backend", "host", "hm backend")
	mapImage := flag.String("map", "", "--map-image FROM=TO for hm")
	image := flag.String("image", "hm-test-busybox:latest", "image for act's ubuntu-latest")
	steps := flag.Int("steps", 30, "chain length")
	runs := flag.Int("runs", 10, "measured cached re-runs")
	act := flag.String("act", "", "path to the act binary (optional)")
	flag.Parse()
	if err := run(*backend, *mapImage, *image, *steps, *runs, *act); err != nil {
		fmt.Fprintln(os.Stderr, "bench/chain:", err)
		os.Exit(1)
	}
}

func run(backend, mapImage, image string, steps, runs int, act string) error {
	work, err := os.MkdirTemp("", "hm-bench-chain")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "hm")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/hm").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(filepath.Join(src, ".hm"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, ".hm", "chain.json"), chainIR(steps), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "README"), []byte("bench\n"), 0o644); err != nil {
		return err
	}
	env := append(os.Environ(), "HM_STATE_DIR="+filepath.Join(work, "state"), "CI=true")
	args := []string{"run", "-d", src, "--format", "json", "--backend", backend}
	if mapImage != "" {
		args = append(args, "--map-image", mapImage)
	}

	hm := func() (engine, wall time.Duration, err error) {
		c := exec.Command(bin, args...)
		c.Env = env
		var out, stderr bytes.Buffer
		c.Stdout, c.Stderr = &out, &stderr
		t0 := time.Now()
		if err := c.Run(); err != nil {
			return 0, 0, fmt.Errorf("hm: %v\n%s", err, stderr.String())
		}
		wall = time.Since(t0)
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var ev struct {
				Kind       string `json:"kind"`
				DurationMS int64  `json:"duration_ms"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Kind == "build_end" {
				engine = time.Duration(ev.DurationMS) * time.Millisecond
			}
		}
		return engine, wall, nil
	}
	coldEngine, coldWall, err := hm()
	if err != nil {
		return err
	}
	var engines, walls, starts []time.Duration
	for i := 0; i < runs; i++ {
		e, w, err := hm()
		if err != nil {
			return err
		}
		engines, walls = append(engines, e), append(walls, w)
		t0 := time.Now()
		if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
			return fmt.Errorf("hm version: %v %s", err, out)
		}
		starts = append(starts, time.Since(t0))
	}
	fmt.Printf("| %s | %d-step chain, cold | %s engine, %s wall | | |\n", backend, steps, ms(coldEngine), ms(coldWall))
	fmt.Printf("| %s | %d-step chain, fully cached (median of %d) | %s engine, %s wall | `hm version` %s | %.0f× faster than cold |\n",
		backend, steps, runs, ms(stats.Median(engines)), ms(stats.Median(walls)), ms(stats.Median(starts)), float64(coldEngine)/float64(max(stats.Median(engines), time.Millisecond)))

	if act == "" {
		return nil
	}
	for _, n := range []int{1, steps} {
		d, err := actRun(act, work, image, n)
		if err != nil {
			return err
		}
		fmt.Printf("| act v0.2.89 | %d `run:` steps in one job (no cache) | %s wall | | |\n", n, ms(d))
	}
	return nil
}

func chainIR(n int) []byte {
	var nodes, edges []string
	for i := 0; i < n; i++ {
		nodes = append(nodes, fmt.Sprintf(`{"step":{"key":"s%02d","cmd":"echo %d >> chain.txt","image":"ubuntu:24.04","cache":{"policy":"forever","env_keys":[]}},"env":{}}`, i, i))
		if i > 0 {
			edges = append(edges, fmt.Sprintf(`[%d,%d,"builds_in"]`, i-1, i))
		}
	}
	return []byte(`{"version":"0","graph":{"nodes":[` + strings.Join(nodes, ",") + `],"edges":[` + strings.Join(edges, ",") + `]}}`)
}

// actRun runs a workflow of n trivial steps under act and returns the wall time.
func actRun(act, work, image string, n int) (time.Duration, error) {
	dir := filepath.Join(work, fmt.Sprintf("act-%d", n))
	wf := filepath.Join(dir, ".github", "workflows")
	if err := os.MkdirAll(wf, 0o755); err != nil {
		return 0, err
	}
	var b strings.Builder
	b.WriteString("name: chain\non: push\njobs:\n  chain:\n    runs-on: ubuntu-latest\n    steps:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "      - run: echo %d >> chain.txt\n        shell: sh\n", i)
	}
	if err := os.WriteFile(filepath.Join(wf, "chain.yml"), []byte(b.String()), 0o644); err != nil {
		return 0, err
	}
	if out, err := exec.Command("git", "-C", dir, "init", "-q").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("git init: %v %s", err, out)
	}
	c := exec.Command(act, "push", "-C", dir, "-P", "ubuntu-latest="+image, "--pull=false", "--container-architecture", "linux/amd64")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	t0 := time.Now()
	if err := c.Run(); err != nil {
		return 0, fmt.Errorf("act: %v\n%s", err, out.String())
	}
	return time.Since(t0), nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
