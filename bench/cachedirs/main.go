// Command cachedirs measures what cache_dirs save a Go project's `go test ./...` step, through
// the hm binary, each figure beside a baseline measured in the same run:
//
//   - a small real Go module (four dependencies from the module proxy: go-cmp, uuid, yaml.v3,
//     pflag) tested by one uncached step on the sandbox backend's `host` image (the machine's
//     Go toolchain, read-only), GOCACHE and GOMODCACHE pointed at directories the host does
//     not have, so that nothing of the machine's own caches helps;
//   - the same pipeline with and without `cache_dirs: [GOCACHE, GOMODCACHE]`, each in a
//     state dir of its own: a first run, then the source edited (so the test binary must be
//     rebuilt and the step is nothing like a cache hit), then a second run. Without cache
//     dirs every run downloads the modules and compiles the standard library and the
//     dependencies again; with them the second run compiles the edited package only.
//
// Rounds alternate the two variants; medians are printed as markdown rows for BENCHMARKS.md.
// It needs root (the sandbox) and the module proxy.
//
//	go run ./bench/cachedirs [-rounds 3] [-backend sandbox] [-map ubuntu:24.04=host]
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
	rounds := flag.Int("rounds", 3, "rounds (each: both variants, two runs each)")
	backend := flag.String("backend", "sandbox", "hm backend")
	image := flag.String("image", "host", "image of the step (it needs Go at -go)")
	goBin := flag.String("go", "/usr/local/go/bin", "directory of the go command inside the step")
	flag.Parse()
	if err := run(*rounds, *backend, *image, *goBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench/cachedirs:", err)
		os.Exit(1)
	}
}

// The module under test; version.go (written before every run) holds the constant an edit
// changes. Parse uses it, so an edit changes the compiled package and go test must build
// and run the test again: an edit the compiler discards (an unused constant) leaves the test
// binary identical and go test replays the cached result.
var module = map[string]string{
	"go.mod": `module example.com/hmbench

go 1.22

require (
	github.com/google/go-cmp v0.7.0
	github.com/google/uuid v1.6.0
	github.com/spf13/pflag v1.0.10
	gopkg.in/yaml.v3 v3.0.1
)
`,
	"config.go": `// Package hmbench parses a small configuration from flags and YAML.
package hmbench

import (
	"strconv"

	"github.com/google/uuid"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

const Version = "v0"

type Config struct {
	Name  string            ` + "`yaml:\"name\"`" + `
	Tags  []string          ` + "`yaml:\"tags\"`" + `
	Extra map[string]string ` + "`yaml:\"extra\"`" + `
	ID    string            ` + "`yaml:\"-\"`" + `
}

// Parse reads --name and --config (YAML) from args.
func Parse(args []string, doc []byte) (Config, error) {
	fs := pflag.NewFlagSet("hmbench", pflag.ContinueOnError)
	name := fs.String("name", "", "name")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	var c Config
	if err := yaml.Unmarshal(doc, &c); err != nil {
		return Config{}, err
	}
	if *name != "" {
		c.Name = *name
	}
	c.ID = uuid.NewSHA1(uuid.NameSpaceURL, []byte(c.Name+Version+strconv.Itoa(edit))).String()
	return c, nil
}
`,
	"config_test.go": `package hmbench

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	c, err := Parse([]string{"--name", "x"}, []byte("name: y\ntags: [a, b]\nextra: {k: v}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.ID = ""
	want := Config{Name: "x", Tags: []string{"a", "b"}, Extra: map[string]string{"k": "v"}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Error(diff)
	}
}
`,
}

const (
	goCache    = "/var/cache/hmbench/go-build"
	goModCache = "/var/cache/hmbench/mod"
)

func pipelineYAML(image, goBin string, cacheDirs bool) string {
	s := fmt.Sprintf(`steps:
  - key: test
    run: go test ./...
    image: %s
    env:
      PATH: %s:/usr/local/bin:/usr/bin:/bin
      GOCACHE: %s
      GOMODCACHE: %s
      GOTOOLCHAIN: local
      GOFLAGS: -mod=mod
`, image, goBin, goCache, goModCache)
	if cacheDirs {
		s += fmt.Sprintf("    cache_dirs: [%s, %s]\n", goCache, goModCache)
	}
	return s
}

type variant struct {
	name      string
	cacheDirs bool
	src, st   string
	first     []time.Duration
	second    []time.Duration
}

