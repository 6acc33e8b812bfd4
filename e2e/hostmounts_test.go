package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/testutil"
)

// A sandbox step with the private network must leave the host's mounts alone. slirp4netns'
// --enable-sandbox makes only "/" private in its new mount namespace (not recursive), then
// detaches the old root: every shared mount below (dockerd's /var/lib/docker is shared, and
// with it each container's overlay at .../merged) was unmounted on the host too. The daemon
// still counted those overlays as mounted, so a concurrent docker step's workspace went into
// the bare merged directory and its start failed with `stat /bin/sh: no such file or
// directory`. Checked from outside: a running container's overlay is still mounted in hm's
// (the host's) namespace after a sandbox build.
func TestSandboxLeavesDockerMounts(t *testing.T) {
	testutil.NeedRoot(t)
	if _, ok := dockerBackend(t); !ok {
		t.Skip("no docker daemon or test image")
	}
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Skip("no slirp4netns: the sandbox's private network is not available")
	}
	out, err := exec.Command("docker", "run", "-d", "--label", "dev.hm.test="+t.Name(), testImage, "sleep", "120").CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", id).Run() })
	b, err := exec.Command("docker", "inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", id).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	merged := strings.TrimSpace(string(b))
	if !mountedHere(t, merged) {
		t.Fatalf("the container's overlay %s is not mounted here before the sandbox build", merged)
	}

	e := newEnv(t)
	ir := e.writeIR("p.json", graph(0, []string{stepJSON("net", "true", `"image":"host"`)}, ""))
	if r := e.run("run", "--file", ir, "--backend", "sandbox", "--network", "private"); r.code != 0 {
		t.Fatalf("hm run --backend sandbox: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !mountedHere(t, merged) {
		t.Errorf("a sandbox build unmounted the running container's overlay %s on the host", merged)
	}
}

// mountedHere reports whether mp is a mount point in this process's mount namespace.
func mountedHere(t *testing.T, mp string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mp {
			return true
		}
	}
	return false
}
