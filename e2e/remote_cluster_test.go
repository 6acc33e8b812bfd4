package e2e

// The remote e2e fixture: a built hm server and two sandbox agents (TestRemoteParity).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// remoteCluster is a built `hm server` (its own data dir, on a free loopback port) with two
// `hm agent --backend sandbox` processes (each its own state dir), all stopped and waited for
// at cleanup, with a check that none of them left a process or a sandbox behind.
type remoteCluster struct {
	t         *testing.T
	root      string // every dir of the cluster is under it: processes naming it are its own
	url       string
	userToken string
	agents    []remoteAgent
	db        []string // the server's store flags (dbArgs)
}

type remoteAgent struct {
	state string
	log   string
}

// remoteImages maps the images of the cases onto the sandbox's `host` pseudo-image, locally
// and remotely (hm_options.map_image), so no agent needs an imported image.
var remoteImages = []string{"--map-image", "ubuntu:24.04=host", "--map-image", "busybox=host"}

func remoteStart(t *testing.T, st remoteStore) *remoteCluster {
	t.Helper()
	if !sandboxAvailable(t) {
		t.Skip("the remote parity suite runs sandbox agents")
	}
	root, err := os.MkdirTemp("", "hm-e2e-remote")
	if err != nil {
		t.Fatal(err)
	}
	c := &remoteCluster{t: t, root: root}
	data := filepath.Join(root, "server")
	db := st.dbArgs(t)
	c.db = db
	token := func(extra ...string) string {
		out, err := exec.Command(hmBin, append(append([]string{"server", "token", "create", "--data", data, "--org", "acme"}, db...), extra...)...).Output()
		if err != nil {
			t.Fatalf("hm server token create %v: %v", extra, err)
		}
		return strings.TrimSpace(string(out))
	}
	c.userToken = token()
	agentToken := token("--agent")

	var procs []*exec.Cmd
	t.Cleanup(func() { c.stop(procs) })
	start := func(name string, env []string, args ...string) (*exec.Cmd, string) {
		logPath := filepath.Join(root, name+".log")
		f, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(hmBin, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		return cmd, logPath
	}
	// The server first (stopped last: procs are stopped in reverse).
	_, srvLog := start("server", nil, append([]string{"server", "--data", data, "--listen", "127.0.0.1:0"}, db...)...)
	addr := remoteWaitLog(t, srvLog, regexp.MustCompile(`msg="hm server listening" addr=(\S+)`))
	c.url = "http://" + addr
	for i := 1; i <= 2; i++ {
		a := remoteAgent{state: filepath.Join(root, fmt.Sprintf("agent%d", i))}
		_, a.log = start(fmt.Sprintf("agent%d", i), []string{"HM_AGENT_TOKEN=" + agentToken},
			"agent", "--server", c.url, "--state", a.state, "--backend", "sandbox", "--slots", "2")
		remoteWaitLog(t, a.log, regexp.MustCompile(`msg="hm agent (registered)"`))
		c.agents = append(c.agents, a)
	}
	return c
}

// stop ends the agents (SIGTERM: they drain) then the server, waits for each, and checks that
// nothing of the cluster is left: no process naming its dirs, no sandbox of an agent.
func (c *remoteCluster) stop(procs []*exec.Cmd) {
	t := c.t
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("%v did not stop within 20s of SIGTERM: killed", p.Args[:2])
			p.Process.Kill()
			<-done
		}
	}
	if left := processesWith(c.root); len(left) > 0 {
		t.Errorf("cluster processes left: %v", left)
	}
	for _, a := range c.agents {
		if left := remoteLeftovers(t, a.state); len(left) > 0 {
			t.Errorf("agent %s left: %v", a.state, left)
		}
	}
	if t.Failed() {
		for _, n := range []string{"server", "agent1", "agent2"} {
			b, _ := os.ReadFile(filepath.Join(c.root, n+".log"))
			t.Logf("%s log (tail):\n%s", n, remoteTail(string(b), 3000))
		}
	}
	os.RemoveAll(c.root)
}

