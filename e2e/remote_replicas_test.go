package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/events"
)

// Several `hm server` replicas on one store (remote.md: any replica accepts submissions and
// serves watchers and agents; a build's scheduling survives the replica driving it). The
// replicas here share the data dir and the database, which SQLite needs (its blobs are files
// there; PostgreSQL's replicas need only a copy of the secrets key: TestReplicasOwnData);
// agents run the host backend, as in the fault tests.

// replicaSet is n servers of one cluster: the first is the cluster's own server, the others
// are started beside it on the same --data and store flags.
type replicaSet struct {
	*faultCluster
	addrs   []string
	servers []*faultProc
}

func newReplicas(t *testing.T, st remoteStore, n int, extra ...string) *replicaSet {
	t.Helper()
	c := faultNewCluster(t, st, extra...)
	rs := &replicaSet{faultCluster: c, addrs: []string{c.addr}, servers: []*faultProc{c.server}}
	for i := 1; i < n; i++ {
		addr := faultFreeAddr(t)
		c.addr = addr
		c.startServer()
		rs.addrs = append(rs.addrs, addr)
		rs.servers = append(rs.servers, c.server)
	}
	c.addr, c.server = rs.addrs[0], rs.servers[0]
	return rs
}

func (rs *replicaSet) url(i int) string { return "http://" + rs.addrs[i] }

// api does one JSON call with the user token against replica i; a non-2xx fails the test.
func (rs *replicaSet) api(t *testing.T, i int, method, path string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, rs.url(i)+path, body)
	req.Header.Set("Authorization", "Bearer "+rs.userTok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s on replica %d: %v", method, path, i, err)
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Errorf("%s %s on replica %d answered %d: %s", method, path, i, resp.StatusCode, raw)
		return
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Errorf("%s %s: %v", method, path, err)
		}
	}
}

// sseFrame is one frame of hm's event stream.
// agentAndBuild starts a host agent on replica 1 and submits, through replica 0, a build of
// faultNumbered(n) in a new pipeline p; it returns the build's API path.
func (rs *replicaSet) agentAndBuild(t *testing.T, n int) string {
	t.Helper()
	faultStart(t, "agent", []string{"HM_AGENT_TOKEN=" + rs.agentTok},
		"agent", "--server", rs.url(1), "--state", t.TempDir(), "--backend", "host")
	rs.api(t, 0, "POST", "/api/v0/organizations/acme/pipelines", map[string]any{"name": "p", "repository": "local", "default_branch": "main"}, nil)
	var b struct {
		Number int64 `json:"number"`
	}
	rs.api(t, 0, "POST", "/api/v0/organizations/acme/pipelines/p/builds",
		map[string]any{"branch": "main", "commit": "0000000", "pipeline_ir": faultNumbered(n), "source": "api"}, &b)
	if t.Failed() {
		t.FailNow()
	}
	return fmt.Sprintf("/api/v0/organizations/acme/pipelines/p/builds/%d", b.Number)
}

type sseFrame struct {
	id    int64
	event events.Event
	raw   string
}

// watchEvents reads the build's event stream from the replicas in order: from replica at[0],
// and whenever a stream ends before build_end (its replica died or drained), from the next
// replica of at (the last one again when they are used up), resumed with Last-Event-ID as the
// hm client does. Each frame goes to each as read; it returns them all.
func (rs *replicaSet) watchEvents(ctx context.Context, t *testing.T, path string, at []int, each func(sseFrame)) []sseFrame {
	var all []sseFrame
	var last int64
	for try := 0; ctx.Err() == nil; try++ {
		i := at[min(try, len(at)-1)]
		req, _ := http.NewRequestWithContext(ctx, "GET", rs.url(i)+path+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+rs.userTok)
		if last > 0 {
			req.Header.Set("Last-Event-ID", strconv.FormatInt(last, 10))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			select { // the replica is down: the next one
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		ended := false
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
		var f sseFrame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				f.id, _ = strconv.ParseInt(strings.TrimPrefix(line, "id: "), 10, 64)
			case strings.HasPrefix(line, "data: "):
				f.raw = strings.TrimPrefix(line, "data: ")
				if err := json.Unmarshal([]byte(f.raw), &f.event); err != nil {
					t.Errorf("event %d does not decode: %v: %s", f.id, err, f.raw)
				}
			case line == "" && f.raw != "":
				all = append(all, f)
				last = f.id
				if each != nil {
					each(f)
				}
				ended = f.event.Kind == events.KindBuildEnd
				f = sseFrame{}
			}
		}
		resp.Body.Close()
		if ended {
			return all
		}
	}
	t.Errorf("the event stream of %s did not reach build_end: %d events", path, len(all))
	return all
}

