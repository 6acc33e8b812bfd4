package vmtest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/hmci/hm/internal/vm"
)

// cacheDirPath is where the case mounts its cache directory: in the snapshotted
// filesystem (not under the sandbox's tmpfs /tmp), except on the host backend, where it is
// the host's own path and /tmp keeps the mount point out of the way.
func cacheDirPath(isolated bool) string {
	if isolated {
		return "/var/cache/hm-vmtest-cachedir"
	}
	return "/tmp/hm-vmtest-cachedir"
}

// CacheDirs: what a step writes to a cache directory is there for the next machine given
// the same one, not in the step's snapshot, not in another pipeline's; concurrent steps
// writing it lose nothing.
func testCacheDirs(t *testing.T, e *env) {
	p := cacheDirPath(e.fx.IsolatedFS)
	dir := vm.CacheDir{Org: "vmtest", Pipeline: t.Name(), Path: p}
	other := dir
	other.Pipeline += "-other"
	t.Cleanup(func() {
		if !e.fx.IsolatedFS {
			_ = os.Remove(p) // the host's (empty) mount point
		}
		if r, ok := e.fx.Backend.(vm.CacheDirVolumes); ok {
			for _, d := range []vm.CacheDir{dir, other} {
				if err := r.RemoveCacheDir(cleanupCtx(), d.ID()); err != nil {
					t.Errorf("RemoveCacheDir: %v", err)
				}
			}
		}
	})
	with := func(s vm.Spec, d ...vm.CacheDir) vm.Spec {
		s.CacheDirs = d
		return s
	}
	first := e.create(with(e.spec(fmt.Sprintf(`echo one > %s/a && mkdir -p %s/d && echo x > %s/d/f`, p, p, p)), dir))
	if r := e.run(t.Context(), first); r.code != 0 {
		t.Fatalf("first step: exit %d, stderr %q", r.code, r.stderr)
	}
	snap := e.commit(first, false)

	second := e.create(with(e.spec(fmt.Sprintf(`cat %s/a %s/d/f`, p, p)), dir))
	if r := e.run(t.Context(), second); r.code != 0 || r.stdout != "one\nx\n" {
		t.Errorf("second step: exit %d, stdout %q, want the first step's files (stderr %q)", r.code, r.stdout, r.stderr)
	}
	// The snapshot holds at most the empty mount point.
	child := e.create(e.child(snap, fmt.Sprintf(`ls -A %s 2>/dev/null | wc -l`, p)))
	if r := e.run(t.Context(), child); r.code != 0 || strings.TrimSpace(r.stdout) != "0" {
		t.Errorf("child of the first step's snapshot: exit %d, %q entries in %s, want 0: the cache dir is in the snapshot", r.code, r.stdout, p)
	}
	elsewhere := e.create(with(e.spec(fmt.Sprintf(`ls -A %s | wc -l`, p)), other))
	if r := e.run(t.Context(), elsewhere); r.code != 0 || strings.TrimSpace(r.stdout) != "0" {
		t.Errorf("another pipeline's cache dir: exit %d, %q entries, want 0", r.code, r.stdout)
	}

	// Concurrent writers: each adds its own files and replaces a shared one by rename, the
	// way the tools whose caches these are write them.
	const writers, files = 4, 50
	var wg sync.WaitGroup
	for i := range writers {
		m := e.create(with(e.spec(fmt.Sprintf(`for j in $(seq %d); do echo %d-$j > %s/w%d-$j; echo %d > %s/s.tmp%d && mv %s/s.tmp%d %s/shared; done`,
			files, i, p, i, i, p, i, p, i, p)), dir))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.runAny(t.Context(), m, &safeBuffer{}, &safeBuffer{}); r.err != nil || r.code != 0 {
				t.Errorf("writer %d: exit %d, %v, stderr %q", i, r.code, r.err, r.stderr)
			}
		}()
	}
	wg.Wait()
	check := e.create(with(e.spec(fmt.Sprintf(`cat %s/w* | sort | uniq | wc -l; ls %s | grep -c tmp; cat %s/shared`, p, p, p)), dir))
	r := e.run(t.Context(), check)
	lines := strings.Fields(r.stdout)
	if r.code != 0 || len(lines) != 3 || lines[0] != fmt.Sprint(writers*files) || lines[1] != "0" || len(lines[2]) != 1 {
		t.Errorf("after %d concurrent writers: exit %d, output %q, want %d distinct files, no temporary file, one writer's shared file",
			writers, r.code, r.stdout, writers*files)
	}
}
