package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/testutil"
)

// requireDebianEnv turns the skip of TestSandboxAptGet into a failure (CI sets it).
const requireDebianEnv = "HM_TEST_REQUIRE_DEBIAN"

// A real package install inside a confined sandbox step on a Debian image: apt drops to its
// own user, resolves and downloads through the step's private network (slirp4netns), and
// installs with dpkg; the installed program runs in the build's next step, which starts from
// the first one's snapshot.
func TestSandboxAptGet(t *testing.T) {
	testutil.NeedRoot(t)
	mmdebstrap, err := exec.LookPath("mmdebstrap")
	if err != nil {
		if os.Getenv(requireDebianEnv) == "1" {
			t.Fatalf("mmdebstrap is not installed (%s=1)", requireDebianEnv)
		}
		t.Skipf("needs mmdebstrap to build a Debian image (apt-get install mmdebstrap; %s=1 makes this a failure)", requireDebianEnv)
	}
	tarball := filepath.Join(t.TempDir(), "bookworm.tar")
	if out, err := exec.Command(mmdebstrap, "--variant=minbase", "--quiet", "bookworm", tarball).CombinedOutput(); err != nil {
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	e := newEnv(t)
	if r := e.run("image", "import", tarball, "debian:bookworm"); r.code != 0 {
		t.Fatalf("hm image import: exit %d\n%s", r.code, r.stderr)
	}
	install := "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hello >/dev/null && echo installed"
	doc := graph(0, []string{
		stepJSON("install", install, `"image":"debian:bookworm"`),
		stepJSON("use", "hello", ""),
	}, `[0,1,"builds_in"]`)
	r := e.run("run", "--file", e.writeIR("p.json", doc), "--backend", "sandbox", "--format", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	v := view(t, parseEvents(t, r.stdout))
	if got := strings.Join(v.lines("install"), "\n"); !strings.Contains(got, "installed") {
		t.Errorf("install step said %q", got)
	}
	if got := v.lines("use"); len(got) != 1 || got[0] != "Hello, world!" {
		t.Errorf("hello printed %q, want \"Hello, world!\"", got)
	}
	if left := sandboxLeftovers(t, e.stateDir); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