// checkStream: ids 1..n without gap or repeat, one build_start first and one build_end last,
// and a step's lines exactly once each, in order.
func checkStream(t *testing.T, who string, fs []sseFrame) {
	t.Helper()
	for i, f := range fs {
		if f.id != int64(i+1) {
			t.Errorf("%s: event %d has id %d: ids must be 1, 2, … without gap or repeat", who, i+1, f.id)
			return
		}
	}
	if len(fs) == 0 || fs[0].event.Kind != events.KindBuildStart || fs[len(fs)-1].event.Kind != events.KindBuildEnd {
		t.Errorf("%s: the stream does not run from build_start to build_end", who)
	}
	starts := 0
	for _, f := range fs {
		if f.event.Kind == events.KindBuildStart || f.event.Kind == events.KindBuildEnd {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("%s: %d build_start and build_end events, want one each", who, starts)
	}
}

// lines are the step_log lines of a stream, in order.
func lines(fs []sseFrame) []string {
	var out []string
	for _, f := range fs {
		if f.event.StepLog != nil {
			out = append(out, f.event.StepLog.Line)
		}
	}
	return out
}

// Two replicas on one store: a build submitted to replica 0 and watched from replica 1 (and
// from replica 0, resuming on replica 1 when it dies); replica 0, its driver, is killed -9
// mid-build. Replica 1 takes the build over once its lease lapsed; both watchers see the
// whole stream, in order, without duplicates, and the same one.
func TestReplicasDriverKilled(t *testing.T) { remoteStores(t, testReplicasDriverKilled) }

func testReplicasDriverKilled(t *testing.T, st remoteStore) {
	const n = 40
	rs := newReplicas(t, st, 2, "--build-lease-ttl", "2s", "--lease-ttl", "30s")
	// The agent talks to the survivor: the step goes on while its driver changes hands.
	path := rs.agentAndBuild(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	line10 := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	var onB, resumed []sseFrame
	wg.Add(2)
	go func() {
		defer wg.Done()
		onB = rs.watchEvents(ctx, t, path, []int{1}, func(f sseFrame) {
			if f.event.StepLog != nil && f.event.StepLog.Line == "10" {
				once.Do(func() { close(line10) })
			}
		})
	}()
	go func() { defer wg.Done(); resumed = rs.watchEvents(ctx, t, path, []int{0, 1}, nil) }()
	select {
	case <-line10:
	case <-ctx.Done():
		t.Fatal("line 10 never reached the watcher on replica 1")
	}
	rs.servers[0].kill9(t)
	wg.Wait()

	checkStream(t, "watcher on replica 1", onB)
	checkStream(t, "watcher resumed from replica 0 on replica 1", resumed)
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if got := lines(onB); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("step lines on replica 1: %v, want 1..%d exactly once", got, n)
	}
	if a, b := rawOf(onB), rawOf(resumed); a != b {
		t.Errorf("the two watchers saw different streams:\n%s\n----\n%s", a, b)
	}
	if end := onB[len(onB)-1].event.BuildEnd; end == nil || end.ExitCode != 0 {
		t.Errorf("build_end %s, want passed", onB[len(onB)-1].raw)
	}
	// build_end is appended before the build's row is rolled up: its state follows.
	var got struct {
		State string `json:"state"`
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if rs.api(t, 1, "GET", path, nil, &got); got.State != "running" {
			break
		}
	}
	if got.State != "passed" {
		t.Errorf("build state %q on replica 1, want passed", got.State)
	}
}

func rawOf(fs []sseFrame) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%d %s\n", f.id, f.raw)
	}
	return b.String()
}

