package server

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/server/driver"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
	"github.com/hmci/hm/internal/testutil"
)

const secretValue = "s3cr3t-value-4242"

// irSecret: step "uses" names TOKEN, step "plain" names none.
const irSecret = `{"version":"0","steps":[{"type":"command","key":"uses","cmd":"echo $TOKEN","secrets":["TOKEN"]},` +
	`{"type":"command","key":"plain","cmd":"true"}]}`

func withSealer(t *testing.T) (*secret.Sealer, func(*Config)) {
	key, err := LoadKey(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := secret.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s, func(c *Config) { c.Secrets = s }
}

// dbHolds reports whether the SQLite database's bytes (file and WAL) contain s.
func dbHolds(t *testing.T, dir, s string) bool {
	t.Helper()
	for _, f := range []string{sqlite.FileName, sqlite.FileName + "-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// TestSecretsThroughAClaim: a build's secret reaches only the claim of the step naming it;
// a fake agent that uploads it unmasked (a chunk, an error message) has it masked in the
// stored logs and in the build's events; the database never holds it, and the build's
// sealed row is gone once the build ended.
func TestSecretsThroughAClaim(t *testing.T) {
	sealer, tweak := withSealer(t)
	e := newEnv(t, tweak)
	ctx := testutil.HangGuard(t, time.Minute)
	tok := e.tokens["acme/agent"]
	if r := e.do("", "POST", agentproto.PathRegister, tok, agentproto.Register{AgentID: "ag", Backend: "sandbox"}); r.Status != 200 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	// keep_going: the failing "plain" must not cancel "uses" before it is claimed.
	b := e.submit("ci", map[string]any{"pipeline_ir": irSecret, "hm_options": map[string]any{"keep_going": true}, "hm_secrets": map[string]string{"TOKEN": secretValue, "UNUSED": "unused-value-77"}})
	if dbHolds(t, e.dir, secretValue) || dbHolds(t, e.dir, "unused-value-77") {
		t.Fatal("the database holds a secret in clear after createBuild")
	}
	id := b.ID
	if _, err := e.db.GetBuildSecrets(ctx, id); err != nil {
		t.Fatalf("no sealed secrets stored: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := driver.Drive(ctx, driver.Config{Store: e.db, Owner: "test", Poll: 20 * time.Millisecond, Secrets: sealer}, id)
		done <- err
	}()

	// Claims until the build ended: the infrastructure failure of "plain" is retried once.
	seen := map[string]bool{}
	var derr error
claims:
	for {
		select {
		case derr = <-done:
			break claims
		default:
		}
		r := e.do("", "POST", agentproto.PathClaim, tok, agentproto.Claim{AgentID: "ag", WaitSeconds: 1})
		if r.Status == 204 {
			continue
		}
		if r.Status != 200 {
			t.Fatalf("claim: %d %s", r.Status, r.Body)
		}
		var j agentproto.Job
		r.decode(t, &j)
		seen[j.StepKey] = true
		switch j.StepKey {
		case "uses":
			if diff := cmp.Diff(map[string]string{"TOKEN": secretValue}, j.Secrets); diff != "" {
				t.Errorf("the claim of the step naming TOKEN (-want +got):\n%s", diff)
			}
		case "plain":
			if len(j.Secrets) != 0 || bytes.Contains(r.Body, []byte(secretValue)) {
				t.Errorf("the claim of a step naming no secret carries one: %s", r.Body)
			}
		}
		if bytes.Contains(r.Body, []byte("unused-value-77")) {
			t.Errorf("a claim carries a secret no step names: %s", r.Body)
		}
		if r := e.do("", "POST", jobPath(agentproto.PathStart, j.JobID), tok, agentproto.Fence{Attempt: j.Attempt}); r.Status != 200 {
			t.Fatalf("start: %d %s", r.Status, r.Body)
		}
		// A careless agent: the value unmasked in a chunk and in an error message.
		logs := agentproto.Logs{Attempt: j.Attempt, Chunks: []agentproto.Chunk{{Seq: 1, Content: "token is " + secretValue + " here", TS: time.Now()}}}
		if r := e.do("", "POST", jobPath(agentproto.PathLogs, j.JobID), tok, logs); r.Status != 200 {
			t.Fatalf("logs: %d %s", r.Status, r.Body)
		}
		fin := agentproto.Finish{Attempt: j.Attempt}
		if j.StepKey == "plain" {
			fin = agentproto.Finish{Attempt: j.Attempt, ExitCode: -1, ErrorCode: "agent_error", ErrorMessage: "could not run with " + secretValue}
		}
		if r := e.do("", "POST", jobPath(agentproto.PathFinish, j.JobID), tok, fin); r.Status != 200 {
			t.Fatalf("finish: %d %s", r.Status, r.Body)
		}
	}
	if derr != nil {
		t.Fatal(derr)
	}
	if !seen["uses"] || !seen["plain"] {
		t.Fatalf("claimed %v, want both steps", seen)
	}
	evs, err := e.db.ListEvents(ctx, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, ev := range evs {
		all.Write(ev.Payload)
		all.WriteByte('\n')
	}
	if strings.Contains(all.String(), secretValue) {
		t.Errorf("the events hold the secret:\n%s", all.String())
	}
	if !strings.Contains(all.String(), "token is *** here") || !strings.Contains(all.String(), "could not run with ***") {
		t.Errorf("the events lack the masked line and error:\n%s", all.String())
	}
	if _, err := e.db.GetBuildSecrets(ctx, id); !store.IsNotFound(err) {
		t.Errorf("the ended build's secrets: err = %v, want not found", err)
	}
	if dbHolds(t, e.dir, secretValue) {
		t.Error("the database holds the secret in clear after the build")
	}
}

// TestSecretsRefused: a step naming a secret the build was not given, a bad name, or
// secrets sent to a server without a secrets key are refused at submit (422).
func TestSecretsRefused(t *testing.T) {
	_, tweak := withSealer(t)
	e := newEnv(t, tweak)
	bare := newEnv(t)
	for _, c := range []struct {
		name    string
		e       *env
		secrets map[string]string
		code    string
	}{
		{"missing", e, map[string]string{"OTHER": "x"}, "secret_missing"},
		{"bad name", e, map[string]string{"TOKEN": "x", "1BAD": "y"}, "validation_failed"},
		{"no key", bare, map[string]string{"TOKEN": "x"}, "secrets_unsupported"},
	} {
		r := c.e.do("", "POST", "/api/v0/organizations/acme/pipelines/ci/builds", c.e.tokens["acme/user"],
			map[string]any{"pipeline_ir": irSecret, "hm_secrets": c.secrets})
		if r.Status != 422 || r.errorCode(t) != c.code {
			t.Errorf("%s: %d %s, want 422 %s", c.name, r.Status, r.Body, c.code)
		}
	}
}
