package e2e

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// hm server token ls and revoke against a running server's store: ls shows the token (never
// its secret), revoke deletes it, and the running server refuses it within its token cache's
// 2 s; revoking it again says there is no such token.
func TestServerTokenRevoke(t *testing.T) { remoteStores(t, testServerTokenRevoke) }

func testServerTokenRevoke(t *testing.T, st remoteStore) {
	c := faultNewCluster(t, st)
	hm := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(hmBin, append(append([]string{"server", "token"}, args...), append([]string{"--data", c.data}, c.db...)...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		code := exitOf(t, cmd.Run())
		return out.String(), errb.String(), code
	}
	status := func() int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, c.url()+"/api/v0/organizations/acme/pipelines/nope", nil)
		req.Header.Set("Authorization", "Bearer "+c.userTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status(); s != http.StatusNotFound {
		t.Fatalf("a live token on a missing pipeline: %d, want 404", s)
	}
	type row struct{ ID, Kind, Name string }
	list := func() []row {
		t.Helper()
		out, stderr, code := hm("ls", "--org", "acme", "--format", "json")
		if code != 0 {
			t.Fatalf("token ls: exit %d\n%s", code, stderr)
		}
		if strings.Contains(out, c.userTok) || strings.Contains(out, c.agentTok) {
			t.Fatalf("token ls prints a secret:\n%s", out)
		}
		var rows []row
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return rows
	}
	rows := list()
	var user string
	for _, r := range rows {
		if r.Kind == "user" {
			user = r.ID
		}
	}
	if len(rows) != 2 || user == "" {
		t.Fatalf("tokens %+v, want the cluster's user and agent tokens", rows)
	}
	if _, stderr, code := hm("revoke", user); code != 0 || !strings.Contains(stderr, "revoked") {
		t.Fatalf("revoke: exit %d\n%s", code, stderr)
	}
	deadline := time.Now().Add(5 * time.Second) // the cache's 2 s, and slack for the machine
	for status() != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token is still accepted after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rows := list(); len(rows) != 1 || rows[0].Kind != "agent" {
		t.Errorf("tokens after the revoke: %+v, want the agent's alone", rows)
	}
	_, stderr, code := hm("revoke", user)
	if code != 2 || !strings.Contains(stderr, "error[token_not_found]: no token \""+user+"\"\n  fix    list the tokens with `hm server token ls --org ORG`") {
		t.Errorf("revoking it again: exit %d\n%s", code, stderr)
	}
}
