package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/postgres"
	"github.com/hmci/hm/internal/store/sqlite"
)

// Faults of the remote path through the built binaries: an hm server on 127.0.0.1, agents on
// the host backend (no VM to boot, so a fault lands mid-step within a second; the protocol
// under test is the same for every backend) and hm run --backend remote. Every process is
// killed and waited for at cleanup.

// faultProc is one hm process of a fault test.
type faultProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *faultBuffer
}

type faultBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *faultBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *faultBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// faultStart starts hm args in its own process group; cleanup kills the group (the process
// and any step it left behind) and waits for it.
func faultStart(t *testing.T, name string, env []string, args ...string) *faultProc {
	t.Helper()
	c := exec.Command(hmBin, args...)
	c.Env = append(os.Environ(), env...)
	c.Dir = t.TempDir()
	p := &faultProc{name: name, cmd: c, done: make(chan struct{}), log: &faultBuffer{}}
	c.Stdout, c.Stderr = p.log, p.log
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.Wait(); close(p.done) }()
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, p.log.String())
		}
	})
	return p
}

// kill9 kills the process itself (not its group: a lost machine's steps are not ours to
// reap) and waits for it.
func (p *faultProc) kill9(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// faultCluster is a server's data dir, address and tokens.
type faultCluster struct {
	t                 *testing.T
	data, addr        string
	userTok, agentTok string
	serverArgs        []string
	db                []string // the store flags beside --data: one database for every start
	server            *faultProc
}

func faultFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// faultNewCluster creates the data dir and tokens and starts hm server with extra flags.
func faultNewCluster(t *testing.T, st remoteStore, extra ...string) *faultCluster {
	t.Helper()
	c := &faultCluster{t: t, data: t.TempDir(), addr: faultFreeAddr(t), serverArgs: extra, db: st.dbArgs(t)}
	c.userTok = c.token()
	c.agentTok = c.token("--agent")
	c.startServer()
	return c
}

func (c *faultCluster) token(extra ...string) string {
	c.t.Helper()
	out, err := exec.Command(hmBin, append(append([]string{"server", "token", "create", "--data", c.data, "--org", "acme"}, c.db...), extra...)...).Output()
	if err != nil {
		c.t.Fatalf("token create: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func (c *faultCluster) url() string { return "http://" + c.addr }

// startServer starts hm server on c.addr and waits until it answers ping.
func (c *faultCluster) startServer() {
	c.t.Helper()
	c.server = faultStart(c.t, "server", nil, append(append([]string{"server", "--data", c.data, "--listen", c.addr}, c.db...), c.serverArgs...)...)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := net.DialTimeout("tcp", c.addr, time.Second); err == nil {
			conn.Close()
			return
		}
		select {
		case <-c.server.done:
			c.t.Fatalf("server exited:\n%s", c.server.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.t.Fatalf("server does not listen on %s", c.addr)
}

// agent starts a host-backend agent against url (the server, or a proxy before it).
func (c *faultCluster) agent(name, url string) *faultProc {
	c.t.Helper()
	return faultStart(c.t, name, []string{"HM_AGENT_TOKEN=" + c.agentTok},
		"agent", "--server", url, "--state", c.t.TempDir(), "--backend", "host")
}

// faultRun is hm run --backend remote --format json, read event by event.
type faultRun struct {
	cmd    *exec.Cmd
	events chan events.Event
	done   chan struct{}
	stderr *faultBuffer
	code   int
	all    []events.Event
	raw    []string
}

func (c *faultCluster) run(doc string) *faultRun {
	c.t.Helper()
	e := newEnv(c.t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c.t.Cleanup(cancel)
	cmd := e.cmd(ctx, "run", "--file", e.writeIR("p.json", doc), "--backend", "remote",
		"--server", c.url()+"/", "--org", "acme", "--format", "json")
	cmd.Env = append(cmd.Env, "HM_API_TOKEN="+c.userTok)
	r := &faultRun{cmd: cmd, events: make(chan events.Event, 1<<16), done: make(chan struct{}), stderr: &faultBuffer{}}
	cmd.Stderr = r.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		defer close(r.events)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for sc.Scan() {
			var ev events.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				r.events <- ev
			}
			r.raw = append(r.raw, sc.Text())
		}
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			r.code = -1
		}
	}()
	c.t.Cleanup(func() { cmd.Process.Kill(); <-r.done })
	return r
}

// until reads events until one satisfies f; false when the run ended first.
func (r *faultRun) until(t *testing.T, f func(events.Event) bool) bool {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case ev, ok := <-r.events:
			if !ok {
				return false
			}
			r.all = append(r.all, ev)
			if f(ev) {
				return true
			}
		case <-timeout:
			t.Fatalf("no such event within 90 s; so far:\n%s", strings.Join(r.raw, "\n"))
		}
	}
}

// wait reads the rest of the stream and returns hm run's exit code.
func (r *faultRun) wait(t *testing.T) int {
	t.Helper()
	r.until(t, func(events.Event) bool { return false })
	<-r.done
	return r.code
}

func (r *faultRun) dump() string { return strings.Join(r.raw, "\n") + "\n" + r.stderr.String() }

// faultLine matches a step_log line.
func faultLine(line string) func(events.Event) bool {
	return func(ev events.Event) bool { return ev.StepLog != nil && ev.StepLog.Line == line }
}

// faultNumbered is a step printing 1..n, one line every 100 ms.
func faultNumbered(n int) string {
	return remoteIR(fmt.Sprintf("for i in $(seq 1 %d); do echo $i; sleep 0.1; done", n))
}

// faultExactlyOnce checks the step's stdout lines are 1..n, each once, in order.
func faultExactlyOnce(t *testing.T, r *faultRun, n int) {
	t.Helper()
	var got []string
	for _, ev := range r.all {
		if ev.StepLog != nil {
			got = append(got, ev.StepLog.Line)
		}
	}
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("step lines %v, want 1..%d exactly once\n%s", got, n, r.dump())
	}
}

// kill -9 of the agent running a step: its lease lapses, the step is retried on the other
// agent (attempt 2) and the build passes.
func TestFaultAgentKilledRetriedElsewhere(t *testing.T) {
	remoteStores(t, testFaultAgentKilledRetriedElsewhere)
}

func testFaultAgentKilledRetriedElsewhere(t *testing.T, st remoteStore) {
	c := faultNewCluster(t, st, "--lease-ttl", "2s")
	first := c.agent("agent-1", c.url())
	r := c.run(remoteIR("echo started; sleep 3; echo finished"))
	if !r.until(t, faultLine("started")) {
		t.Fatalf("run ended before the step started:\n%s", r.dump())
	}
	second := c.agent("agent-2", c.url())
	first.kill9(t)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, r.dump())
	}
	// The infrastructure retry is the same scheduler attempt (events.md's attempt counts
	// retry: attempts): the lost run's lines stay and the retry's follow.
	var lines []string
	var end *events.StepEnd
	for _, ev := range r.all {
		if ev.StepLog != nil {
			lines = append(lines, ev.StepLog.Line)
		}
		if ev.StepEnd != nil {
			end = ev.StepEnd
		}
	}
	if end == nil || end.ExitCode != 0 {
		t.Errorf("step_end %+v, want exit 0\n%s", end, r.dump())
	}
	if got := strings.Join(lines, ","); got != "started,started,finished" {
		t.Errorf("step lines %s, want started (lost agent), started,finished (retry)", got)
	}
	// The agent logs the step's end once the server answered its Finish, which can be after
	// the client saw the build end: the answer waits up to agentproto.FinishNextWait for a
	// next step to hand out.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(second.log.String(), "attempt=2 exit_code=0") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(second.log.String(), "attempt=2 exit_code=0") {
		t.Errorf("agent-2 did not run the step:\n%s", second.log.String())
	}
}

