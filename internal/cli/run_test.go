package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/vm/sandbox"
)

// limitsOf parses args as `hm run` flags and returns the settings' limits and network.
func limitsOf(t *testing.T, args []string, env map[string]string) (vmOptions, error) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	var f runFlags
	cmd := newRunCmd(IO{})
	cmd.RunE = nil
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	f.dir = t.TempDir()
	f.network, _ = cmd.Flags().GetString("network")
	f.pidsLimit, _ = cmd.Flags().GetString("pids-limit")
	f.memory, _ = cmd.Flags().GetString("memory")
	f.cpus, _ = cmd.Flags().GetString("cpus")
	s, err := resolveSettings(cmd.Flags(), &f, func(k string) string { return env[k] })
	return vmOptions{network: s.Network, pidsLimit: s.PidsLimit, memory: int64(s.Memory), cpus: float64(s.CPUs)}, err
}

func TestRunLimitFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want vmOptions
	}{
		{"defaults", nil, nil, vmOptions{network: "private", pidsLimit: config.DefaultPidsLimit}},
		{"flags", []string{"--pids-limit", "20", "--memory", "512m", "--cpus", "0.5", "--network", "none"}, nil,
			vmOptions{network: "none", pidsLimit: 20, memory: 512 << 20, cpus: 0.5}},
		{"no pids limit", []string{"--pids-limit", "0"}, nil, vmOptions{network: "private"}},
		{"docker's unlimited", []string{"--pids-limit=-1"}, nil, vmOptions{network: "private"}},
		{"flags over env", []string{"--memory", "1GiB", "--network", "host"},
			map[string]string{"HM_MEMORY": "64m", "HM_CPUS": "1", "HM_PIDS_LIMIT": "99", "HM_NETWORK": "none"},
			vmOptions{network: "host", pidsLimit: 99, memory: 1 << 30, cpus: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := limitsOf(t, tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(vmOptions{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Invalid limits are usage errors, reported by the CLI with a fix line, before any pipeline
// is read.
func TestRunLimitFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--pids-limit", "lots"}, {"--pids-limit=-5"}, {"--pids-limit", "2.5"},
		{"--memory", "1m"}, {"--memory", "big"}, {"--memory=-1g"},
		{"--cpus", "many"}, {"--cpus=-1"}, {"--cpus", "0.001"}, {"--cpus", "100000"},
		{"--network", "bridge"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			var out, errb bytes.Buffer
			code := Main(context.Background(), append([]string{"run", "-d", t.TempDir()}, args...),
				IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(string) string { return "" }})
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, errb.String())
			}
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "error[usage]: ") || !strings.HasPrefix(lines[1], "  fix    ") {
				t.Errorf("stderr:\n%s", errb.String())
			}
		})
	}
}

func TestBackendOptions(t *testing.T) {
	o := vmOptions{network: "none", pidsLimit: 20, memory: 64 << 20, cpus: 0.5}
	if diff := cmp.Diff(sandbox.Options{Network: sandbox.NetworkNone, NetworkNone: true, PidsMax: 20, MemoryMax: 64 << 20, CPUs: 0.5}, o.sandbox()); diff != "" {
		t.Errorf("sandbox (-want +got):\n%s", diff)
	}
	for network, mode := range map[string]string{"private": "", "none": "none", "host": "host"} {
		o.network = network
		d := o.docker("/state")
		if d.Network != mode || d.PidsLimit != 20 || d.Memory != 64<<20 || d.CPUs != 0.5 || d.StateDir != "/state" {
			t.Errorf("docker options for --network %s: %+v", network, d)
		}
	}
}
