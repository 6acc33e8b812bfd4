package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// Scripts that measure a step's limits from inside, by behaviour (the cgroup files are not
// visible inside every backend's machine). Each prints KEY=VALUE lines.
const (
	// pidsProbe starts 40 sleeps and counts the forks that succeeded ($! changes); a fork
	// refused by the pids limit ends or skips the loop. Only builtins run once the loop is
	// done: a full pids budget forks nothing.
	pidsProbe = `sh -c 'i=0 n=0 last=; while [ $i -lt 40 ]; do sleep 30 & [ "$!" != "$last" ] && n=$((n+1)) last=$!; echo $n > /tmp/started; i=$((i+1)); done' 2>/dev/null
read -r n < /tmp/started; echo started=$n
for f in /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; do [ -r $f ] && read -r max < $f && echo max=$max; done; true`
	// memProbe makes dd allocate and fill a 64 MiB buffer; over the memory limit the OOM
	// killer ends it.
	memProbe = `dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo rc=$?`
	// cpuProbe spins two shells for two seconds and reports the CPU time they got and the
	// wall time, both in 1/100 s.
	cpuProbe = `sh -c 'while :; do :; done' & a=$!
sh -c 'while :; do :; done' & b=$!
read -r u0 rest < /proc/uptime
sleep 2
read -r u1 rest < /proc/uptime
t=0; for p in $a $b; do read -r f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11 f12 f13 ut st rest < /proc/$p/stat; t=$((t+ut+st)); done
kill $a $b
echo cpu=$t wall=$(( ${u1%.*}${u1#*.} - ${u0%.*}${u0#*.} ))`
)

// probe runs script as the one step of a build with extra flags and returns its KEY=VALUE
// output.
func probe(t *testing.T, bc backendCase, script string, flags ...string) map[string]int {
	t.Helper()
	e := newBackendEnv(t, bc)
	ir := e.writeIR("p.json", graph(0, []string{stepJSON("probe", script, `"image":"ubuntu:24.04"`)}, ""))
	args := append(append([]string{"run", "--file", ir, "--format", "json", "--no-cache"}, bc.args...), flags...)
	r := e.run(args...)
	if r.code != 0 {
		t.Fatalf("hm %v: exit %d\n%s", flags, r.code, r.stderr)
	}
	out := map[string]int{}
	for _, l := range view(t, parseEvents(t, r.stdout)).lines("probe") {
		for _, f := range strings.Fields(l) {
			k, v, ok := strings.Cut(f, "=")
			if n, err := strconv.Atoi(v); ok && err == nil {
				out[k] = n
			}
		}
	}
	t.Logf("%v: %v", flags, out)
	return out
}

// --pids-limit, --memory and --cpus bind every step, on every isolating backend.
func TestStepLimits(t *testing.T) {
	for _, bc := range extraBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			t.Run("pids", func(t *testing.T) {
				if n := probe(t, bc, pidsProbe, "--pids-limit", "20")["started"]; n < 1 || n >= 20 {
					t.Errorf("--pids-limit 20: %d sleeps started, want 1..19", n)
				}
				// The default limit (4096) leaves room for all of them. Where the step sees
				// its cgroup (docker), it reads the default there.
				got := probe(t, bc, pidsProbe)
				if got["started"] != 40 {
					t.Errorf("default pids limit: %d sleeps started, want 40", got["started"])
				}
				if max, ok := got["max"]; ok && max != 4096 {
					t.Errorf("default pids limit: pids.max %d, want 4096", max)
				}
			})
			t.Run("memory", func(t *testing.T) {
				if rc := probe(t, bc, memProbe, "--memory", "32m")["rc"]; rc == 0 {
					t.Errorf("--memory 32m: a 64 MiB allocation succeeded")
				}
				if rc := probe(t, bc, memProbe)["rc"]; rc != 0 {
					t.Errorf("no memory limit: a 64 MiB allocation failed (exit %d)", rc)
				}
			})
			t.Run("cpus", func(t *testing.T) {
				// Two spinning shells under --cpus 0.2 get at most 0.2 s of CPU per second
				// of wall time (plus one period's burst); an upper bound the kernel keeps
				// however loaded the machine is.
				got := probe(t, bc, cpuProbe, "--cpus", "0.2")
				if got["wall"] < 150 || got["cpu"] > got["wall"]*3/10+10 {
					t.Errorf("--cpus 0.2: %d/100 s of CPU in %d/100 s, want at most %d", got["cpu"], got["wall"], got["wall"]*3/10+10)
				}
			})
		})
	}
}

// Invalid limits are usage errors, whichever layer gives them.
func TestStepLimitErrors(t *testing.T) {
	e := newEnv(t)
	ir := e.writeIR("p.json", graph(0, []string{stepJSON("a", "true", "")}, ""))
	for _, args := range [][]string{{"--pids-limit", "-3"}, {"--memory", "1k"}, {"--cpus", "lots"}} {
		r := e.run(append([]string{"run", "--file", ir, "--backend", "host"}, args...)...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, "error[usage]: ") || !strings.Contains(r.stderr, "\n  fix    ") {
			t.Errorf("hm run %v: exit %d, stderr:\n%s", args, r.code, r.stderr)
		}
	}
	c := e.cmd(t.Context(), "run", "--file", ir, "--backend", "host")
	c.Env = append(c.Env, "HM_MEMORY=huge")
	out, err := c.CombinedOutput()
	if c.ProcessState == nil || c.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "HM_MEMORY") {
		t.Errorf("HM_MEMORY=huge: %v\n%s", err, out)
	}
}
