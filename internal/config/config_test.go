package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLayering(t *testing.T) {
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	dir := t.TempDir()
	writeFile(t, filepath.Join(home, "hm", "config.toml"), `
backend = "docker"
parallelism = 3
timeout = "5m"
[images]
"a" = "user-a"
"b" = "user-b"
[cache]
max_entries = 10
[secrets]
NPM_TOKEN = "env:MY_NPM"
`)
	writeFile(t, filepath.Join(dir, ".hm", "config.toml"), `
parallelism = 6
[images]
"b" = "repo-b"
[cache]
max_size = "1GiB"
[builds]
keep = 5
max_age = "24h"
[secrets]
GH_TOKEN = ""
`)
	env := map[string]string{"HM_BACKEND": "host", "HM_CACHE_MAX_ENTRIES": "7", "HM_BUILDS_KEEP": "9"}
	c, err := Load(dir, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Backend = "host"                                         // env over user file
	want.Parallelism = 6                                          // repo file over user file
	want.Timeout = Duration{5 * time.Minute}                      // user file over default
	want.Images = map[string]string{"a": "user-a", "b": "repo-b"} // tables merge key by key
	want.Cache = Cache{MaxEntries: 7, MaxSize: 1 << 30}
	want.Secrets = map[string]string{"NPM_TOKEN": "env:MY_NPM", "GH_TOKEN": ""}
	want.Builds = Builds{Keep: 9, MaxAge: Duration{24 * time.Hour}}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Every config error names the file with its absolute path (the user's or the repository's),
// or the variable.
func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name      string
		user      bool // the file is ~/.config/hm/config.toml, not .hm/config.toml
		file      string
		env       map[string]string
		wantInMsg string // with FILE for the file's path
	}{
		{"bad toml", false, "backend = ", nil, "invalid config FILE:1:"},
		{"bad toml in the user's file", true, "parallelism = 2\nbackend = ", nil, "invalid config FILE:2:"},
		{"unknown key", false, "paralelism = 2", nil, `unknown key "paralelism" in FILE`},
		{"wrong type", false, `parallelism = "many"`, nil, "invalid config FILE: "},
		{"bad duration", true, `timeout = "soon"`, nil, "invalid config FILE:1:"},
		{"bad limit", false, `pids_limit = -3`, nil, "invalid config FILE: "},
		{"bad env", false, "", map[string]string{"HM_PARALLELISM": "x"}, `invalid HM_PARALLELISM="x"`},
		{"bad builds age", false, "", map[string]string{"HM_BUILDS_MAX_AGE": "a month"}, `HM_BUILDS_MAX_AGE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			t.Setenv("XDG_CONFIG_HOME", home)
			dir := t.TempDir()
			path := filepath.Join(dir, ".hm", "config.toml")
			if tt.user {
				path = filepath.Join(home, "hm", "config.toml")
			}
			writeFile(t, path, tt.file)
			// From inside dir, as `hm run` with no -d: the message still says where the file is.
			t.Chdir(dir)
			_, err := Load(".", func(k string) string { return tt.env[k] })
			var e *errs.Error
			if !errors.As(err, &e) || !errors.Is(err, errs.ErrUsage) || e.Fix == "" {
				t.Fatalf("got %v, want a usage error with a fix", err)
			}
			if want := strings.ReplaceAll(tt.wantInMsg, "FILE", path); !strings.Contains(e.Msg, want) {
				t.Errorf("message %q does not contain %q", e.Msg, want)
			}
		})
	}
}

func TestStateDir(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HM_STATE_DIR": "/x/state", "XDG_CACHE_HOME": "/c"}, "/x/state"},
		{map[string]string{"XDG_CACHE_HOME": "/c"}, "/c/hm"},
	}
	for _, tt := range tests {
		got, err := StateDir(func(k string) string { return tt.env[k] })
		if err != nil || got != tt.want {
			t.Errorf("StateDir(%v) = %q, %v; want %q", tt.env, got, err, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"100": 100, "10KB": 10000, "512MiB": 512 << 20, "2G": 2 << 30, "1.5GiB": 3 << 29} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseSize("lots"); err == nil {
		t.Error("ParseSize accepted garbage")
	}
}

func TestLimits(t *testing.T) {
	type limits struct {
		Pids   int64
		Memory Size
		CPUs   CPUs
	}
	tests := []struct {
		name, file string
		env        map[string]string
		want       limits
	}{
		{"defaults", "", nil, limits{Pids: DefaultPidsLimit}},
		{"file", "pids_limit = 100\nmemory = \"512m\"\ncpus = 1.5", nil, limits{100, 512 << 20, 1.5}},
		{"file integer cpus", "cpus = 1", nil, limits{DefaultPidsLimit, 0, 1}},
		{"file string cpus", `cpus = "0.5"`, nil, limits{DefaultPidsLimit, 0, 0.5}},
		{"file no pids limit", "pids_limit = 0", nil, limits{}},
		{"file docker's unlimited", "pids_limit = -1", nil, limits{}},
		{"env over file", "pids_limit = 100\nmemory = \"1g\"",
			map[string]string{"HM_PIDS_LIMIT": "20", "HM_MEMORY": "2GiB", "HM_CPUS": "0.25"}, limits{20, 2 << 30, 0.25}},
		{"env none", "memory = \"1g\"", map[string]string{"HM_PIDS_LIMIT": "-1", "HM_MEMORY": "0", "HM_CPUS": "0"}, limits{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, ".hm", "config.toml"), tt.file)
			c, err := Load(dir, func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, limits{c.PidsLimit, c.Memory, c.CPUs}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestLimitErrors(t *testing.T) {
	tests := []struct {
		name, file string
		env        map[string]string
	}{
		{"negative pids", "pids_limit = -2", nil},
		{"pids not a number", `pids_limit = "many"`, nil},
		{"memory garbage", `memory = "lots"`, nil},
		{"memory below minimum", `memory = "1m"`, nil},
		{"negative cpus", "cpus = -1", nil},
		{"cpus below minimum", "cpus = 0.001", nil},
		{"more cpus than the machine", "cpus = 100000", nil},
		{"cpus of the wrong type", "cpus = true", nil},
		{"env pids", "", map[string]string{"HM_PIDS_LIMIT": "1.5"}},
		{"env memory", "", map[string]string{"HM_MEMORY": "-5m"}},
		{"env cpus", "", map[string]string{"HM_CPUS": "two"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", t.TempDir())
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, ".hm", "config.toml"), tt.file)
			_, err := Load(dir, func(k string) string { return tt.env[k] })
			var e *errs.Error
			if !errors.As(err, &e) || !errors.Is(err, errs.ErrUsage) || e.Fix == "" {
				t.Fatalf("got %v, want a usage error with a fix", err)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	for in, want := range map[string]int64{"512m": 512 << 20, "2GiB": 2 << 30, "6M": 6 << 20, "1g": 1 << 30, "0": 0} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"5m", "-1g", "", "1x"} {
		if _, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) accepted", in)
		}
	}
	for in, want := range map[string]float64{"0.5": 0.5, "1": 1, " 0.01 ": 0.01, "0": 0} {
		if got, err := ParseCPUs(in); err != nil || got != want {
			t.Errorf("ParseCPUs(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "NaN", "0.001", "1e9", "one"} {
		if _, err := ParseCPUs(in); err == nil {
			t.Errorf("ParseCPUs(%q) accepted", in)
		}
	}
	for in, want := range map[string]int64{"20": 20, "0": 0, "-1": 0, "4096": 4096} {
		if got, err := ParsePidsLimit(in); err != nil || got != want {
			t.Errorf("ParsePidsLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-2", "1.5", "", "x"} {
		if _, err := ParsePidsLimit(in); err == nil {
			t.Errorf("ParsePidsLimit(%q) accepted", in)
		}
	}
}
