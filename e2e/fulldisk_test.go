package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/testutil"
)

// On a full disk a build whose steps are all cached still passes (it writes nothing: the
// registry is read read-only, the hit is not marked used, the build's record is skipped with a
// warning), `hm cache ls` works, and a build with a step that must run fails that step with
// error[state_dir] and its fix, without running it.
func TestFullDiskCachedRun(t *testing.T) {
	testutil.NeedRoot(t)
	for _, backend := range []string{"host", "sandbox"} {
		t.Run(backend, func(t *testing.T) {
			e := newEnv(t)
			// A filesystem of its own to fill: a small tmpfs as the state dir.
			e.stateDir = filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(e.stateDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", e.stateDir, "tmpfs", 0, "size=16m"); err != nil {
				t.Fatalf("mount a tmpfs: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(e.stateDir, unix.MNT_DETACH) })
			ir := func(child string) string {
				return e.writeIR("p.json", graph(0, []string{
					stepJSON("root", "echo built-root", `"image":"host","cache":{"policy":"forever"}`),
					stepJSON("child", child, `"cache":{"policy":"forever"}`),
				}, `[0,1,"builds_in"]`))
			}
			args := []string{"run", "--backend", backend, "--format", "json"}
			if r := e.run(append(args, "--file", ir("echo built-child"))...); r.code != 0 {
				t.Fatalf("first run: exit %d\n%s", r.code, r.stderr)
			}
			fill(t, e.stateDir)

			r := e.run(append(args, "--file", ir("echo built-child"))...)
			if r.code != 0 {
				t.Fatalf("fully cached run on a full disk: exit %d\n%s", r.code, r.stderr)
			}
			v := view(t, parseEvents(t, r.stdout))
			for _, k := range []string{"root", "child"} {
				if kinds := v.kinds[k]; len(kinds) < 2 || kinds[1] != "step_cache_hit" {
					t.Errorf("step %s was not a cache hit on the full disk:\n%s", k, r.stderr)
				}
			}
			if !strings.Contains(r.stderr, "only cached steps can be used") {
				t.Errorf("no warning that the state dir is full:\n%s", r.stderr)
			}
			if r := e.run("cache", "ls"); r.code != 0 || !strings.Contains(r.stdout, "child") {
				t.Errorf("hm cache ls on a full disk: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}

			r = e.run(append(args, "--file", ir("echo changed > /workspace/ran; echo changed"))...)
			if r.code == 0 || !strings.Contains(r.stderr, "error[state_dir]") || !strings.Contains(r.stderr, "  fix    set HM_STATE_DIR") {
				t.Errorf("a step that must run on a full disk: exit %d\n%s", r.code, r.stderr)
			}
			v = view(t, parseEvents(t, r.stdout))
			if got := v.lines("child"); v.status["child"] != -1 || slices.Contains(got, "changed") {
				t.Errorf("the step on a full disk: exit %d, printed %q; want it failed unrun", v.status["child"], got)
			}
		})
	}
}

// fill writes to dir's filesystem until it is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			return // ENOSPC: full
		}
	}
}
