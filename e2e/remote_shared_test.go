package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Two replicas on one PostgreSQL store with data dirs of their own (the second given only a
// copy of the first's secrets.key): a build submitted to one, its step claimed through the
// other, reads its source, opens its secret and uploads its artifact there, and the client
// downloads the artifact from the first; a log token the first signs is served by the
// second. No blob lands in either data dir: they are in the database. A third replica with
// another secrets key refuses to start.
func TestReplicasOwnData(t *testing.T) {
	c := faultNewCluster(t, storePostgres)
	bData := t.TempDir()
	key, err := os.ReadFile(filepath.Join(c.data, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bData, "secrets.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	bAddr := faultFreeAddr(t)
	b := faultStart(t, "server-b", nil, append([]string{"server", "--data", bData, "--listen", bAddr}, c.db...)...)
	waitListening(t, b, bAddr)
	faultStart(t, "agent", []string{"HM_AGENT_TOKEN=" + c.agentTok},
		"agent", "--server", "http://"+bAddr, "--state", t.TempDir(), "--backend", "host")

	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{"src.txt": "the source of the build\n"})
	step, _ := json.Marshal(map[string]any{"type": "command", "key": "a", "secrets": []string{"TOKEN"},
		"cmd":       `test "$TOKEN" = s3cr3t-of-the-build && mkdir out && cp src.txt out/ && echo built`,
		"artifacts": []string{"out"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.cmd(ctx, "run", "--file", e.writeIR("p.json", `{"version":"0","default_image":"host","steps":[`+string(step)+`]}`),
		"--backend", "remote", "--server", c.url(), "--org", "acme", "--format", "json", "--secret", "TOKEN")
	cmd.Env = append(cmd.Env, "HM_API_TOKEN="+c.userTok, "TOKEN=s3cr3t-of-the-build")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("hm run: %v\n%s\n%s", err, out, stderr)
	}
	build := ""
	for _, ev := range parseEvents(t, string(out)) {
		if ev.BuildStart != nil {
			build = ev.BuildStart.RunID
		}
	}
	got, err := os.ReadFile(filepath.Join(e.srcDir, ".hm", "artifacts", build, "a", "out", "src.txt"))
	if err != nil || string(got) != "the source of the build\n" {
		t.Fatalf("the artifact downloaded from the first replica: %q, %v", got, err)
	}
	for _, d := range []string{c.data, bData} {
		ents, _ := os.ReadDir(filepath.Join(d, "blobs", "sha256"))
		if len(ents) != 0 {
			t.Errorf("%s/blobs holds %d blobs, want none (they are in the database)", d, len(ents))
		}
	}

	// A log token of the first replica, served by the second.
	path := "/api/v0/organizations/acme/pipelines/p/builds/1"
	var tok struct {
		Token string `json:"token"`
	}
	var jobs struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	apiGet(t, c.url()+path+"/log-token", c.userTok, &tok)
	apiGet(t, c.url()+path+"/jobs", c.userTok, &jobs)
	if len(jobs.Data) != 1 || tok.Token == "" {
		t.Fatalf("jobs %v, token %q", jobs, tok.Token)
	}
	resp, err := http.Get("http://" + bAddr + "/v0/jobs/" + jobs.Data[0].ID + "/logs?token=" + tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(bufio.NewReader(io.LimitReader(resp.Body, 1<<20)))
	if resp.StatusCode != 200 || !strings.Contains(string(body), "built") {
		t.Errorf("the second replica's log stream with the first's token: %d\n%s", resp.StatusCode, body)
	}

	// A replica whose secrets key is not the deployment's.
	r := exec.Command(hmBin, append([]string{"server", "--data", t.TempDir(), "--listen", faultFreeAddr(t)}, c.db...)...)
	msg, err := r.CombinedOutput()
	if code := exitOf(t, err); code != 2 || !regexp.MustCompile(`error\[secrets_key_mismatch\]: \S+secrets.key is not the secrets key of the other servers on this store\n  fix    copy secrets.key`).Match(msg) {
		t.Errorf("a replica with another secrets key: exit %d\n%s", code, msg)
	}
}

// waitListening waits until p accepts connections on addr.
func waitListening(t *testing.T, p *faultProc, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/api/v0/ping"); err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s does not listen on %s", p.name, addr)
}

func apiGet(t *testing.T, url, token string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, raw)
	}
}
