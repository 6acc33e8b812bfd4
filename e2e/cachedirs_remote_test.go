package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Through hm run --backend remote, a step's cache dir lives on the agent that ran it, per
// org, pipeline and path: each of the cluster's two agents keeps one, every run adds to the
// one where it ran, and with three runs on two agents one run finds what an earlier left.
func TestCacheDirRemote(t *testing.T) {
	c := remoteStart(t, storeSQLite)
	e := newEnv(t)
	const dir = "/var/cache/hm-e2e-remote"
	doc := graph(0, []string{stepJSON("count",
		fmt.Sprintf(`n=$(cat %[1]s/count 2>/dev/null || echo 0); echo seen=$n; echo $((n+1)) > %[1]s/count`, dir),
		fmt.Sprintf(`"image":"ubuntu:24.04","cache_dirs":[%q]`, dir))}, "")
	ir := e.writeIR("p.json", doc)
	const runs = 3
	maxSeen := 0
	for i := range runs {
		r := c.run(e, "--file", ir)
		if r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s\n%s", i+1, r.code, r.stdout, r.stderr)
		}
		got := remoteReduce(t, r.stdout).logs["count"]["stdout"]
		if len(got) != 1 || !strings.HasPrefix(got[0], "seen=") {
			t.Fatalf("run %d: count says %q", i+1, got)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(got[0], "seen="))
		maxSeen = max(maxSeen, n)
	}
	if maxSeen < 1 {
		t.Errorf("no run saw an earlier run's cache dir on its agent (%d runs, %d agents)", runs, len(c.agents))
	}
	total := 0
	for _, a := range c.agents {
		ae := &env{t: t, stateDir: a.state, srcDir: t.TempDir()}
		r := ae.run("cache", "dirs", "ls", "--format", "json")
		var listed []struct{ ID, Backend, Org, Path string }
		if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || r.code != 0 {
			t.Fatalf("agent %s: cache dirs ls: exit %d, %v\n%s", a.state, r.code, err, r.stdout)
		}
		for _, l := range listed {
			if l.Org != "acme" || l.Path != dir || l.Backend != "sandbox" {
				t.Errorf("agent %s lists %+v, want org acme, path %s, backend sandbox", a.state, l, dir)
				continue
			}
			b, err := os.ReadFile(filepath.Join(a.state, "cachedirs", "sandbox", l.ID, "data", "count"))
			if err != nil {
				t.Errorf("agent %s: %v", a.state, err)
				continue
			}
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			total += n
		}
	}
	if total != runs {
		t.Errorf("the agents' cache dirs count %d runs, want %d", total, runs)
	}
}
