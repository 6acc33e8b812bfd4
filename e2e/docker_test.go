package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testImage is built by scripts/test-image.sh (busybox-static through docker import).
const testImage = "hm-test-busybox:latest"

func init() {
	extraBackendFns = append(extraBackendFns, dockerBackend)
}

// dockerBackend is available when a daemon answers and the test image exists; with
// HM_TEST_REQUIRE_DOCKER=1 (CI) its absence fails the test instead of skipping it.
func dockerBackend(t *testing.T) (backendCase, bool) {
	t.Helper()
	if out, err := exec.Command("docker", "image", "inspect", testImage).CombinedOutput(); err != nil {
		if os.Getenv("HM_TEST_REQUIRE_DOCKER") == "1" {
			t.Fatalf("docker backend required but unavailable (start dockerd, run scripts/test-image.sh): %s", out)
		}
		t.Logf("skipping the docker backend: no daemon or no %s (run scripts/test-image.sh): %s", testImage, strings.TrimSpace(string(out)))
		return backendCase{}, false
	}
	return backendCase{
		name:      "docker",
		args:      []string{"--backend", "docker", "--map-image", "ubuntu:24.04=" + testImage, "--map-image", "busybox=" + testImage},
		leftovers: dockerLeftovers,
		isolated:  true,
		created:   dockerCreated,
	}, true
}

// dockerLeftovers lists the containers and ephemeral images of a state dir.
func dockerLeftovers(t *testing.T, stateDir string) []string {
	t.Helper()
	var out []string
	for _, args := range [][]string{
		{"ps", "-a", "-q", "--filter", "label=dev.hm.state=" + stateDir},
		{"images", "-q", "--filter", "label=dev.hm.state=" + stateDir, "--filter", "label=dev.hm.ephemeral=true"},
	} {
		b, err := exec.Command("docker", args...).Output()
		if err != nil {
			t.Fatalf("docker %v: %v", args, err)
		}
		for _, id := range strings.Fields(string(b)) {
			out = append(out, args[0]+":"+id)
		}
	}
	return out
}

// dockerCreated counts the containers created per step key between since and until.
func dockerCreated(t *testing.T, stateDir string, since, until time.Time) map[string]int {
	t.Helper()
	b, err := exec.Command("docker", "events", "--since", since.Add(-time.Second).Format(time.RFC3339Nano),
		"--until", until.Add(time.Second).Format(time.RFC3339Nano),
		"--filter", "type=container", "--filter", "event=create", "--filter", "label=dev.hm.state="+stateDir,
		"--format", `{{index .Actor.Attributes "dev.hm.step"}}`).Output()
	if err != nil {
		t.Fatalf("docker events: %v", err)
	}
	n := map[string]int{}
	for _, k := range strings.Fields(string(b)) {
		n[k]++
	}
	return n
}

// A second Ctrl-C exits at once, without waiting for the cleanup; the next run reconciles
// what was left. The daemon is reached through a proxy that holds back container removals:
// the second signal is sent while the canceled step's container is being removed, however
// fast the daemon is.
func TestSecondSIGINTExitsAtOnce(t *testing.T) {
	bc, ok := dockerBackend(t)
	if !ok {
		t.Skip("needs the docker backend")
	}
	release := make(chan struct{})
	removing := make(chan struct{}, 1)
	_, host := startDockerProxy(t, func(r *http.Request) {
		if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/containers/") {
			select {
			case removing <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}
	})
	t.Cleanup(func() { close(release) })
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{
		stepJSON("long", "echo ready; sleep 300", `"image":"ubuntu:24.04"`),
	}, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, append([]string{"run", "--format", "json"}, bc.args...)...)
	c.Env = append(c.Env, "DOCKER_HOST="+host)
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sent := 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"line":"ready"`) {
			sent++
			if err := c.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	select {
	case <-removing:
		sent++
		if err := c.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the canceled step's container was never removed")
	}
	start := time.Now()
	go io.Copy(io.Discard, out)
	c.Wait()
	if code := c.ProcessState.ExitCode(); code != 130 || sent != 2 || !strings.Contains(stderr.String(), "interrupted again") {
		t.Fatalf("exit %d after %d SIGINTs, stderr %q; want 130 from the second Ctrl-C", code, sent, stderr.String())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("hm took %v to exit after the second Ctrl-C: it waited for the cleanup", d)
	}
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": graph(0, []string{stepJSON("ok", "true", `"image":"ubuntu:24.04"`)}, "")})
	if r := e.run(append([]string{"run"}, bc.args...)...); r.code != 0 {
		t.Fatalf("next run: exit %d\n%s", r.code, r.stderr)
	}
	if left := dockerLeftovers(t, e.stateDir); len(left) > 0 {
		t.Errorf("left after the next run's reconcile: %v", left)
	}
}
