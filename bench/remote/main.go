// Command remote measures the remote path (hm server, one host-backend agent, hm run
// --backend remote, all on 127.0.0.1) beside the local host backend in the same run, through
// the hm binary, and prints markdown rows:
//
//   - submit to first step_start: wall time from starting hm run to its step_start line
//     (process start included on both sides), median of -runs;
//
//   - per-step dispatch: a chain of -steps trivial steps separated by barriers, build_end
//     duration_ms / steps, median of -runs;
//
//   - log throughput: one step printing -lines numbered lines, from the client's first
//     step_log to build_end, every line checked present once and in order, median of -runs.
//
// Local and remote runs alternate (local, remote, local, …), so that the load of a shared
// machine, which changes during a run, weighs on both sides of each ratio alike.
//
//	go run ./bench/remote [-runs 5] [-steps 20] [-lines 200000] [-hm BINARY] [-only logs]
//
// -hm runs a built hm instead of building ./cmd/hm (old and new binaries interleaved by
// hand); -only logs measures the log row alone.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	runs := flag.Int("runs", 5, "measured runs per row")
	steps := flag.Int("steps", 20, "steps of the dispatch chain")
	lines := flag.Int("lines", 200000, "log lines of the throughput step")
	hm := flag.String("hm", "", "an hm binary to measure instead of building ./cmd/hm")
	only := flag.String("only", "", "measure one row alone: logs")
	flag.Parse()
	if err := run(*runs, *steps, *lines, *hm, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench/remote:", err)
		os.Exit(1)
	}
}

type bench struct {
	dir, hm, url, userTok string
}

func run(runs, steps, lines int, hm, only string) error {
	dir, err := os.MkdirTemp("", "hm-bench-remote")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{dir: dir, hm: filepath.Join(dir, "hm")}
	if hm != "" {
		if b.hm, err = filepath.Abs(hm); err != nil {
			return err
		}
	} else if out, err := exec.Command("go", "build", "-o", b.hm, "./cmd/hm").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	b.url = "http://" + addr
	data := filepath.Join(dir, "server")
	if b.userTok, err = b.token(data); err != nil {
		return err
	}
	agentTok, err := b.token(data, "--agent")
	if err != nil {
		return err
	}
	srv, err := b.start(nil, "server", "--data", data, "--listen", addr)
	if err != nil {
		return err
	}
	defer stop(srv)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			return errors.New("the server does not listen")
		}
		time.Sleep(50 * time.Millisecond)
	}
	agent, err := b.start([]string{"HM_AGENT_TOKEN=" + agentTok}, "agent", "--server", b.url, "--state", filepath.Join(dir, "agent"), "--backend", "host")
	if err != nil {
		return err
	}
	defer stop(agent)

	fmt.Println("| measure | local (host) | remote (host agent) | remote / local |")
	fmt.Println("|---|---|---|---|")
	if only != "logs" {
		if err := b.overhead(runs, steps); err != nil {
			return err
		}
	}
	logs := ir([]string{fmt.Sprintf("seq 1 %d", lines)}, false)
	through := func(remote bool) (float64, error) {
		r, err := b.runHM(logs, remote, "check")
		if err != nil {
			return 0, err
		}
		if r.lines != lines {
			return 0, fmt.Errorf("%d of %d lines reached the client (remote %v)", r.lines, lines, remote)
		}
		return float64(lines) / r.logSpan.Seconds(), nil
	}
	if err := row(runs, fmt.Sprintf("log throughput, %d lines, zero lost (lines/s, median)", lines), through); err != nil {
		return err
	}
	fmt.Printf("\nreproduce: go run ./bench/remote -runs %d -steps %d -lines %d\n", runs, steps, lines)
	return nil
}

// overhead prints the rows of a trivial step: submit to first step_start, per-step dispatch.
func (b *bench) overhead(runs, steps int) error {
	trivial := ir([]string{"true"}, false)
	first := func(remote bool) (float64, error) {
		r, err := b.runHM(trivial, remote, "")
		return ms(r.firstStart), err
	}
	if err := row(runs, "submit → first step_start (ms, median)", first); err != nil {
		return err
	}
	var cmds []string
	for range steps {
		cmds = append(cmds, "true")
	}
	chain := ir(cmds, true)
	dispatch := func(remote bool) (float64, error) {
		r, err := b.runHM(chain, remote, "")
		return float64(r.durationMS) / float64(steps), err
	}
	return row(runs, fmt.Sprintf("per-step dispatch, %d-step chain (ms/step, median)", steps), dispatch)
}

