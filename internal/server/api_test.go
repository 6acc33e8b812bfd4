package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/store"
)

func TestPingAndDoubleSlash(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/api/v0/ping", "//api/v0/ping"} {
		r := e.do("ping", "GET", p, "", nil)
		if r.Status != 200 || !strings.Contains(string(r.Body), `"ok"`) {
			t.Errorf("GET %s: %d %s", p, r.Status, r.Body)
		}
	}
	// A POST through a base URL with a trailing slash is served, not redirected.
	r := e.do("createPipeline", "POST", "//api/v0/organizations/acme/pipelines", e.tokens["acme/user"],
		map[string]any{"name": "Web App", "repository": "https://github.com/acme/web.git", "default_branch": "main"})
	if r.Status != http.StatusCreated {
		t.Fatalf("POST //api/v0/…: %d %s", r.Status, r.Body)
	}
	r = e.do("getBuild", "GET", "/api/v0//organizations/acme/pipelines/web-app/builds/1", e.tokens["acme/user"], nil)
	if r.Status != 404 || r.errorCode(t) != "build_not_found" {
		t.Errorf("inner //: %d %s", r.Status, r.Body)
	}
}

func TestPipelines(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["acme/user"]
	body := map[string]any{"name": "Web App", "repository": "git@github.com:acme/web.git", "default_branch": "main", "description": "the site"}
	r := e.do("createPipeline", "POST", "/api/v0/organizations/acme/pipelines", tok, body)
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var p pipelineView
	r.decode(t, &p)
	if p.Slug != "web-app" || p.RepoName == nil || *p.RepoName != "acme/web" {
		t.Errorf("pipeline %+v", p)
	}
	r = e.do("getPipeline", "GET", "/api/v0/organizations/acme/pipelines/web-app", tok, nil)
	var got pipelineView
	r.decode(t, &got)
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("get differs from create (-create +get):\n%s", diff)
	}
	cases := []struct {
		name string
		body any
		want int
		code string
	}{
		{"duplicate", body, 422, "pipeline_slug_taken"},
		{"missing fields", map[string]any{"name": "x"}, 422, "validation_failed"},
		{"malformed", `{"name":`, 400, "malformed_json"},
		{"not an object", `[1,2]`, 400, "malformed_json"},
		{"empty", ``, 400, "malformed_json"},
		{"trailing data", `{"name":"a"} {}`, 400, "malformed_json"},
		{"oversized", `{"name":"` + strings.Repeat("a", maxSmallBody) + `"}`, 413, "request_too_large"},
	}
	for _, c := range cases {
		r := e.do("createPipeline", "POST", "/api/v0/organizations/acme/pipelines", tok, c.body)
		if r.Status != c.want || r.errorCode(t) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Body, c.want, c.code)
		}
	}
	r = e.do("getPipeline", "GET", "/api/v0/organizations/acme/pipelines/nope", tok, nil)
	if r.Status != 404 || r.errorCode(t) != "pipeline_not_found" {
		t.Errorf("unknown pipeline: %d %s", r.Status, r.Body)
	}
}

