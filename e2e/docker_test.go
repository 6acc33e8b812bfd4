package e2e

import (
	"os"
	"os/exec"
	"strings"
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