// With no other agent and no retry budget (--agent-retries 0), the step fails agent_lost once
// the lease lapses.
func TestFaultAgentKilledAgentLost(t *testing.T) { remoteStores(t, testFaultAgentKilledAgentLost) }

func testFaultAgentKilledAgentLost(t *testing.T, st remoteStore) {
	const ttl = 2 * time.Second
	c := faultNewCluster(t, st, "--lease-ttl", ttl.String(), "--agent-retries", "0")
	a := c.agent("agent", c.url())
	r := c.run(remoteIR("echo started; sleep 30"))
	if !r.until(t, faultLine("started")) {
		t.Fatalf("run ended before the step started:\n%s", r.dump())
	}
	a.kill9(t)
	killed := time.Now()
	var end *events.StepEnd
	r.until(t, func(ev events.Event) bool { end = ev.StepEnd; return end != nil })
	// The reaper runs every second: the lease TTL plus a reap plus slack for a shared machine.
	if d := time.Since(killed); d > ttl+3*time.Second {
		t.Errorf("step_end %v after the kill, want within the lease TTL %v (+ reap)", d, ttl)
	}
	if code := r.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, r.dump())
	}
	if end == nil || end.ExitCode == 0 {
		t.Fatalf("step_end %+v, want a failure\n%s", end, r.dump())
	}
	if !strings.Contains(r.dump(), "agent_lost") {
		t.Errorf("no agent_lost in the client's stream:\n%s", r.dump())
	}
	// After the build: the job's error, and what to do about it.
	if w := "\nerror[agent_lost]: step 'a' could not run: "; strings.Count(r.stderr.String(), w) != 1 ||
		!strings.Contains(r.stderr.String(), "\n  fix    the agent running it stopped answering") {
		t.Errorf("stderr has not once %q and its fix:\n%s", w, r.stderr.String())
	}
}

// kill -9 of the server mid-build, restarted on the same data dir and port: the build
// completes and the client's stream has every line exactly once. The killed server's build
// lease stays until it lapses (--build-lease-ttl), then the restarted server carries it on.
func TestFaultServerKilledMidBuild(t *testing.T) { remoteStores(t, testFaultServerKilledMidBuild) }

