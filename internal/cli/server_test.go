package cli

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServerCommand: token create prints a token once; hm server serves it on 127.0.0.1 and
// stops cleanly (exit 0) when told to, with a stream still open.
func TestServerCommand(t *testing.T) {
	data := t.TempDir()
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"server", "token", "create", "--data", data, "--org", "acme", "--name", "me"},
		IO{Out: &out, Err: &errb, Getenv: func(string) string { return "" }}); code != 0 {
		t.Fatalf("token create: %d %s", code, errb.String())
	}
	tok := strings.TrimSpace(out.String())
	if !strings.HasPrefix(tok, "hmu_") {
		t.Fatalf("token %q", tok)
	}
	out.Reset()
	if code := Main(context.Background(), []string{"server", "token", "create", "--data", data, "--org", "acme", "--agent"},
		IO{Out: &out, Err: &errb}); code != 0 || !strings.HasPrefix(out.String(), "hma_") {
		t.Fatalf("agent token: %d %q %s", code, out.String(), errb.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, exit, logs := startServerCmd(t, ctx, "--data", data)
	req, _ := http.NewRequest("POST", "http://"+addr+"//api/v0/organizations/acme/pipelines/ci/builds",
		strings.NewReader(`{"branch":"main","commit":"c","pipeline_ir":"{\"version\":\"0\",\"steps\":[{\"type\":\"command\",\"key\":\"a\",\"cmd\":\"true\"}]}"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("createBuild: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", "http://"+addr+"/api/v0/organizations/acme/pipelines/ci/builds/1/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	cancel() // as SIGTERM does
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("server exit %d: %s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not drain")
	}
	if strings.Contains(logs.String(), tok[4:]) {
		t.Error("the token is in the server log")
	}
}
