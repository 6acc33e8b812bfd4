// Command replicas measures the server's scheduling path under load on each store, in one run
// and through the hm binary: `hm server` on SQLite, on PostgreSQL, and two replicas on
// PostgreSQL, each with 4 `hm agent --backend host` processes (split over the replicas), all on
// 127.0.0.1. A round submits -builds builds of -steps independent trivial steps at once from
// -clients clients over the HTTP API and watches each build's event stream to its end. It
// prints markdown rows:
//
//   - claims per second: steps claimed by agents / wall time of the round (submissions to
//     the last build_end), median of -runs rounds;
//
//   - submit → first step_start: from a build's createBuild request to its first step_start
//     frame on its event stream, p50 and p99 over every build of every round;
//
//   - per-step dispatch: a job's wait from claimable (released) to running on an agent
//     (the store's ready_at → started_at), p50 and p99 over every step of every round.
//
// The stores' rounds alternate (SQLite, PostgreSQL, 2 replicas, SQLite, …), so that the load
// of a shared machine weighs on each alike. PostgreSQL is the database of -pg (default
// HM_TEST_POSTGRES_URL), in a schema created for the run and dropped after it.
//
//	go run ./bench/replicas [-runs 3] [-builds 40] [-steps 5] [-clients 10] [-pg URL]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/postgres"
	"github.com/hmci/hm/internal/store/sqlite"
)

func main() {
	runs := flag.Int("runs", 3, "measured rounds per store")
	builds := flag.Int("builds", 40, "builds submitted at once per round")
	steps := flag.Int("steps", 5, "independent steps per build")
	clients := flag.Int("clients", 10, "clients submitting and watching")
	pg := flag.String("pg", os.Getenv("HM_TEST_POSTGRES_URL"), "a PostgreSQL database the bench may create a schema in")
	flag.Parse()
	if *pg == "" {
		fmt.Fprintln(os.Stderr, "bench/replicas: give -pg postgres://… (or set HM_TEST_POSTGRES_URL)")
		os.Exit(2)
	}
	if err := run(*runs, *builds, *steps, *clients, *pg); err != nil {
		fmt.Fprintln(os.Stderr, "bench/replicas:", err)
		os.Exit(1)
	}
}

// deployment is one store's servers and agents.
type deployment struct {
	name    string
	hm, dir string
	data    string
	db      []string // store flags
	urls    []string
	userTok string
	procs   []*exec.Cmd
	open    func(ctx context.Context) (store.Store, error)
}

// sample is what one round measured.
type sample struct {
	claimsPerSec float64
	firstStart   []float64 // ms per build
	dispatch     []float64 // ms per step
}

