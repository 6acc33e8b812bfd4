package sandbox

import (
	"os"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/vm"
)

// A cache dir is mounted nosuid and nodev whatever the device rules, and its path resolves
// inside the step's root: an image's symlink cannot aim the mount at the host (the link's
// target is made in the root, where the mount lands).
func TestCacheDirMount(t *testing.T) {
	needSandbox(t)
	b := newBackend(t, Options{})
	const hostPath = "/etc/hm-cachedir-test-target"
	if _, err := os.Stat(hostPath); err == nil {
		t.Fatalf("%s exists on the host before the test", hostPath)
	}
	parent, _ := mustRun(t, b, spec(`mkdir -p /var/cache `+hostPath+` && ln -s `+hostPath+` /var/cache/link`))
	snap := commit(t, b, parent, true)
	s := childSpec(snap, `grep " /var/cache/link\| `+hostPath+` " /proc/self/mountinfo; echo x > /var/cache/link/f && echo wrote`)
	s.CacheDirs = []vm.CacheDir{{Org: "o", Pipeline: t.Name(), Path: "/var/cache/link"}}
	_, out := mustRun(t, b, s)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[1] != "wrote" {
		t.Fatalf("output %q, want the mount's line and wrote", out)
	}
	opts := strings.Split(strings.Fields(lines[0])[5], ",")
	for _, want := range []string{"nosuid", "nodev", "rw"} {
		if !strings.Contains(","+strings.Join(opts, ",")+",", ","+want+",") {
			t.Errorf("cache dir mount options %v lack %s", opts, want)
		}
	}
	if _, err := os.Stat(hostPath); err == nil {
		os.RemoveAll(hostPath)
		t.Errorf("the image's symlink made the mount land on the host's %s", hostPath)
	}
}
