package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/hmci/hm/internal/server/servertest"
	"github.com/hmci/hm/internal/testutil"
)

// A scripted client that behaves like the Harmont CLI (remote.md, "What a Harmont client
// depends on") against hm server and a host agent: a base URL with a trailing slash,
// createBuild, then listJobs and getBuild polled in that order (giving up on the first
// non-2xx), one log stream per running job read to `event: done` with `data: {}`, every
// stream awaited, and the final state mapped to the exit code. Every JSON response is
// validated against cli-subset.openapi.json.
func TestHarmontClient(t *testing.T) { remoteStores(t, testHarmontClient) }

func testHarmontClient(t *testing.T, st remoteStore) {
	c := faultNewCluster(t, st, "--lease-ttl", "10s")
	faultStart(t, "agent", []string{"HM_AGENT_TOKEN=" + c.agentTok},
		"agent", "--server", c.url(), "--state", t.TempDir(), "--backend", "host", "--slots", "2")
	hc := &harmontClient{t: t, base: c.url() + "/", token: c.userTok, spec: harmontLoadSpec(t)}
	hc.call("createPipeline", "POST", "api/v0/organizations/acme/pipelines",
		map[string]any{"name": "p", "repository": "local", "default_branch": "main"}, nil)
	tests := []struct {
		name string
		cmds []string
		exit int
	}{
		{name: "passed", cmds: []string{"for i in $(seq 1 20); do echo a$i; sleep 0.05; done", "sleep 1; echo b; echo err >&2"}, exit: 0},
		{name: "failed", cmds: []string{"sleep 1; echo oops; exit 3"}, exit: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hc.t = t
			ir := remoteIR(tc.cmds...)
			var b struct {
				Number int64 `json:"number"`
			}
			hc.call("createBuild", "POST", "api/v0/organizations/acme/pipelines/p/builds",
				map[string]any{"branch": "main", "commit": "0000000", "pipeline_ir": ir, "source": "api"}, &b)
			if code := hc.watch(b.Number); code != tc.exit {
				t.Errorf("exit %d, want %d", code, tc.exit)
			}
		})
	}
}

type harmontClient struct {
	t           *testing.T
	base, token string
	spec        *harmontSpec
}

// call does one operation; a non-2xx fails the test (the real client gives up). out may be nil.
func (h *harmontClient) call(op, method, path string, in, out any) {
	h.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.base+path, body)
	req.Header.Set("Authorization", "Bearer "+h.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s: %v", op, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	h.spec.check(h.t, op, resp.StatusCode, raw)
	if resp.StatusCode/100 != 2 {
		h.t.Fatalf("%s answered %d: the Harmont client gives up\n%s", op, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			h.t.Fatalf("%s: %v", op, err)
		}
	}
}

