package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/hmci/hm/internal/server/servertest"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/testutil"
)

// irTwo is a root step and its builds_in child, plus a step after a barrier.
const irTwo = `{"version":"0","steps":[{"type":"command","key":"build","cmd":"make"},` +
	`{"type":"command","key":"test","cmd":"make test","builds_in":"build"},{"type":"wait"},` +
	`{"type":"command","key":"deploy","cmd":"./deploy"}]}`

// env is one server on a real store (SQLite in a temp dir unless newEnvOn says), served on
// 127.0.0.1, with two orgs ("acme", "other"), each with a user and an agent token.
type env struct {
	t       *testing.T
	srv     *Server
	url     string
	db      store.Store
	dir     string
	logs    *testutil.SyncBuffer
	tokens  map[string]string // "acme/user", "acme/agent", "other/user", "other/agent"
	schemas *specSchemas
}

func newEnv(t *testing.T, tweak ...func(*Config)) *env {
	t.Helper()
	return newEnvOn(t, "sqlite", tweak...)
}

// newEnvOn is newEnv on a store of driver (servertest.Drivers).
func newEnvOn(t *testing.T, driver string, tweak ...func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	st := servertest.OpenDriver(ctx, t, driver)
	db, dir := st.Store, st.Dir
	key, err := LoadLogKey(filepath.Join(dir, "log-token.key"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	cfg := Config{Store: db, Blobs: st.Blobs, LogKey: key, PollInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, f := range tweak {
		f(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Drain()
		hs.Close()
	})
	e := &env{t: t, srv: srv, url: hs.URL, db: db, dir: dir, logs: logs, tokens: map[string]string{}, schemas: loadSpec(t)}
	for _, org := range []string{"acme", "other"} {
		for kind, secret := range st.Org(ctx, t, org) {
			e.tokens[org+"/"+string(kind)] = secret
		}
	}
	return e
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	r.decode(t, &e)
	return e.Error.Code
}

// do sends a request as token ("" for none) and validates the response against the schema
// of op's status in cli-subset.openapi.json (op "" skips the check: routes not in the spec).
func (e *env) do(op, method, path, token string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	// A client that asks for compression must not get it (remote.md).
	req.Header.Set("Accept-Encoding", "gzip")
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		e.t.Errorf("%s %s: Content-Encoding %q", method, path, ce)
	}
	if resp.ProtoMajor != 1 {
		e.t.Errorf("%s %s: %s, want HTTP/1.x", method, path, resp.Proto)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if op != "" {
		e.schemas.check(e.t, op, r)
	}
	return r
}

// specSchemas are the response schemas of the OpenAPI file, compiled as JSON Schema: OpenAPI
// 3.0's nullable is rewritten to a null type first (JSON Schema has no nullable).
type specSchemas struct {
	c   *jsonschema.Compiler
	ops map[string][2]string // operationId → method, path
	doc map[string]any
	mu  sync.Mutex
}

var (
	specOnce sync.Once
	spec     *specSchemas
	specErr  error
)

func loadSpec(t *testing.T) *specSchemas {
	t.Helper()
	file := filepath.Join(testutil.SharedDir(t), "spec", "harmont", "cli-subset.openapi.json")
	specOnce.Do(func() {
		o, err := servertest.LoadOpenAPI(file)
		if err != nil {
			specErr = err
			return
		}
		s := &specSchemas{c: o.C, ops: o.Ops, doc: o.Doc}
		spec = s
	})
	if specErr != nil {
		t.Fatal(specErr)
	}
	return spec
}

func ptr(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

// check validates r against op's response schema for r.Status; a status the spec does not
// list for op (401, 400, 413 of any operation) must be the Error envelope.
func (s *specSchemas) check(t *testing.T, op string, r response) {
	t.Helper()
	mp, ok := s.ops[op]
	if !ok {
		t.Fatalf("operation %s is not in the spec", op)
	}
	loc := "file:///openapi.json#/components/schemas/Error"
	status := strconv.Itoa(r.Status)
	if _, ok := s.doc["paths"].(map[string]any)[mp[1]].(map[string]any)[mp[0]].(map[string]any)["responses"].(map[string]any)[status]; ok {
		loc = fmt.Sprintf("file:///openapi.json#/paths/%s/%s/responses/%s/content/application~1json/schema", ptr(mp[1]), mp[0], status)
	} else if r.Status < 400 {
		t.Errorf("%s answered %d, which the spec does not list: %s", op, r.Status, r.Body)
	}
	s.mu.Lock()
	sch, err := s.c.Compile(loc)
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("compile %s: %v", loc, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("%s %d: body is not JSON: %v: %s", op, r.Status, err, r.Body)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("%s %d: response does not validate against %s: %v\n%s", op, r.Status, loc, err, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", op, ct)
	}
	if r.Status >= 400 {
		var env struct {
			Error map[string]string `json:"error"`
		}
		json.Unmarshal(r.Body, &env)
		for _, k := range []string{"type", "code", "message", "doc_url", "request_id"} {
			if env.Error[k] == "" {
				t.Errorf("%s %d: envelope without %s: %s", op, r.Status, k, r.Body)
			}
		}
	}
}

// submit creates a build of pipeline in acme and returns it.
func (e *env) submit(pipeline string, body map[string]any) buildView {
	e.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	if _, ok := body["pipeline_ir"]; !ok {
		body["pipeline_ir"] = irTwo
	}
	if _, ok := body["branch"]; !ok {
		body["branch"], body["commit"] = "main", "abc123"
	}
	r := e.do("createBuild", "POST", "/api/v0/organizations/acme/pipelines/"+pipeline+"/builds", e.tokens["acme/user"], body)
	if r.Status != http.StatusCreated {
		e.t.Fatalf("createBuild: %d %s", r.Status, r.Body)
	}
	var b buildView
	r.decode(e.t, &b)
	return b
}

func (e *env) jobs(pipeline string, number int64) []jobView {
	e.t.Helper()
	r := e.do("listJobs", "GET", fmt.Sprintf("/api/v0/organizations/acme/pipelines/%s/builds/%d/jobs", pipeline, number), e.tokens["acme/user"], nil)
	if r.Status != 200 {
		e.t.Fatalf("listJobs: %d %s", r.Status, r.Body)
	}
	var l jobList
	r.decode(e.t, &l)
	return l.Data
}

func storeUpdate(code string) store.BuildUpdate {
	return store.BuildUpdate{ErrorCode: code, ErrorMessage: "timed out", Now: time.Now()}
}

// TestSchemaCheckerRejects keeps the checker honest: a Build without its required fields, a
// null where the schema has no nullable, an unknown state all fail.
func TestSchemaCheckerRejects(t *testing.T) {
	s := loadSpec(t)
	sch, err := s.c.Compile("file:///openapi.json#/components/schemas/Build")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"number":1}`, `{"number":1,"state":"queued","pipeline_slug":"p","created_at":"2026-01-01T00:00:00Z"}`,
		`{"number":1,"state":"passed","pipeline_slug":null,"created_at":"2026-01-01T00:00:00Z"}`,
		`{"number":1,"state":"passed","pipeline_slug":"p","created_at":"yesterday"}`} {
		inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if sch.Validate(inst) == nil {
			t.Errorf("%s validates", bad)
		}
	}
	inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(`{"number":1,"state":"passed","pipeline_slug":"p","created_at":"2026-01-01T00:00:00Z","branch":null}`))
	if err := sch.Validate(inst); err != nil {
		t.Errorf("a null nullable field: %v", err)
	}
}
