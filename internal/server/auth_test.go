package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// route is one served operation with a concrete path in acme.
type route struct{ op, method, path string }

func userRoutes(jobID string) []route {
	b := "/api/v0/organizations/acme/pipelines/ci/builds/1"
	return []route{
		{"createPipeline", "POST", "/api/v0/organizations/acme/pipelines"},
		{"getPipeline", "GET", "/api/v0/organizations/acme/pipelines/ci"},
		{"createBuild", "POST", "/api/v0/organizations/acme/pipelines/ci/builds"},
		{"listBuilds", "GET", "/api/v0/organizations/acme/pipelines/ci/builds"},
		{"createBuildBySource", "POST", "/api/v0/organizations/acme/builds"},
		{"getBuild", "GET", b},
		{"cancelBuild", "PUT", b + "/cancel"},
		{"listJobs", "GET", b + "/jobs"},
		{"getJob", "GET", b + "/jobs/" + jobID},
		{"getBuildLogToken", "GET", b + "/log-token"},
		{"", "GET", b + "/events"}, // hm's own: not in the Harmont spec
	}
}

// TestAuth sends every user route without a token, with a bad one, with another org's and
// with an agent token of the right org: none reaches the handler.
func TestAuth(t *testing.T) {
	e := newEnv(t)
	e.submit("ci", nil)
	jobID := e.jobs("ci", 1)[0].ID
	for _, rt := range userRoutes(jobID) {
		for _, c := range []struct {
			who, token string
			want       int
			code       string
		}{
			{"no token", "", 401, "unauthorized"},
			{"unknown token", "hmu_0000", 401, "unauthorized"},
			{"agent token", e.tokens["acme/agent"], 401, "unauthorized"},
			{"other org", e.tokens["other/user"], 404, "organization_not_found"},
		} {
			r := e.do(rt.op, rt.method, rt.path, c.token, `{}`)
			if r.Status != c.want || r.errorCode(t) != c.code {
				t.Errorf("%s %s as %s: %d %s, want %d %s", rt.method, rt.path, c.who, r.Status, r.Body, c.want, c.code)
			}
		}
	}
	// The other org's token on its own org never sees acme's pipeline: 404, never 403.
	r := e.do("getBuild", "GET", "/api/v0/organizations/other/pipelines/ci/builds/1", e.tokens["other/user"], nil)
	if r.Status != 404 || r.errorCode(t) != "pipeline_not_found" {
		t.Errorf("other org's own path: %d %s", r.Status, r.Body)
	}
	r = e.do("getJob", "GET", "/api/v0/organizations/acme/pipelines/ci/builds/1/jobs/"+jobID, "Basic x", nil)
	if r.Status != 401 {
		t.Errorf("a non-bearer Authorization: %d", r.Status)
	}
	if r := e.do("ping", "GET", "/api/v0/ping", "", nil); r.Status != 200 {
		t.Errorf("ping needs no token: %d", r.Status)
	}
}

func TestAgentRoutes(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{AgentPrefix + "/ping", AgentPrefix + "/claim", "/" + AgentPrefix + "/ping"} {
		for _, c := range []struct {
			who, token string
			want       int
		}{
			{"no token", "", 401},
			{"user token", e.tokens["acme/user"], 401},
		} {
			r := e.do("", "POST", p, c.token, `{}`)
			if r.Status != c.want {
				t.Errorf("%s as %s: %d %s", p, c.who, r.Status, r.Body)
			}
		}
	}
	r := e.do("", "GET", AgentPrefix+"/ping", e.tokens["acme/agent"], nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"org":"acme"`) {
		t.Errorf("agent ping: %d %s", r.Status, r.Body)
	}
	r = e.do("", "POST", AgentPrefix+"/nope", e.tokens["acme/agent"], nil)
	if r.Status != 404 || r.errorCode(t) != "route_not_found" {
		t.Errorf("an unknown agent route: %d %s", r.Status, r.Body)
	}
	r = e.do("", "POST", AgentPrefix+"/claim", e.tokens["acme/agent"], `{"agent_id":"never-registered"}`)
	if r.Status != 404 || r.errorCode(t) != "agent_not_found" {
		t.Errorf("a claim before register: %d %s", r.Status, r.Body)
	}
}

// TestSecretsNotStored: neither the API token nor a log token is in the database files or
// the server's log, whatever was done with them.
func TestSecretsNotStored(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["acme/user"]
	e.submit("ci", nil)
	js := e.jobs("ci", 1)
	r := e.do("getBuildLogToken", "GET", "/api/v0/organizations/acme/pipelines/ci/builds/1/log-token", tok, nil)
	var lt logTokenView
	r.decode(t, &lt)
	if lt.Token == "" {
		t.Fatalf("log token: %s", r.Body)
	}
	if _, err := e.db.SkipJob(t.Context(), js[0].ID, "canceled", e.srv.now()); err != nil {
		t.Fatal(err)
	}
	streamLogs(t, e, js[0].ID, lt.Token, "")
	e.do("", "GET", "/api/v0/ping?token="+tok, "", nil)
	e.db.Close() // checkpoint the WAL into the file
	secrets := map[string]string{"api token": tok, "agent token": e.tokens["acme/agent"], "log token": lt.Token}
	files, _ := filepath.Glob(filepath.Join(e.dir, "store.db*"))
	if len(files) == 0 {
		t.Fatal("no database file")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for what, s := range secrets {
			if bytes.Contains(raw, []byte(s)) || bytes.Contains(raw, []byte(s[4:])) {
				t.Errorf("%s found in %s", what, f)
			}
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "request") {
		t.Fatalf("no request log: %q", logs)
	}
	for what, s := range secrets {
		if strings.Contains(logs, s[4:]) {
			t.Errorf("%s found in the server log", what)
		}
	}
}