func TestCreateBuild(t *testing.T) {
	e := newEnv(t)
	src := []byte("not really a tar.gz, the API checks base64 only")
	sum := sha256.Sum256(src)
	b := e.submit("ci", map[string]any{"source_b64": base64.StdEncoding.EncodeToString(src), "source_sha256": hex.EncodeToString(sum[:]),
		"env": map[string]string{"A": "1"}, "hm_options": map[string]any{"parallelism": 2, "keep_going": true, "map_image": map[string]string{"a": "b"}},
		"message": "first"})
	if b.Number != 1 || b.State != "scheduled" || b.PipelineSlug != "ci" || *b.Message != "first" || *b.Source != "api" {
		t.Errorf("build %+v", b)
	}
	// The pipeline was created on first submit.
	if r := e.do("getPipeline", "GET", "/api/v0/organizations/acme/pipelines/ci", e.tokens["acme/user"], nil); r.Status != 200 {
		t.Errorf("pipeline not created on first submit: %d %s", r.Status, r.Body)
	}
	js := e.jobs("ci", 1)
	var keys []string
	byKey := map[string]jobView{}
	for _, j := range js {
		keys = append(keys, *j.StepKey)
		byKey[*j.StepKey] = j
		if j.State != "pending" {
			t.Errorf("job %s state %s", *j.StepKey, j.State)
		}
	}
	if diff := cmp.Diff([]string{"build", "test", "deploy"}, keys); diff != "" {
		t.Errorf("job order (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{byKey["build"].ID}, byKey["test"].DependsOn); diff != "" {
		t.Errorf("test depends_on (builds_in) (-want +got):\n%s", diff)
	}
	if len(byKey["deploy"].DependsOn) != 2 || *byKey["test"].Command != "make test" {
		t.Errorf("deploy after the barrier: %+v", byKey["deploy"])
	}
	// Stored once, content-addressed; the build records the digest.
	dig := "sha256:" + hex.EncodeToString(sum[:])
	if _, err := os.Stat(filepath.Join(e.dir, "blobs", "sha256", hex.EncodeToString(sum[:]))); err != nil {
		t.Error(err)
	}
	e.submit("ci", map[string]any{"source_b64": base64.StdEncoding.EncodeToString(src)})
	ents, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "sha256"))
	if len(ents) != 1 {
		t.Errorf("%d blobs, want 1", len(ents))
	}
	st, err := e.db.GetBuildByNumber(t.Context(), mustPipeline(t, e, "ci"), 2)
	if err != nil || st.SourceDigest != dig || st.IR != irTwo {
		t.Errorf("stored build %+v %v", st, err)
	}

	path := "/api/v0/organizations/acme/pipelines/ci/builds"
	cases := []struct {
		name string
		body any
		want int
		code string
	}{
		{"ir rejected", map[string]any{"branch": "m", "commit": "c", "pipeline_ir": `{"version":"1","steps":[]}`}, 422, "build_plan_rejected"},
		{"ir cycle", map[string]any{"pipeline_ir": `{"version":"0","steps":[{"type":"command","key":"a","cmd":"x","builds_in":"a"}]}`}, 422, "build_plan_rejected"},
		{"no ir", map[string]any{"branch": "m", "commit": "c"}, 422, "build_plan_rejected"},
		{"digest mismatch", map[string]any{"pipeline_ir": irTwo, "source_b64": "aGVsbG8=", "source_sha256": strings.Repeat("0", 64)}, 422, "source_digest_mismatch"},
		{"bad base64", map[string]any{"pipeline_ir": irTwo, "source_b64": "!!"}, 422, "validation_failed"},
		{"bad options", map[string]any{"pipeline_ir": irTwo, "hm_options": map[string]any{"parallelism": "x"}}, 422, "validation_failed"},
		{"malformed", `{"pipeline_ir": `, 400, "malformed_json"},
	}
	for _, c := range cases {
		r := e.do("createBuild", "POST", path, e.tokens["acme/user"], c.body)
		if r.Status != c.want || r.errorCode(t) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Body, c.want, c.code)
		}
	}
	r := e.do("createBuild", "POST", path, e.tokens["acme/user"], map[string]any{"pipeline_ir": `{"version":"1"}`})
	if !strings.Contains(string(r.Body), "unsupported IR version") {
		t.Errorf("the validation message is not passed on: %s", r.Body)
	}
	// By source: repo_name + source_slug.
	r = e.do("createBuildBySource", "POST", "/api/v0/organizations/acme/builds", e.tokens["acme/user"],
		map[string]any{"repo_name": "acme/web", "source_slug": "ci", "branch": "main", "commit": "c", "pipeline_ir": irTwo})
	var b3 buildView
	if r.Status != 201 {
		t.Fatalf("createBuildBySource: %d %s", r.Status, r.Body)
	}
	r.decode(t, &b3)
	if b3.Number != 3 || b3.PipelineSlug != "ci" {
		t.Errorf("by source: %+v", b3)
	}
	r = e.do("createBuildBySource", "POST", "/api/v0/organizations/acme/builds", e.tokens["acme/user"], map[string]any{"pipeline_ir": irTwo})
	if r.Status != 422 {
		t.Errorf("by source without repo_name: %d %s", r.Status, r.Body)
	}
}