func run(runs, builds, steps, clients int, pgBase string) error {
	dir, err := os.MkdirTemp("", "hm-bench-replicas")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hm := filepath.Join(dir, "hm")
	if out, err := exec.Command("go", "build", "-o", hm, "./cmd/hm").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	pgURL, dropSchema, err := schema(pgBase)
	if err != nil {
		return err
	}
	defer dropSchema()
	pgURL2, dropSchema2, err := schema(pgBase)
	if err != nil {
		return err
	}
	defer dropSchema2()

	deps := []*deployment{
		{name: "SQLite, 1 server", hm: hm, dir: filepath.Join(dir, "sqlite")},
		{name: "PostgreSQL, 1 server", hm: hm, dir: filepath.Join(dir, "pg"), db: []string{"--db", pgURL}},
		{name: "PostgreSQL, 2 replicas", hm: hm, dir: filepath.Join(dir, "pg2"), db: []string{"--db", pgURL2}},
	}
	for i, d := range deps {
		replicas := 1
		if i == 2 {
			replicas = 2
		}
		if err := d.start(replicas); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		defer d.stop()
	}
	all := make([][]sample, len(deps))
	for r := range runs + 1 {
		for i, d := range deps {
			s, err := d.round(r, builds, steps, clients)
			if err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
			if r > 0 { // round 0 warms up (connections, caches, the first build of a pipeline)
				all[i] = append(all[i], s)
			}
		}
	}
	fmt.Printf("| measure (%d builds × %d steps at once, %d clients, 4 host agents) |", builds, steps, clients)
	for _, d := range deps {
		fmt.Printf(" %s |", d.name)
	}
	fmt.Print("\n|---|")
	for range deps {
		fmt.Print("---|")
	}
	fmt.Println()
	rowOf := func(name string, f func([]sample) float64) {
		fmt.Printf("| %s |", name)
		base := f(all[0])
		for i := range deps {
			v := f(all[i])
			if i == 0 {
				fmt.Printf(" %.1f |", v)
			} else {
				fmt.Printf(" %.1f (%.2f×) |", v, v/base)
			}
		}
		fmt.Println()
	}
	rowOf(fmt.Sprintf("claims per second (median of %d rounds)", runs), func(ss []sample) float64 {
		var v []float64
		for _, s := range ss {
			v = append(v, s.claimsPerSec)
		}
		return pct(v, 50)
	})
	pooled := func(pick func(sample) []float64, p float64) func([]sample) float64 {
		return func(ss []sample) float64 {
			var v []float64
			for _, s := range ss {
				v = append(v, pick(s)...)
			}
			return pct(v, p)
		}
	}
	first := func(s sample) []float64 { return s.firstStart }
	disp := func(s sample) []float64 { return s.dispatch }
	rowOf("submit → first step_start, p50 (ms)", pooled(first, 50))
	rowOf("submit → first step_start, p99 (ms)", pooled(first, 99))
	rowOf("per-step dispatch (claimable → running), p50 (ms)", pooled(disp, 50))
	rowOf("per-step dispatch (claimable → running), p99 (ms)", pooled(disp, 99))
	// Where the time goes: the store's latency per call as the servers' /metrics saw it over
	// the whole run (warm-up included), every replica's calls together.
	for _, op := range []string{"ClaimJob", "StartJob", "FinishJob", "AppendEventsFenced"} {
		fmt.Printf("| store latency, %s (ms, mean per call) |", op)
		var base float64
		for i, d := range deps {
			v, err := d.meanStore(op)
			if err != nil {
				return err
			}
			if i == 0 {
				base = v
				fmt.Printf(" %.2f |", v)
			} else {
				fmt.Printf(" %.2f (%.2f×) |", v, v/base)
			}
		}
		fmt.Println()
	}
	fmt.Printf("\nreproduce: go run ./bench/replicas -runs %d -builds %d -steps %d -clients %d\n", runs, builds, steps, clients)
	return nil
}

// schema makes a fresh schema of the database at base and returns a URL using it.
func schema(base string) (string, func(), error) {
	ctx := context.Background()
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, err
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "hm_bench_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String(), func() {
		conn, err := pgx.Connect(ctx, base)
		if err == nil {
			conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			conn.Close(ctx)
		}
	}, nil
}

func (d *deployment) hmCmd(args ...string) *exec.Cmd {
	return exec.Command(d.hm, args...)
}

func (d *deployment) token(extra ...string) (string, error) {
	args := append(append([]string{"server", "token", "create", "--data", d.data, "--org", "acme"}, d.db...), extra...)
	out, err := d.hmCmd(args...).Output()
	return strings.TrimSpace(string(out)), err
}

func (d *deployment) spawn(env []string, args ...string) error {
	c := d.hmCmd(args...)
	c.Env = append(os.Environ(), env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		return err
	}
	d.procs = append(d.procs, c)
	return nil
}

func (d *deployment) stop() {
	for _, c := range d.procs {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		c.Wait()
	}
}

func (d *deployment) start(replicas int) error {
	d.data = filepath.Join(d.dir, "data")
	var err error
	if d.userTok, err = d.token(); err != nil {
		return err
	}
	agentTok, err := d.token("--agent")
	if err != nil {
		return err
	}
	for range replicas {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := ln.Addr().String()
		ln.Close()
		if err := d.spawn(nil, append([]string{"server", "--data", d.data, "--listen", addr}, d.db...)...); err != nil {
			return err
		}
		for i := 0; ; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			if i > 200 {
				return errors.New("a server does not listen")
			}
			time.Sleep(50 * time.Millisecond)
		}
		d.urls = append(d.urls, "http://"+addr)
	}
	for i := range 4 {
		if err := d.spawn([]string{"HM_AGENT_TOKEN=" + agentTok}, "agent", "--server", d.urls[i%len(d.urls)],
			"--state", filepath.Join(d.dir, fmt.Sprintf("agent%d", i)), "--backend", "host"); err != nil {
			return err
		}
	}
	d.open = func(ctx context.Context) (store.Store, error) {
		if len(d.db) == 2 {
			return postgres.Open(ctx, d.db[1], postgres.Options{})
		}
		return sqlite.Open(ctx, d.data)
	}
	return d.call(0, "POST", "/api/v0/organizations/acme/pipelines",
		map[string]any{"name": "p", "repository": "local", "default_branch": "main"}, nil)
}

