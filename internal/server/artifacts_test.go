package server

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/vm/artifact"
)

const irArtifacts = `{"version":"0","steps":[{"type":"command","key":"build","cmd":"make","artifacts":["dist/*"]}]}`

// claimed submits irArtifacts in acme, and claims and starts its job as agent "ag".
func (e *env) claimArtifactJob(t *testing.T) (buildView, agentproto.Job) {
	t.Helper()
	tok := e.tokens["acme/agent"]
	if r := e.do("", "POST", agentproto.PathRegister, tok, agentproto.Register{AgentID: "ag", Backend: "sandbox"}); r.Status != 200 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	b := e.submit("ci", map[string]any{"pipeline_ir": irArtifacts})
	js, err := e.db.ListJobs(t.Context(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.ReleaseJob(t.Context(), js[0].ID, e.srv.now()); err != nil {
		t.Fatal(err)
	}
	r := e.do("", "POST", agentproto.PathClaim, tok, agentproto.Claim{AgentID: "ag", WaitSeconds: 1})
	if r.Status != 200 {
		t.Fatalf("claim: %d %s", r.Status, r.Body)
	}
	var j agentproto.Job
	r.decode(t, &j)
	if r := e.do("", "POST", jobPath(agentproto.PathStart, j.JobID), tok, agentproto.Fence{Attempt: j.Attempt}); r.Status != 200 {
		t.Fatalf("start: %d %s", r.Status, r.Body)
	}
	return b, j
}

func artifactPath(j agentproto.Job, digest string, attempt int) string {
	return agentproto.Prefix + "/jobs/" + j.JobID + "/artifacts/" + digest + "?attempt=" + strconv.Itoa(attempt)
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// TestArtifactUploadAndDownload: the claim carries the patterns and asks for a commit; an
// upload is fenced by the attempt and checked against its digest; Finish records only files
// the server holds; the build's manifest and files are served to its org's user tokens only,
// and only files a job of that build lists.
func TestArtifactUploadAndDownload(t *testing.T) {
	e := newEnv(t)
	b, j := e.claimArtifactJob(t)
	if !j.NeedsSnapshot || !cmp.Equal(j.Artifacts, []string{"dist/*"}) {
		t.Errorf("claim: needs_snapshot %v, artifacts %v; want true, [dist/*]", j.NeedsSnapshot, j.Artifacts)
	}
	tok, other := e.tokens["acme/agent"], e.tokens["other/agent"]
	content := []byte("the artifact's bytes\n")
	digest := "sha256:" + sum(content)

	for _, c := range []struct {
		name, token, path string
		body              []byte
		want              int
	}{
		{"no token", "", artifactPath(j, digest, j.Attempt), content, http.StatusUnauthorized},
		{"a user token", e.tokens["acme/user"], artifactPath(j, digest, j.Attempt), content, http.StatusUnauthorized},
		{"another org's agent", other, artifactPath(j, digest, j.Attempt), content, http.StatusNotFound},
		{"a stale attempt", tok, artifactPath(j, digest, j.Attempt-1), content, http.StatusConflict},
		{"no attempt", tok, agentproto.Prefix + "/jobs/" + j.JobID + "/artifacts/" + digest, content, http.StatusBadRequest},
		{"a bad digest", tok, artifactPath(j, "sha256:zz", j.Attempt), content, http.StatusBadRequest},
		{"wrong bytes", tok, artifactPath(j, digest, j.Attempt), []byte("other bytes"), http.StatusUnprocessableEntity},
		{"the file", tok, artifactPath(j, digest, j.Attempt), content, http.StatusOK},
		{"again (idempotent)", tok, artifactPath(j, digest, j.Attempt), content, http.StatusOK},
	} {
		if r := e.do("", "PUT", c.path, c.token, c.body); r.Status != c.want {
			t.Errorf("upload, %s: %d %s, want %d", c.name, r.Status, r.Body, c.want)
		}
	}

	fin := agentproto.Finish{Attempt: j.Attempt, Snapshot: "snap-1",
		Artifacts:        []agentproto.Artifact{{Path: "dist/app.txt", Size: int64(len(content)), SHA256: sum(content)}},
		ArtifactWarnings: []string{`artifact "dist/link" is a symlink: not copied`}}
	if r := e.do("", "POST", jobPath(agentproto.PathFinish, j.JobID), tok, fin); r.Status != 200 {
		t.Fatalf("finish: %d %s", r.Status, r.Body)
	}
	sj, err := e.db.GetJob(t.Context(), j.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if sj.State != store.JobPassed {
		t.Fatalf("job %s %s %s", sj.State, sj.ErrorCode, sj.ErrorMessage)
	}

	base := "/api/v0/organizations/acme/pipelines/ci/builds/" + strconv.FormatInt(b.Number, 10) + "/artifacts"
	user := e.tokens["acme/user"]
	for _, c := range []struct {
		name, token, path string
		want              int
	}{
		{"manifest, no token", "", base, http.StatusUnauthorized},
		{"manifest, an agent token", tok, base, http.StatusUnauthorized},
		{"manifest, another org", e.tokens["other/user"], "/api/v0/organizations/acme/pipelines/ci/builds/1/artifacts", http.StatusNotFound},
		{"file, no token", "", base + "/" + digest, http.StatusUnauthorized},
		{"file, an agent token", tok, base + "/" + digest, http.StatusUnauthorized},
		{"file, another org", e.tokens["other/user"], base + "/" + digest, http.StatusNotFound},
		{"file, not the build's", user, base + "/sha256:" + sum([]byte("x")), http.StatusNotFound},
	} {
		if r := e.do("", "GET", c.path, c.token, nil); r.Status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, r.Status, r.Body, c.want)
		}
	}
	r := e.do("", "GET", base, user, nil)
	if r.Status != 200 {
		t.Fatalf("manifest: %d %s", r.Status, r.Body)
	}
	var m scheduler.Manifest
	r.decode(t, &m)
	want := scheduler.Manifest{Build: b.ID, Steps: []scheduler.ManifestEntry{{Key: "build", Dir: "build",
		Files: []artifact.File{{Path: "dist/app.txt", Size: int64(len(content)), SHA256: sum(content)}}}}}
	if d := cmp.Diff(want, m); d != "" {
		t.Errorf("manifest (-want +got):\n%s", d)
	}
	if r := e.do("", "GET", base+"/"+digest, user, nil); r.Status != 200 || string(r.Body) != string(content) {
		t.Errorf("file: %d %q", r.Status, r.Body)
	}
	// The upload route is closed once the job ended.
	if r := e.do("", "PUT", artifactPath(j, digest, j.Attempt), tok, content); r.Status != http.StatusConflict {
		t.Errorf("upload after finish: %d, want 409", r.Status)
	}
}

// TestArtifactFinishRefused: a Finish naming a file never uploaded, a size that is not the
// file's, or a path outside the step's directory fails the step artifacts_invalid.
func TestArtifactFinishRefused(t *testing.T) {
	content := []byte("bytes")
	for _, c := range []struct {
		name string
		art  agentproto.Artifact
	}{
		{"not uploaded", agentproto.Artifact{Path: "dist/a", Size: 3, SHA256: sum([]byte("abc"))}},
		{"wrong size", agentproto.Artifact{Path: "dist/a", Size: 99, SHA256: sum(content)}},
		{"escaping path", agentproto.Artifact{Path: "../a", Size: 5, SHA256: sum(content)}},
		{"absolute path", agentproto.Artifact{Path: "/etc/a", Size: 5, SHA256: sum(content)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			_, j := e.claimArtifactJob(t)
			tok := e.tokens["acme/agent"]
			if r := e.do("", "PUT", artifactPath(j, "sha256:"+sum(content), j.Attempt), tok, content); r.Status != 200 {
				t.Fatalf("upload: %d %s", r.Status, r.Body)
			}
			fin := agentproto.Finish{Attempt: j.Attempt, Snapshot: "s", Artifacts: []agentproto.Artifact{c.art}}
			if r := e.do("", "POST", jobPath(agentproto.PathFinish, j.JobID), tok, fin); r.Status != 200 {
				t.Fatalf("finish: %d %s", r.Status, r.Body)
			}
			sj, err := e.db.GetJob(t.Context(), j.JobID)
			if err != nil {
				t.Fatal(err)
			}
			if sj.State != store.JobFailed || sj.ErrorCode != "artifacts_invalid" || sj.Artifacts != nil {
				t.Errorf("job %s %q %q artifacts %s; want failed artifacts_invalid without artifacts", sj.State, sj.ErrorCode, sj.ErrorMessage, sj.Artifacts)
			}
		})
	}
}