// watch polls listJobs then getBuild, opens one log stream per running job, waits for every
// stream and returns the exit code of the build's final state.
func (h *harmontClient) watch(number int64) int {
	h.t.Helper()
	bp := fmt.Sprintf("api/v0/organizations/acme/pipelines/p/builds/%d", number)
	var tok struct {
		Token string `json:"token"`
	}
	streams := map[string]*harmontStream{}
	var wg sync.WaitGroup
	deadline := time.Now().Add(90 * time.Second)
	for {
		var jobs struct {
			Data []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"data"`
		}
		h.call("listJobs", "GET", bp+"/jobs", nil, &jobs)
		for _, j := range jobs.Data {
			if j.State != "running" || streams[j.ID] != nil {
				continue
			}
			if tok.Token == "" {
				h.call("getBuildLogToken", "GET", bp+"/log-token", nil, &tok)
			}
			s := &harmontStream{}
			streams[j.ID] = s
			wg.Add(1)
			go func(id string) { defer wg.Done(); s.read(h.base + "v0/jobs/" + id + "/logs?token=" + tok.Token) }(j.ID)
		}
		var b struct {
			State string `json:"state"`
		}
		h.call("getBuild", "GET", bp, nil, &b)
		code := -1
		switch b.State {
		case "passed":
			code = 0
		case "failed":
			code = 1
		case "canceled":
			code = 130
		}
		if code >= 0 {
			wg.Wait()
			if len(streams) == 0 {
				h.t.Errorf("no job was seen running: no log stream opened")
			}
			for id, s := range streams {
				if s.err != nil {
					h.t.Errorf("job %s log stream: %v", id, s.err)
				}
				if !s.done {
					h.t.Errorf("job %s log stream ended without event: done / data: {}", id)
				}
				if len(s.lines) == 0 {
					h.t.Errorf("job %s log stream carried no line", id)
				}
			}
			return code
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("build %d still %s after 90 s", number, b.State)
		}
		time.Sleep(200 * time.Millisecond) // the real client's 1.5 s, faster
	}
}

// harmontStream is one job log stream as the client reads it: history, then chunks, until
// done.
type harmontStream struct {
	lines []string
	done  bool
	err   error
}

func (s *harmontStream) read(url string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.err = err
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		s.err = fmt.Errorf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		return
	}
	type chunk struct {
		Seq        *int64  `json:"seq"`
		StreamKind *int    `json:"stream_kind"`
		Content    *string `json:"content"`
	}
	var seq int64
	add := func(c chunk) {
		if c.Seq == nil || c.StreamKind == nil || c.Content == nil || *c.StreamKind < 0 || *c.StreamKind > 2 {
			s.err = fmt.Errorf("bad chunk %+v", c)
			return
		}
		if *c.Seq != seq+1 {
			s.err = fmt.Errorf("chunk seq %d after %d", *c.Seq, seq)
		}
		seq = *c.Seq
		s.lines = append(s.lines, strings.TrimSuffix(*c.Content, "\n"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	var event, data string
	first := true
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		case line == "":
			if data == "" { // an event with no data line is never delivered
				event = ""
				continue
			}
			if first && event != "history" {
				s.err = fmt.Errorf("first event %q, want history", event)
			}
			first = false
			switch event {
			case "history":
				var h struct {
					Chunks []chunk `json:"chunks"`
				}
				if err := json.Unmarshal([]byte(data), &h); err != nil || h.Chunks == nil {
					s.err = fmt.Errorf("history %q: %v", data, err)
				}
				for _, c := range h.Chunks {
					add(c)
				}
			case "chunk":
				var c chunk
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					s.err = fmt.Errorf("chunk %q: %v", data, err)
				}
				add(c)
			case "done":
				if data != "{}" {
					s.err = fmt.Errorf("done with data %q, want {}", data)
				}
				s.done = true
				return
			}
			event, data = "", ""
		}
	}
	if s.err == nil {
		s.err = sc.Err()
	}
}

// harmontSpec is the OpenAPI file's response schemas compiled as JSON Schema (OpenAPI 3.0's
// nullable rewritten to a null type, as internal/server's schema tests do).
type harmontSpec struct {
	c   *jsonschema.Compiler
	doc map[string]any
	ops map[string][2]string // operationId → method, path
}

func harmontLoadSpec(t *testing.T) *harmontSpec {
	t.Helper()
	o, err := servertest.LoadOpenAPI(filepath.Join(testutil.SharedDir(t), "spec", "harmont", "cli-subset.openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := &harmontSpec{c: o.C, doc: o.Doc, ops: o.Ops}
	return s
}

// check validates a response body against op's schema for its status (the Error envelope
// for a status the spec does not list).
func (s *harmontSpec) check(t *testing.T, op string, status int, body []byte) {
	t.Helper()
	mp, ok := s.ops[op]
	if !ok {
		t.Fatalf("operation %s is not in the spec", op)
	}
	loc := "file:///openapi.json#/components/schemas/Error"
	code := strconv.Itoa(status)
	if _, ok := s.doc["paths"].(map[string]any)[mp[1]].(map[string]any)[mp[0]].(map[string]any)["responses"].(map[string]any)[code]; ok {
		p := strings.NewReplacer("~", "~0", "/", "~1").Replace(mp[1])
		loc = fmt.Sprintf("file:///openapi.json#/paths/%s/%s/responses/%s/content/application~1json/schema", p, mp[0], code)
	}
	sch, err := s.c.Compile(loc)
	if err != nil {
		t.Fatalf("compile %s: %v", loc, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %d: body is not JSON: %v: %s", op, status, err, body)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("%s %d: response does not validate against %s: %v\n%s", op, status, loc, err, body)
	}
}