func mustPipeline(t *testing.T, e *env, slug string) string {
	t.Helper()
	org, err := e.db.GetOrgBySlug(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.db.GetPipeline(t.Context(), org.ID, slug)
	if err != nil {
		t.Fatal(err)
	}
	return p.ID
}

func TestSourceTooLarge(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSourceBytes = 1000 })
	path := "/api/v0/organizations/acme/pipelines/ci/builds"
	// Over the decoded cap but within the body cap: source_too_large.
	r := e.do("createBuild", "POST", path, e.tokens["acme/user"], map[string]any{"pipeline_ir": irTwo,
		"source_b64": base64.StdEncoding.EncodeToString(make([]byte, 1001))})
	if r.Status != 413 || r.errorCode(t) != "source_too_large" {
		t.Errorf("source over the cap: %d %s", r.Status, r.Body)
	}
	// Over the body cap: refused before decoding.
	big := fmt.Sprintf(`{"pipeline_ir":%q,"source_b64":"%s"}`, irTwo, strings.Repeat("A", int(e.srv.maxBuildBody())))
	r = e.do("createBuild", "POST", path, e.tokens["acme/user"], big)
	if r.Status != 413 || r.errorCode(t) != "request_too_large" {
		t.Errorf("body over the cap: %d %.200s", r.Status, r.Body)
	}
}

func TestBuildsListGetCancel(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["acme/user"]
	for range 5 {
		e.submit("ci", nil)
	}
	base := "/api/v0/organizations/acme/pipelines/ci/builds"
	var nums []int64
	cursor := ""
	for pages := 0; ; pages++ {
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		r := e.do("listBuilds", "GET", base+q, tok, nil)
		var l buildList
		r.decode(t, &l)
		for _, b := range l.Data {
			nums = append(nums, b.Number)
		}
		if l.NextCursor == nil || pages > 5 {
			break
		}
		cursor = *l.NextCursor
	}
	if diff := cmp.Diff([]int64{5, 4, 3, 2, 1}, nums); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
	for _, q := range []string{"?cursor=zzz", "?limit=-1"} {
		if r := e.do("listBuilds", "GET", base+q, tok, nil); r.Status != 400 {
			t.Errorf("%s: %d", q, r.Status)
		}
	}
	r := e.do("getBuild", "GET", base+"/3", tok, nil)
	var b buildView
	r.decode(t, &b)
	if b.Number != 3 || b.State != "scheduled" {
		t.Errorf("getBuild: %+v", b)
	}
	for _, n := range []string{"99", "0", "x"} {
		if r := e.do("getBuild", "GET", base+"/"+n, tok, nil); r.Status != 404 || r.errorCode(t) != "build_not_found" {
			t.Errorf("build %s: %d %s", n, r.Status, r.Body)
		}
	}
	r = e.do("cancelBuild", "PUT", base+"/3/cancel", tok, nil)
	r.decode(t, &b)
	if r.Status != 200 || b.State != "canceling" {
		t.Errorf("cancel: %d %s", r.Status, r.Body)
	}
	// A terminal build stays as it is.
	bb, err := e.db.GetBuildByNumber(t.Context(), mustPipeline(t, e, "ci"), 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.TransitionBuild(t.Context(), bb.ID, []store.BuildState{"scheduled"}, "failed", storeUpdate("pipeline_timeout")); err != nil {
		t.Fatal(err)
	}
	r = e.do("cancelBuild", "PUT", base+"/4/cancel", tok, nil)
	r.decode(t, &b)
	if r.Status != 200 || b.State != "failed" || *b.ErrorCode != "pipeline_timeout" || b.FinishedAt == nil {
		t.Errorf("cancel of a terminal build: %d %s", r.Status, r.Body)
	}
	if r := e.do("cancelBuild", "POST", base+"/4/cancel", tok, nil); r.Status != 404 {
		t.Errorf("POST cancel: %d", r.Status)
	}
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["acme/user"]
	e.submit("ci", nil)
	e.submit("ci", nil)
	js := e.jobs("ci", 1)
	other := e.jobs("ci", 2)
	base := "/api/v0/organizations/acme/pipelines/ci/builds/1/jobs/"
	r := e.do("getJob", "GET", base+js[1].ID, tok, nil)
	var j jobView
	r.decode(t, &j)
	if diff := cmp.Diff(js[1], j); diff != "" {
		t.Errorf("getJob differs from listJobs (-list +get):\n%s", diff)
	}
	for _, id := range []string{other[0].ID, "00000000-0000-0000-0000-000000000000", "x"} {
		if r := e.do("getJob", "GET", base+id, tok, nil); r.Status != 404 || r.errorCode(t) != "job_not_found" {
			t.Errorf("job %s of another build: %d %s", id, r.Status, r.Body)
		}
	}
	if r := e.do("listJobs", "GET", "/api/v0/organizations/acme/pipelines/ci/builds/9/jobs", tok, nil); r.Status != 404 {
		t.Errorf("jobs of a missing build: %d", r.Status)
	}
}