// metric reads one sample of replica i's /metrics.
func (rs *replicaSet) metric(t *testing.T, i int, name string) float64 {
	t.Helper()
	resp, err := http.Get(rs.url(i) + "/metrics")
	if err != nil {
		t.Fatalf("/metrics of replica %d: %v", i, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("/metrics of replica %d has no %s", i, name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// A bounded load: 50 concurrent builds from 10 clients over 2 replicas and 4 agents, three
// rounds. Every step appends its name to a counter file of its own; every build must end with
// its expected result (one in five fails on purpose), each step must have run exactly once
// (one line in its file, one step_start in the stream), and no build may be left unfinished.
// Clients submit to one replica and watch from the other.
func TestReplicasLoad(t *testing.T) {
	rs := newReplicas(t, storePostgres, 2, "--lease-ttl", "30s")
	for i := range 4 {
		faultStart(t, fmt.Sprintf("agent%d", i), []string{"HM_AGENT_TOKEN=" + rs.agentTok},
			"agent", "--server", rs.url(i%2), "--state", t.TempDir(), "--backend", "host", "--slots", "4")
	}
	rs.api(t, 0, "POST", "/api/v0/organizations/acme/pipelines", map[string]any{"name": "p", "repository": "local", "default_branch": "main"}, nil)
	counters := t.TempDir()
	const clients, perClient, steps, rounds = 10, 5, 3, 3
	for round := 1; round <= rounds; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var wg sync.WaitGroup
		for c := range clients {
			for k := range perClient {
				wg.Add(1)
				go func() {
					defer wg.Done()
					name := fmt.Sprintf("r%d-c%d-b%d", round, c, k)
					fail := k == perClient-1 // one in five fails
					var cmds []string
					for s := range steps {
						cmd := fmt.Sprintf("echo run >> %s/%s-%d; echo %s-%d", counters, name, s, name, s)
						if fail && s == steps-1 {
							cmd += "; exit 3"
						}
						cmds = append(cmds, cmd)
					}
					var b struct {
						Number int64 `json:"number"`
					}
					rs.api(t, c%2, "POST", "/api/v0/organizations/acme/pipelines/p/builds",
						map[string]any{"branch": "main", "commit": "0000000", "pipeline_ir": remoteIR(cmds...), "source": "api",
							"hm_options": map[string]any{"keep_going": true}}, &b)
					if b.Number == 0 {
						return
					}
					path := fmt.Sprintf("/api/v0/organizations/acme/pipelines/p/builds/%d", b.Number)
					fs := rs.watchEvents(ctx, t, path, []int{(c + 1) % 2}, nil)
					checkStream(t, name, fs)
					startsOf := map[string]int{}
					for _, f := range fs {
						if f.event.StepStart != nil {
							startsOf[f.event.StepStart.StepID]++
						}
					}
					for id, n := range startsOf {
						if n != 1 {
							t.Errorf("%s: step %s started %d times", name, id, n)
						}
					}
					if len(startsOf) != steps {
						t.Errorf("%s: %d steps started, want %d", name, len(startsOf), steps)
					}
					want := 0
					if fail {
						want = 1
					}
					if len(fs) > 0 {
						if end := fs[len(fs)-1].event.BuildEnd; end == nil || end.ExitCode != want {
							t.Errorf("%s: build_end %s, want exit_code %d", name, fs[len(fs)-1].raw, want)
						}
					}
				}()
			}
		}
		wg.Wait()
		cancel()
		if t.Failed() {
			t.FailNow()
		}
		for c := range clients {
			for k := range perClient {
				for s := range steps {
					f := filepath.Join(counters, fmt.Sprintf("r%d-c%d-b%d-%d", round, c, k, s))
					b, err := os.ReadFile(f)
					if err != nil || string(b) != "run\n" {
						t.Errorf("round %d: step %s ran %d times, want once (%v)", round, filepath.Base(f), strings.Count(string(b), "run"), err)
					}
				}
			}
		}
	}
	// None lost: nothing unfinished; and the replicas' claims add up to the steps run.
	ctx := context.Background()
	s := rs.openStore(ctx)
	defer s.Close()
	if bs, err := s.ListUnfinishedBuilds(ctx); err != nil || len(bs) != 0 {
		t.Errorf("unfinished builds left: %d (%v)", len(bs), err)
	}
	claims := rs.metric(t, 0, "hm_claims_total") + rs.metric(t, 1, "hm_claims_total")
	if want := float64(clients * perClient * steps * rounds); claims != want {
		t.Errorf("hm_claims_total over both replicas: %v, want %v (one claim per step)", claims, want)
	}
}

// SIGTERM of the replica driving a build (a rolling restart behind a load balancer): /readyz
// answers 503 at once while it keeps serving for --drain-delay; then an agent's claim long
// poll ends with an empty answer (204, not an error), the event stream watched on it ends and
// resumes on the other replica with Last-Event-ID, and its build lease is released, so the
// other replica carries the build on at once (the lease's TTL here is ten minutes: only a
// release lets the build finish within the test). The stream is complete, in order, without
// duplicates.
func TestReplicasDrain(t *testing.T) { remoteStores(t, testReplicasDrain) }

func testReplicasDrain(t *testing.T, st remoteStore) {
	const n = 40
	rs := newReplicas(t, st, 2, "--build-lease-ttl", "10m", "--drain-delay", "1s")
	path := rs.agentAndBuild(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	line10 := make(chan struct{})
	var once sync.Once
	var fs []sseFrame
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		fs = rs.watchEvents(ctx, t, path, []int{0, 1}, func(f sseFrame) {
			if f.event.StepLog != nil && f.event.StepLog.Line == "10" {
				once.Do(func() { close(line10) })
			}
		})
	}()
	select {
	case <-line10:
	case <-ctx.Done():
		t.Fatal("line 10 never reached the watcher")
	}

	// An agent of replica 0 long-polling for work (the one step is running elsewhere).
	agentCall := func(p string, body any) (*http.Response, error) {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, "POST", rs.url(0)+p, strings.NewReader(string(raw)))
		req.Header.Set("Authorization", "Bearer "+rs.agentTok)
		req.Header.Set("Content-Type", "application/json")
		return http.DefaultClient.Do(req)
	}
	resp, err := agentCall(agentproto.PathRegister, agentproto.Register{AgentID: "poller", Name: "poller", Backend: "host"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("register: %v %v", resp, err)
	}
	resp.Body.Close()
	claimed := make(chan error, 1)
	go func() {
		resp, err := agentCall(agentproto.PathClaim, agentproto.Claim{AgentID: "poller", Slots: 1, WaitSeconds: 30})
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				err = fmt.Errorf("claim answered %d, want 204 (nothing, come back)", resp.StatusCode)
			}
		}
		claimed <- err
	}()
	time.Sleep(200 * time.Millisecond) // the poll is in the server's wait

	rs.servers[0].cmd.Process.Signal(syscall.SIGTERM)
	// Until the signal is handled /readyz may still say ready; it must say 503 before the
	// replica stops listening.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r, err := http.Get(rs.url(0) + "/readyz")
		if err != nil {
			t.Fatalf("replica 0 stopped listening without answering /readyz 503 first: %v", err)
		}
		r.Body.Close()
		if r.StatusCode == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never answered 503 after SIGTERM")
		}
	}
	select {
	case err := <-claimed:
		if err != nil {
			t.Errorf("the drained long poll: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the claim long poll did not end on drain")
	}
	select {
	case <-rs.servers[0].done:
		if code := rs.servers[0].cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("replica 0 exited %d after SIGTERM, want 0:\n%s", code, rs.servers[0].log.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("replica 0 did not stop on SIGTERM")
	}
	<-watched
	checkStream(t, "watcher of replica 0 resumed on replica 1", fs)
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if got := lines(fs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("step lines %v, want 1..%d exactly once", got, n)
	}
	if end := fs[len(fs)-1].event.BuildEnd; end == nil || end.ExitCode != 0 {
		t.Errorf("build_end %s, want exit_code 0", fs[len(fs)-1].raw)
	}
}
