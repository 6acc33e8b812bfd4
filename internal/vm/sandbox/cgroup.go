package sandbox

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/confine"
	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
)

// cgroups says where step cgroups go: one parent directory per hierarchy, each step getting
// a child named by its cookie. Best effort throughout: a host without usable cgroups runs
// steps without them (the PID namespace, not the cgroup, is what kills the tree).
type cgroups struct {
	v2      bool
	parents []string // STEP cgroups are parents[i]/COOKIE
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupDirName is the directory holding hm's step cgroups in each hierarchy.
const cgroupDirName = "hm-sandbox"

// detectCgroups finds the memory, pids and cpu controllers. On cgroup v2 step cgroups go
// under the root (a cgroup with processes cannot delegate controllers, and hm's own cgroup
// has hm in it); on v1 they nest under hm's own cgroup of each controller, so hm's limits
// still apply to its steps.
func detectCgroups() cgroups {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		p := filepath.Join("/sys/fs/cgroup", cgroupDirName)
		// One controller at a time: the kernel refuses a whole write for one controller it
		// cannot enable (cpu, while a realtime task sits outside the root).
		for _, ctrl := range []string{"+memory", "+pids", "+cpu"} {
			_ = os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte(ctrl), 0)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return cgroups{}
		}
		for _, ctrl := range []string{"+memory", "+pids", "+cpu"} {
			_ = os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte(ctrl), 0)
		}
		return cgroups{v2: true, parents: []string{p}}
	}
	own := ownCgroupsV1()
	var c cgroups
	for _, ctrl := range []string{"memory", "pids", "cpu", "devices"} {
		// /sys/fs/cgroup/cpu is usually a symlink to the cpu,cpuacct hierarchy.
		mnt := filepath.Join("/sys/fs/cgroup", ctrl)
		rel, ok := own[ctrl]
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
			continue
		}
		p := filepath.Join(mnt, rel, cgroupDirName)
		if err := os.MkdirAll(p, 0o755); err != nil {
			continue
		}
		c.parents = append(c.parents, p)
	}
	return c
}

// ownCgroupsV1 maps each v1 controller to this process's cgroup path in it.
func ownCgroupsV1() map[string]string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			m[ctrl] = parts[2]
		}
	}
	return m
}

// cpuPeriod is the CPU bandwidth period of step cgroups, in microseconds (the kernel's
// default, as docker's --cpus uses).
const cpuPeriod = 100000

// create makes the step's cgroups with the configured limits and returns their directories.
// A v1 hierarchy is told by its files, whatever its mount point is called.
func (c cgroups) create(cookie string, opts Options) []string {
	quota := int64(opts.CPUs * cpuPeriod)
	if opts.CPUs > 0 && quota < 1000 {
		quota = 1000 // the kernel's minimum quota, 1ms
	}
	var dirs []string
	for _, p := range c.parents {
		d := filepath.Join(p, cookie)
		if err := os.Mkdir(d, 0o755); err != nil {
			continue
		}
		dirs = append(dirs, d)
		limits := map[string]string{}
		set := func(file string, v int64, s string) {
			if v <= 0 {
				return
			}
			if _, err := os.Stat(filepath.Join(d, file)); err == nil {
				limits[file] = s
			}
		}
		num := func(v int64) string { return strconv.FormatInt(v, 10) }
		if c.v2 {
			set("memory.max", opts.MemoryMax, num(opts.MemoryMax))
			set("pids.max", opts.PidsMax, num(opts.PidsMax))
			set("cpu.max", quota, num(quota)+" "+num(cpuPeriod))
		} else {
			set("memory.limit_in_bytes", opts.MemoryMax, num(opts.MemoryMax))
			set("pids.max", opts.PidsMax, num(opts.PidsMax))
			// The period first: a quota is checked against the current period.
			set("cpu.cfs_period_us", quota, num(cpuPeriod))
			set("cpu.cfs_quota_us", quota, num(quota))
		}
		if !c.v2 && strings.Contains(p, "/devices/") {
			restrictDevices(d)
		}
		for _, file := range []string{"memory.max", "memory.limit_in_bytes", "pids.max", "cpu.max", "cpu.cfs_period_us", "cpu.cfs_quota_us"} {
			if v, ok := limits[file]; ok {
				_ = os.WriteFile(filepath.Join(d, file), []byte(v), 0)
			}
		}
	}
	return dirs
}

// joinCgroups moves pid into the step's cgroups; its children are born there.
func joinCgroups(dirs []string, pid int) {
	for _, d := range dirs {
		_ = os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	}
}

// removeCgroups removes step cgroups whose processes are gone.
func removeCgroups(dirs []string) {
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			// Tasks still exiting keep a cgroup busy for a moment; reconcile gets it later.
			continue
		}
	}
}

// leftovers lists the step cgroups whose owner satisfies owned.
func (c cgroups) list(owned func(cookie string) bool) []string {
	var out []string
	for _, p := range c.parents {
		names, _ := statedir.List(p)
		for _, n := range names {
			fi, err := os.Stat(filepath.Join(p, n))
			if err != nil || !fi.IsDir() {
				continue
			}
			if _, ok := proc.CookieOwner(n); ok && owned(n) {
				out = append(out, filepath.Join(p, n))
			}
		}
	}
	return out
}

// restrictDevices writes the device allow-list into a v1 devices cgroup: the step can open
// only the standard devices, whatever nodes it creates. Best effort: devicesRestricted
// tells whether it took.
func restrictDevices(dir string) {
	for _, rule := range confine.DeviceRules() {
		file := "devices.allow"
		if rule == "a" {
			file = "devices.deny"
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(rule), 0); err != nil {
			return
		}
	}
}

// devicesRestricted reports whether pid sits in one of dirs that is a devices cgroup
// denying what the allow-list does not name. cgroup v2 has no devices files (its device
// control is a BPF program): there the init makes mounts nodev instead (Config.NoDev).
func devicesRestricted(dirs []string, pid int) bool {
	for _, d := range dirs {
		list, err := os.ReadFile(filepath.Join(d, "devices.list"))
		if err != nil {
			continue
		}
		if strings.Contains(string(list), "a *:* rwm") {
			return false // the deny-all did not take
		}
		procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			return false
		}
		return slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid))
	}
	return false
}
