package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// hostInterfaces lists this machine's network interfaces.
func hostInterfaces(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n")[2:] {
		if name, _, ok := strings.Cut(l, ":"); ok {
			out = append(out, strings.TrimSpace(name))
		}
	}
	slices.Sort(out)
	return out
}

// stable drops the veth interfaces, which come and go with other containers.
func stable(ifaces []string) []string {
	return slices.DeleteFunc(slices.Clone(ifaces), func(n string) bool { return strings.HasPrefix(n, "veth") })
}

// --network maps to docker's network modes: none (loopback only), host (the host's
// interfaces), and by default the daemon's bridge (loopback and the container's own
// interface).
func TestDockerNetworkModes(t *testing.T) {
	bc, ok := dockerBackend(t)
	if !ok {
		t.Skip("no docker")
	}
	e := newBackendEnv(t, bc)
	ir := e.writeIR("p.json", graph(0, []string{stepJSON("net", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort", `"image":"ubuntu:24.04"`)}, ""))
	host := hostInterfaces(t)
	for _, tt := range []struct {
		network string
		ok      func(ifaces []string) bool
	}{
		{"none", func(i []string) bool { return slices.Equal(i, []string{"lo"}) }},
		{"host", func(i []string) bool { return slices.Equal(stable(i), stable(host)) }},
		{"private", func(i []string) bool {
			return len(i) == 2 && slices.Contains(i, "lo") && !slices.Equal(stable(i), stable(host))
		}},
	} {
		r := e.run(append([]string{"run", "--file", ir, "--format", "json", "--no-cache", "--network", tt.network}, bc.args...)...)
		if r.code != 0 {
			t.Fatalf("--network %s: exit %d\n%s", tt.network, r.code, r.stderr)
		}
		if ifaces := view(t, parseEvents(t, r.stdout)).lines("net"); !tt.ok(ifaces) {
			t.Errorf("--network %s: interfaces %v (the host's: %v)", tt.network, ifaces, host)
		}
	}
}
