package agent_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
	"github.com/hmci/hm/internal/vm/artifact"
)

const agentSecret = "agent-s3cr3t-9f1c"

// TestSecretsAndArtifacts: a real agent (host backend) gives a step the secrets it names and
// no other step any, masks them in what it uploads (plainly, split, base64), and brings the
// step's artifacts back: uploaded, recorded on the job with their sha256, published as
// step_artifact events, their bytes in the server's blob dir. No file of the server holds
// the secret once the build ended.
func TestSecretsAndArtifacts(t *testing.T) {
	e := newEnv(t, envOpts{})
	ra := e.startAgent(agentOpts{})
	b := e.submit(ir(
		step("uses", `echo "tok=$TOKEN"; a=${TOKEN%"${TOKEN#?????}"}; printf 'split=%s' "$a"; sleep 0.2; printf '%s\n' "${TOKEN#?????}"; `+
			`printf %s "$TOKEN" | base64; mkdir -p dist; echo data > dist/a.txt; ln -s /etc/passwd dist/pw`,
			`"secrets":["TOKEN"]`, `"artifacts":["dist/*"]`),
		step("plain", `echo "plain sees [${TOKEN-unset}]"`),
	), nil, map[string]string{"TOKEN": agentSecret})
	if got := e.waitBuild(b.ID); got.State != store.BuildPassed {
		t.Fatalf("build %s (%s %s)", got.State, got.ErrorCode, got.ErrorMessage)
	}
	js := e.jobs(b.ID)
	var lines []string
	for _, c := range e.logLines(js["uses"], 1) {
		lines = append(lines, c.Content)
	}
	if d := cmp.Diff([]string{"tok=***", "split=***", "***"}, lines); d != "" {
		t.Errorf("the step's stored log (-want +got):\n%s", d)
	}
	if cs := e.logLines(js["plain"], 1); len(cs) != 1 || cs[0].Content != "plain sees [unset]" {
		t.Errorf("plain's log %+v: a step naming no secret saw one", cs)
	}
	// The agent masked them itself: the server's masking is a second layer.
	b64 := base64.StdEncoding.EncodeToString([]byte(agentSecret))
	if sent := ra.tr.sent.String(); strings.Contains(sent, agentSecret) || strings.Contains(sent, b64) || !strings.Contains(sent, "tok=***") {
		t.Errorf("the agent uploaded (want the secret masked):\n%s", sent)
	}

	a, err := driver.ParseArtifacts(js["uses"].Artifacts)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("data\n"))
	want := []artifact.File{{Path: "dist/a.txt", Size: 5, SHA256: hex.EncodeToString(sum[:])}}
	if d := cmp.Diff(want, a.Files); d != "" {
		t.Errorf("the job's artifacts (-want +got):\n%s", d)
	}
	if len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], `"dist/pw" is a symlink`) {
		t.Errorf("warnings %q, want the symlink's refusal", a.Warnings)
	}
	blob, err := os.ReadFile(filepath.Join(e.dir, "blobs", "sha256", want[0].SHA256))
	if err != nil || string(blob) != "data\n" {
		t.Errorf("the blob: %q, %v", blob, err)
	}
	evs, err := e.db.ListEvents(e.ctx, b.ID, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var arts []events.StepArtifact
	var all bytes.Buffer
	for _, ev := range evs {
		all.Write(ev.Payload)
		var v events.Event
		if err := json.Unmarshal(ev.Payload, &v); err == nil && v.StepArtifact != nil {
			arts = append(arts, *v.StepArtifact)
		}
	}
	if len(arts) != 1 || arts[0].StepID != js["uses"].ID || arts[0].Path != "dist/a.txt" || arts[0].SHA256 != want[0].SHA256 {
		t.Errorf("step_artifact events %+v", arts)
	}
	if !bytes.Contains(all.Bytes(), []byte(`dist/pw`)) {
		t.Errorf("the events lack the symlink's refusal:\n%s", all.String())
	}
	for _, f := range []string{sqlite.FileName, sqlite.FileName + "-wal"} {
		raw, _ := os.ReadFile(filepath.Join(e.dir, f))
		if bytes.Contains(raw, []byte(agentSecret)) {
			t.Errorf("%s holds the secret", f)
		}
	}
	if _, err := e.db.GetBuildSecrets(e.ctx, b.ID); !store.IsNotFound(err) {
		t.Errorf("the ended build's secrets: %v, want not found", err)
	}
}