func run(rounds int, backend, image, goBin string) error {
	work, err := os.MkdirTemp("/var/tmp", "hm-bench-cachedirs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "hm")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/hm").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	vs := []*variant{{name: "without cache_dirs"}, {name: "with cache_dirs", cacheDirs: true}}
	for _, v := range vs {
		v.src = filepath.Join(work, strings.ReplaceAll(v.name, " ", "-"))
		for name, data := range module {
			if err := writeFile(filepath.Join(v.src, name), data); err != nil {
				return err
			}
		}
		// go.sum from the machine's module cache: the step verifies what it downloads.
		tidy := exec.Command("go", "mod", "tidy")
		tidy.Dir = v.src
		if out, err := tidy.CombinedOutput(); err != nil {
			return fmt.Errorf("go mod tidy: %v\n%s", err, out)
		}
		if err := writeFile(filepath.Join(v.src, ".hm", "ci.yaml"), pipelineYAML(image, goBin, v.cacheDirs)); err != nil {
			return err
		}
	}
	edit := 0
	for r := range rounds {
		for _, v := range vs {
			// A fresh state dir per round: the first run starts from nothing.
			v.st = filepath.Join(work, fmt.Sprintf("state-%d-%t", r, v.cacheDirs))
			for i := range 2 {
				edit++
				if err := writeFile(filepath.Join(v.src, "version.go"), fmt.Sprintf("package hmbench\n\nconst edit = %d\n", edit)); err != nil {
					return err
				}
				d, err := hmRun(bin, v, backend)
				if err != nil {
					return err
				}
				if i == 0 {
					v.first = append(v.first, d)
				} else {
					v.second = append(v.second, d)
				}
				fmt.Fprintf(os.Stderr, "round %d, %s, run %d: %v\n", r+1, v.name, i+1, d.Round(time.Millisecond))
			}
			_ = os.RemoveAll(v.st)
		}
	}
	without, with := vs[0], vs[1]
	base := stats.Median(without.second)
	fmt.Printf("| step `go test ./...` (%s, image %s), median of %d | wall time of `hm run` | vs the same run without cache_dirs |\n", backend, image, rounds)
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| without cache_dirs, first run | %.1f s | %.2f× |\n", stats.Median(without.first).Seconds(), ratio(stats.Median(without.first), stats.Median(without.first)))
	fmt.Printf("| without cache_dirs, second run (source edited) | %.1f s | %.2f× |\n", base.Seconds(), ratio(base, stats.Median(without.second)))
	fmt.Printf("| with cache_dirs, first run (empty cache dirs) | %.1f s | %.2f× |\n", stats.Median(with.first).Seconds(), ratio(stats.Median(with.first), stats.Median(without.first)))
	fmt.Printf("| with cache_dirs, second run (source edited) | %.1f s | %.2f× |\n", stats.Median(with.second).Seconds(), ratio(stats.Median(with.second), base))
	fmt.Printf("\nsecond run with cache_dirs: %.1f× faster than its first run, %.1f× faster than the second run without them\n",
		ratio(stats.Median(with.first), stats.Median(with.second)), ratio(base, stats.Median(with.second)))
	return nil
}

// hmRun runs the pipeline and returns the wall time of `hm run`; a failed step, a cache hit,
// or go test replaying a cached result instead of building and running the test, is an
// error.
func hmRun(bin string, v *variant, backend string) (time.Duration, error) {
	cmd := exec.Command(bin, "run", "--backend", backend, "--format", "json")
	cmd.Dir = v.src
	cmd.Env = append(os.Environ(), "HM_STATE_DIR="+v.st)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("hm run (%s): %v\n%s\n%s", v.name, err, tail(out.String()), errb.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes())) // out stays whole for the errors
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	tested := false
	for sc.Scan() {
		var ev struct {
			Kind string `json:"kind"`
			Line string `json:"line"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch {
		case ev.Kind == "step_cache_hit":
			return 0, fmt.Errorf("%s: the step was a cache hit", v.name)
		case ev.Kind == "step_log" && strings.Contains(ev.Line, "(cached)"):
			// The edit must make go test build and run the test again, not replay it.
			return 0, fmt.Errorf("%s: go test replayed a cached result: %s", v.name, ev.Line)
		case ev.Kind == "step_log" && strings.HasPrefix(ev.Line, "ok") && strings.Contains(ev.Line, "example.com/hmbench"):
			tested = true
		}
	}
	if !tested {
		return 0, fmt.Errorf("%s: no passing go test line in the output\n%s", v.name, tail(out.String()))
	}
	return wall, nil
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

func writeFile(p, data string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(data), 0o644)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }
