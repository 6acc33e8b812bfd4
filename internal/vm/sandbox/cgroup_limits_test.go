package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/testutil"
)

// A step's cgroups carry the configured limits, on whichever hierarchy this host has.
func TestCgroupLimits(t *testing.T) {
	testutil.NeedRoot(t)
	c := detectCgroups()
	if len(c.parents) == 0 {
		t.Skip("no usable cgroups here")
	}
	dirs := c.create(proc.NewCookie(proc.Self()), Options{PidsMax: 20, MemoryMax: 64 << 20, CPUs: 0.5})
	t.Cleanup(func() { removeCgroups(dirs) })
	got := map[string]string{}
	for _, d := range dirs {
		for _, f := range []string{"pids.max", "memory.max", "memory.limit_in_bytes", "cpu.max", "cpu.cfs_quota_us", "cpu.cfs_period_us"} {
			if b, err := os.ReadFile(filepath.Join(d, f)); err == nil {
				got[f] = strings.TrimSpace(string(b))
			}
		}
	}
	want := map[string]string{"pids.max": "20"}
	if c.v2 {
		want["memory.max"], want["cpu.max"] = "67108864", "50000 100000"
	} else {
		want["memory.limit_in_bytes"], want["cpu.cfs_quota_us"], want["cpu.cfs_period_us"] = "67108864", "50000", "100000"
	}
	for f, w := range want {
		if got[f] != w {
			t.Errorf("%s = %q, want %q (all: %v)", f, got[f], w, got)
		}
	}
}

// Without limits the step's cgroups have none.
func TestCgroupNoLimits(t *testing.T) {
	testutil.NeedRoot(t)
	c := detectCgroups()
	if len(c.parents) == 0 {
		t.Skip("no usable cgroups here")
	}
	dirs := c.create(proc.NewCookie(proc.Self()), Options{})
	t.Cleanup(func() { removeCgroups(dirs) })
	for _, d := range dirs {
		for f, none := range map[string]string{"pids.max": "max", "cpu.max": "max 100000", "cpu.cfs_quota_us": "-1"} {
			if b, err := os.ReadFile(filepath.Join(d, f)); err == nil && strings.TrimSpace(string(b)) != none {
				t.Errorf("%s/%s = %q, want %q", d, f, strings.TrimSpace(string(b)), none)
			}
		}
	}
}