func testFaultServerKilledMidBuild(t *testing.T, st remoteStore) {
	const n = 40
	c := faultNewCluster(t, st, "--lease-ttl", "30s", "--build-lease-ttl", "3s")
	c.agent("agent", c.url())
	r := c.run(faultNumbered(n))
	if !r.until(t, faultLine("10")) {
		t.Fatalf("run ended before line 10:\n%s", r.dump())
	}
	c.server.kill9(t)
	if free := c.buildLeaseFree(); free {
		t.Errorf("the build lease of a killed server is free: it was released, not left to lapse")
	}
	c.startServer()
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, r.dump())
	}
	faultExactlyOnce(t, r, n)
}

// SIGTERM of the server mid-build (a rolling restart): it releases its build lease as it
// stops, so the restarted server carries the build on at once (a lease left to lapse would
// hold it for --build-lease-ttl, here far longer than the test waits); the build completes
// and the client's stream has every line exactly once.
func TestFaultServerRestartedMidBuild(t *testing.T) {
	remoteStores(t, testFaultServerRestartedMidBuild)
}

func testFaultServerRestartedMidBuild(t *testing.T, st remoteStore) {
	const n = 40
	c := faultNewCluster(t, st, "--build-lease-ttl", "10m")
	c.agent("agent", c.url())
	r := c.run(faultNumbered(n))
	if !r.until(t, faultLine("10")) {
		t.Fatalf("run ended before line 10:\n%s", r.dump())
	}
	c.server.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.server.done:
	case <-time.After(40 * time.Second):
		t.Fatalf("the server did not stop on SIGTERM:\n%s", c.server.log.String())
	}
	if !c.buildLeaseFree() {
		t.Fatalf("the stopped server kept its build lease:\n%s", c.server.log.String())
	}
	c.startServer()
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, r.dump())
	}
	faultExactlyOnce(t, r, n)
}

// buildLeaseFree says whether another driver could take the cluster's one unfinished build
// now: a probe acquires its lease (and gives it back at once) on the server's store.
func (c *faultCluster) buildLeaseFree() bool {
	c.t.Helper()
	ctx := context.Background()
	st := c.openStore(ctx)
	defer st.Close()
	bs, err := st.ListUnfinishedBuilds(ctx)
	if err != nil || len(bs) != 1 {
		c.t.Fatalf("unfinished builds %v (%v), want one", bs, err)
	}
	epoch, err := st.AcquireBuildLease(ctx, bs[0].ID, "e2e-probe", time.Now(), time.Second)
	if store.IsConflict(err) {
		return false
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if err := st.ReleaseBuildLease(ctx, bs[0].ID, "e2e-probe", epoch); err != nil {
		c.t.Fatal(err)
	}
	return true
}

// openStore opens the cluster's store as its server does: --db when given, else the data dir.
func (c *faultCluster) openStore(ctx context.Context) store.Store {
	c.t.Helper()
	var st store.Store
	var err error
	if len(c.db) == 2 && c.db[0] == "--db" {
		st, err = postgres.Open(ctx, c.db[1], postgres.Options{})
	} else {
		st, err = sqlite.Open(ctx, c.data)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

// An agent's connection cut for 5 s mid-step (a proxy before the server stops forwarding):
// it resumes and nothing is lost or retried.
func TestFaultAgentConnectionCut(t *testing.T) { remoteStores(t, testFaultAgentConnectionCut) }

func testFaultAgentConnectionCut(t *testing.T, st remoteStore) {
	const n = 60
	c := faultNewCluster(t, st, "--lease-ttl", "20s")
	px := faultNewProxy(t, c.addr)
	c.agent("agent", "http://"+px.addr)
	r := c.run(faultNumbered(n))
	if !r.until(t, faultLine("10")) {
		t.Fatalf("run ended before line 10:\n%s", r.dump())
	}
	px.cut(5 * time.Second)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, r.dump())
	}
	faultExactlyOnce(t, r, n)
	for _, ev := range r.all {
		if ev.StepEnd != nil && ev.StepEnd.Attempt != 1 {
			t.Errorf("step_end on attempt %d, want 1 (no retry)", ev.StepEnd.Attempt)
		}
	}
}

// faultProxy forwards TCP connections to a target; cut closes every open connection and
// black-holes new ones (accepted, never answered) for a while.
type faultProxy struct {
	addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	paused bool
	wg     sync.WaitGroup
}

func faultNewProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[in] = true
		paused := p.paused
		p.mu.Unlock()
		if paused {
			continue // held open, never forwarded, closed when the cut ends
		}
		p.wg.Add(1)
		go p.forward(in)
	}
}

func (p *faultProxy) forward(in net.Conn) {
	defer p.wg.Done()
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	p.conns[out] = true
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
	go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

func (p *faultProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// cut drops every connection and black-holes new ones for d, then forwards again.
func (p *faultProxy) cut(d time.Duration) {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	p.closeAll()
	time.Sleep(d)
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	p.closeAll() // the black-holed ones
}