// remoteLeftovers is sandboxLeftovers of an agent's state dir but for its ephemeral
// snapshots: the agent removes those when its alive call says so, up to 10 s after their
// build ended, which the "ephemeral snapshots dropped" case waits for and checks.
func remoteLeftovers(t *testing.T, state string) []string {
	var out []string
	for _, l := range sandboxLeftovers(t, state) {
		if m, _ := filepath.Match(filepath.Join(state, "sandbox/snaps/e-*"), l); !m {
			out = append(out, l)
		}
	}
	return out
}

// remoteWaitLog waits for re in the log file and returns its first group.
func remoteWaitLog(t *testing.T, path string, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if m := re.FindSubmatch(b); m != nil {
			return string(m[1])
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s never logged %s:\n%s", path, re, b)
	return ""
}

func remoteTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// agentSteps counts, per agent, the steps with key that it finished.
func (c *remoteCluster) agentSteps(key string) []int {
	var out []int
	for _, a := range c.agents {
		b, _ := os.ReadFile(a.log)
		out = append(out, len(regexp.MustCompile(`msg="step finished" \S+ step=`+regexp.QuoteMeta(key)+` `).FindAll(b, -1)))
	}
	return out
}

// remoteCmd is `hm run --backend remote --format json` against the cluster, in e's source dir.
func (c *remoteCluster) remoteCmd(ctx context.Context, e *env, args ...string) *exec.Cmd {
	all := append([]string{"run", "--backend", "remote", "--server", c.url, "--org", "acme", "--format", "json"}, remoteImages...)
	cmd := e.cmd(ctx, append(all, args...)...)
	cmd.Env = append(cmd.Env, "HM_API_TOKEN="+c.userToken)
	return cmd
}

func (c *remoteCluster) run(e *env, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := c.remoteCmd(ctx, e, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("hm run --backend remote %v: %v", args, err)
	}
	return r
}

// remoteLocal runs the same build locally on the sandbox backend.
func remoteLocal(e *env, args ...string) result {
	e.t.Helper()
	return e.run(append(append([]string{"run", "--backend", "sandbox", "--format", "json"}, remoteImages...), args...)...)
}

// remoteBuild is a build's NDJSON output reduced to what local and remote must share: per step
// key, its events with ids, timings and runner names removed, log lines apart by stream (the
// relative order of stdout and stderr is not defined); build_start and build_end likewise.
type remoteBuild struct {
	start, end string
	steps      map[string][]string            // events by step key; a run of step_log is "step_log*"
	logs       map[string]map[string][]string // lines by step key and stream
	accepted   bool                           // the output began with build_accepted
	missNotes  map[string][]string            // the "hm: cache miss: …" lines by step key
	entries    map[string]bool                // step_cache_hit.entry is set, by step id
}

var entryID = regexp.MustCompile(`entry [0-9a-f]{12}\b`)

func remoteReduce(t *testing.T, out string) remoteBuild {
	t.Helper()
	b := remoteBuild{steps: map[string][]string{}, logs: map[string]map[string][]string{}, missNotes: map[string][]string{}, entries: map[string]bool{}}
	keys := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	n := 0
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad NDJSON line %q: %v", truncate(sc.Text()), err)
		}
		n++
		kind, _ := ev["kind"].(string)
		if kind == "build_accepted" {
			if n != 1 {
				t.Errorf("build_accepted is event %d, not the first", n)
			}
			b.accepted = true
			continue
		}
		id, _ := ev["step_id"].(string)
		if kind == "chain_failed" {
			id, _ = ev["failed_step_id"].(string)
			delete(ev, "failed_step_id")
		}
		if kind == "step_queued" {
			keys[id], _ = ev["key"].(string)
		}
		for _, k := range []string{"step_id", "run_id", "ts", "started_at", "duration_ms", "runner"} {
			delete(ev, k)
		}
		// Snapshot and entry ids name things on different machines: only whether there is one
		// is compared.
		if e, ok := ev["entry"]; ok {
			// Compared on its own with the miss lines (the cache case).
			b.entries[id] = e != nil
			delete(ev, "entry")
		}
		for _, k := range []string{"snapshot", "tag"} {
			if s, ok := ev[k]; ok && s != nil {
				ev[k] = "<id>"
			}
		}
		if p, ok := ev["plan"].(map[string]any); ok {
			delete(p, "default_runner")
		}
		if kind == "step_log" {
			key := keys[id]
			if b.logs[key] == nil {
				b.logs[key] = map[string][]string{}
			}
			stream, _ := ev["stream"].(string)
			line, _ := ev["line"].(string)
			if strings.HasPrefix(line, "hm: cache miss: ") {
				// Compared on their own: see the cache case. The entry ids name the local
				// registry's entry and the server's: the same wording, another name.
				b.missNotes[key] = append(b.missNotes[key], entryID.ReplaceAllString(line, "entry <id>"))
				continue
			}
			b.logs[key][stream] = append(b.logs[key][stream], line)
			delete(ev, "line")
			delete(ev, "stream")
		}
		enc, _ := json.Marshal(ev) // sorted keys
		switch {
		case kind == "build_start":
			b.start = string(enc)
		case kind == "build_end":
			b.end = string(enc)
		case id != "":
			key, ok := keys[id]
			if !ok {
				t.Fatalf("%s of step %s before its step_queued", kind, id)
			}
			s := b.steps[key]
			if kind == "step_log" {
				if len(s) > 0 && s[len(s)-1] == "step_log*" {
					continue
				}
				b.steps[key] = append(s, "step_log*")
				continue
			}
			b.steps[key] = append(s, string(enc))
		default:
			t.Errorf("unexpected event %s", enc)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return b
}

// remoteSame reports how the remote build differs from the local one: step results and event
// sequences; log lines too when lines is set.
func remoteSame(t *testing.T, local, remote result, lines bool) (remoteBuild, remoteBuild) {
	t.Helper()
	if local.code != remote.code {
		t.Errorf("exit %d remotely, %d locally\nremote stderr:\n%s\nlocal stderr:\n%s", remote.code, local.code, remote.stderr, local.stderr)
	}
	l, r := remoteReduce(t, local.stdout), remoteReduce(t, remote.stdout)
	if !r.accepted {
		t.Errorf("the remote output does not begin with build_accepted")
	}
	if diff := cmp.Diff(l.start, r.start); diff != "" {
		t.Errorf("build_start (-local +remote):\n%s", diff)
	}
	if diff := cmp.Diff(l.end, r.end); diff != "" {
		t.Errorf("build_end (-local +remote):\n%s", diff)
	}
	if diff := cmp.Diff(l.steps, r.steps); diff != "" {
		t.Errorf("step events (-local +remote):\n%s", remoteTail(diff, 6000))
	}
	if lines {
		if diff := cmp.Diff(l.logs, r.logs); diff != "" {
			t.Errorf("log lines (-local +remote):\n%s", remoteTail(diff, 6000))
		}
	}
	return l, r
}

// remoteUntilReady runs cmd, sends SIGINT once a step logged "ready", and returns the result.
func remoteUntilReady(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	sc := bufio.NewScanner(out)
	sent := false
	for sc.Scan() {
		stdout.WriteString(sc.Text() + "\n")
		if !sent && strings.Contains(sc.Text(), `"line":"ready"`) {
			sent = true
			cmd.Process.Signal(syscall.SIGINT)
		}
	}
	cmd.Wait()
	if !sent {
		t.Fatalf("the step never got ready; stderr:\n%s", errb.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: errb.String()}
}