func (d *deployment) call(i int, method, path string, in, out any) error {
	b, _ := json.Marshal(in)
	req, _ := http.NewRequest(method, d.urls[i%len(d.urls)]+path, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+d.userTok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// round submits builds from clients at once, watches each to build_end and measures.
func (d *deployment) round(r, builds, steps, clients int) (sample, error) {
	var cmds []string
	for range steps {
		cmds = append(cmds, "true")
	}
	var sb []string
	for i, c := range cmds {
		b, _ := json.Marshal(map[string]string{"type": "command", "key": "s" + strconv.Itoa(i), "cmd": c})
		sb = append(sb, string(b))
	}
	doc := `{"version":"0","default_image":"host","steps":[` + strings.Join(sb, ",") + `]}`

	var mu sync.Mutex
	var s sample
	var errs []error
	var ids []string
	work := make(chan int)
	var wg sync.WaitGroup
	t0 := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				first, id, err := d.build(c, doc)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					s.firstStart = append(s.firstStart, first)
					ids = append(ids, id)
				}
				mu.Unlock()
			}
		}()
	}
	for b := range builds {
		work <- b
	}
	close(work)
	wg.Wait()
	wall := time.Since(t0)
	if len(errs) > 0 {
		return s, errors.Join(errs...)
	}
	s.claimsPerSec = float64(builds*steps) / wall.Seconds()

	ctx := context.Background()
	st, err := d.open(ctx)
	if err != nil {
		return s, err
	}
	defer st.Close()
	for _, id := range ids {
		js, err := st.ListJobs(ctx, id)
		if err != nil {
			return s, err
		}
		for _, j := range js {
			if j.State != store.JobPassed || j.Attempt != 1 {
				return s, fmt.Errorf("job %s %s attempt %d: every step must pass at its first claim", j.ID, j.State, j.Attempt)
			}
			s.dispatch = append(s.dispatch, float64(j.StartedAt.Sub(j.ReadyAt).Microseconds())/1000)
		}
	}
	return s, nil
}

// build submits one build through client c's replica, watches its event stream on the
// same replica and returns the submit → first step_start time (ms) and the build's id.
func (d *deployment) build(c int, doc string) (float64, string, error) {
	t0 := time.Now()
	var b struct {
		ID     string `json:"id"`
		Number int64  `json:"number"`
	}
	if err := d.call(c, "POST", "/api/v0/organizations/acme/pipelines/p/builds",
		map[string]any{"branch": "main", "commit": "0000000", "pipeline_ir": doc, "source": "api",
			"hm_options": map[string]any{"no_cache": true}}, &b); err != nil {
		return 0, "", err
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v0/organizations/acme/pipelines/p/builds/%d/events", d.urls[c%len(d.urls)], b.Number), nil)
	req.Header.Set("Authorization", "Bearer "+d.userTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var first time.Duration
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Kind     string `json:"kind"`
			ExitCode int    `json:"exit_code"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return 0, "", err
		}
		switch ev.Kind {
		case "step_start":
			if first == 0 {
				first = time.Since(t0)
			}
		case "build_end":
			if ev.ExitCode != 0 {
				return 0, "", fmt.Errorf("build %d exit %d", b.Number, ev.ExitCode)
			}
			return float64(first.Microseconds()) / 1000, b.ID, nil
		}
	}
	return 0, "", fmt.Errorf("build %d: the stream ended before build_end", b.Number)
}

// meanStore is the mean latency (ms) of the store operation op over every replica's
// hm_store_seconds.
func (d *deployment) meanStore(op string) (float64, error) {
	var sum, count float64
	for _, u := range d.urls {
		resp, err := http.Get(u + "/metrics")
		if err != nil {
			return 0, err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(raw), "\n") {
			for _, m := range []struct {
				name string
				to   *float64
			}{{`hm_store_seconds_sum{op="` + op + `"} `, &sum}, {`hm_store_seconds_count{op="` + op + `"} `, &count}} {
				if v, ok := strings.CutPrefix(line, m.name); ok {
					f, err := strconv.ParseFloat(v, 64)
					if err != nil {
						return 0, err
					}
					*m.to += f
				}
			}
		}
	}
	if count == 0 {
		return 0, fmt.Errorf("%s: no hm_store_seconds samples of %s", d.name, op)
	}
	return sum / count * 1000, nil
}

// pct is the p-th percentile (nearest rank).
func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	i := int(float64(len(v))*p/100+0.5) - 1
	return v[min(max(i, 0), len(v)-1)]
}