// row takes runs samples of each side, alternating, and prints their medians.
func row(runs int, name string, sample func(remote bool) (float64, error)) error {
	var local, remote []float64
	for range runs {
		l, err := sample(false)
		if err != nil {
			return err
		}
		r, err := sample(true)
		if err != nil {
			return err
		}
		local, remote = append(local, l), append(remote, r)
	}
	l, r := median(local), median(remote)
	fmt.Printf("| %s | %.1f | %.1f | %.2f× |\n", name, l, r, r/l)
	return nil
}

func (b *bench) token(data string, extra ...string) (string, error) {
	out, err := exec.Command(b.hm, append([]string{"server", "token", "create", "--data", data, "--org", "acme"}, extra...)...).Output()
	return strings.TrimSpace(string(out)), err
}

func (b *bench) start(env []string, args ...string) (*exec.Cmd, error) {
	c := exec.Command(b.hm, args...)
	c.Env = append(os.Environ(), env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c, c.Start()
}

func stop(c *exec.Cmd) {
	syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	c.Wait()
}

// result is one hm run as its --format json stream saw it.
type result struct {
	firstStart time.Duration // from process start
	logSpan    time.Duration // first step_log to build_end
	durationMS int64
	lines      int // step_log lines, checked 1..n in order when asked
}

func (b *bench) runHM(doc string, remote bool, check string) (result, error) {
	p := filepath.Join(b.dir, "p.json")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		return result{}, err
	}
	args := []string{"run", "--file", p, "--format", "json", "--no-cache"}
	if remote {
		args = append(args, "--backend", "remote", "--server", b.url, "--org", "acme")
	} else {
		args = append(args, "--backend", "host")
	}
	c := exec.Command(b.hm, args...)
	c.Dir = filepath.Join(b.dir, "src") // an empty source tree
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return result{}, err
	}
	c.Env = append(os.Environ(), "HM_STATE_DIR="+filepath.Join(b.dir, "local"), "HM_API_TOKEN="+b.userTok, "CI=true")
	out, err := c.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := c.Start(); err != nil {
		return result{}, err
	}
	var r result
	var firstLog time.Time
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var ev struct {
			Kind       string `json:"kind"`
			Line       string `json:"line"`
			ExitCode   int    `json:"exit_code"`
			DurationMS int64  `json:"duration_ms"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return r, err
		}
		switch ev.Kind {
		case "step_start":
			if r.firstStart == 0 {
				r.firstStart = time.Since(start)
			}
		case "step_log":
			if firstLog.IsZero() {
				firstLog = time.Now()
			}
			r.lines++
			if check != "" && ev.Line != strconv.Itoa(r.lines) {
				return r, fmt.Errorf("line %d is %q (remote %v)", r.lines, ev.Line, remote)
			}
		case "build_end":
			r.logSpan = time.Since(firstLog)
			r.durationMS = ev.DurationMS
			if ev.ExitCode != 0 {
				return r, fmt.Errorf("build exit %d (remote %v)", ev.ExitCode, remote)
			}
		}
	}
	if err := c.Wait(); err != nil {
		return r, fmt.Errorf("hm run (remote %v): %v", remote, err)
	}
	return r, nil
}

// ir is a flat IR of steps, with a barrier between each when chained.
func ir(cmds []string, chained bool) string {
	var steps []string
	for i, c := range cmds {
		if chained && i > 0 {
			steps = append(steps, `{"type":"wait"}`)
		}
		b, _ := json.Marshal(map[string]string{"type": "command", "key": "s" + strconv.Itoa(i), "cmd": c})
		steps = append(steps, string(b))
	}
	return `{"version":"0","default_image":"host","steps":[` + strings.Join(steps, ",") + `]}`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}
