// Package config loads hm's layered configuration (spec/cli.md): built-in defaults <
// ~/.config/hm/config.toml < <dir>/.hm/config.toml < HM_* environment < flags. Flags are
// applied by the CLI on top of what Load returns.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hmci/hm/internal/errs"
)

// Config is the merged configuration. Keys mirror the flags of `hm run`.
type Config struct {
	Backend     string            `toml:"backend"`
	Network     string            `toml:"network"` // "private" (default), "none" or "host"
	Parallelism int               `toml:"parallelism"`
	KeepGoing   bool              `toml:"keep_going"`
	NoCache     bool              `toml:"no_cache"`
	Timeout     Duration          `toml:"timeout"`
	Format      string            `toml:"format"`
	Logs        bool              `toml:"logs"`
	NoColor     bool              `toml:"no_color"`
	Images      map[string]string `toml:"images"` // --map-image FROM=TO
	Env         map[string]string `toml:"env"`    // -e K=V
	// Secrets are exposed as --secret is: NAME = "" (its value from the environment, else
	// .env), "env:VAR" or "file:PATH"; never a value (package secret).
	Secrets map[string]string `toml:"secrets"`
	Cache   Cache             `toml:"cache"`
	Builds  Builds            `toml:"builds"`
	// MaxSourceSize bounds the packed workspace, e.g. "2GiB"; 0 = unlimited.
	MaxSourceSize Size `toml:"max_source_size"`
	// Limits of every step on the isolating backends (sandbox, docker); 0 = none.
	PidsLimit int64  `toml:"pids_limit"` // tasks (processes and threads); default DefaultPidsLimit
	Memory    Size   `toml:"memory"`     // bytes, e.g. "512m", "2GiB"
	CPUs      CPUs   `toml:"cpus"`       // CPUs' worth of time, fractional like docker's --cpus
	Remote    Remote `toml:"remote"`
	// Artifacts is where steps' artifacts go (a build's in Artifacts/BUILD/STEP/): relative to
	// the source directory (the one holding .hm/); "" = .hm/artifacts. HM_ARTIFACTS.
	Artifacts string `toml:"artifacts"`
}

// Remote is where `hm run --backend remote` submits (spec/cli.md § Remote).
type Remote struct {
	Server string `toml:"server"` // base URL; HM_API_URL
	Org    string `toml:"org"`    // HM_ORG
	// Token is HM_API_TOKEN only: a config file (often committed) never holds one.
	Token string `toml:"-"`
}

// DefaultPidsLimit is the default limit on the tasks (processes and threads) of one step. It
// stops a fork bomb long before the host runs out of PIDs, and leaves room for what a step
// legitimately runs at once: parallel compilers, a JVM's or a test binary's threads. Podman
// defaults to 2048; CI steps run whole builds, so hm allows twice that.
const DefaultPidsLimit = 4096

// MinMemory is the smallest memory limit accepted (Docker's minimum: a smaller one cannot
// start a container).
const MinMemory = 6 << 20

// CPUs is a number of CPUs, fractional ("1.5"); in TOML a number or a string.
type CPUs float64

func (c *CPUs) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		*c = CPUs(v)
	case float64:
		*c = CPUs(v)
	case string:
		f, err := ParseCPUs(v)
		if err != nil {
			return err
		}
		*c = CPUs(f)
	default:
		return fmt.Errorf("cpus must be a number, e.g. 1.5")
	}
	return nil
}

// ParsePidsLimit reads a step's task limit: a positive number, or 0 or -1 for none (as
// docker's --pids-limit). None is returned as 0.
func ParsePidsLimit(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid pids limit %q (use a whole number such as 4096, or 0 for none)", s)
	}
	return checkPidsLimit(n)
}

func checkPidsLimit(n int64) (int64, error) {
	switch {
	case n == -1:
		return 0, nil
	case n < 0:
		return 0, fmt.Errorf("invalid pids limit %d (use a positive number, or 0 for none)", n)
	}
	return n, nil
}

// ParseMemory reads a step's memory limit, e.g. "512m" or "2GiB" (k, m, g are binary, as
// in docker's --memory); "0" means none.
func ParseMemory(s string) (int64, error) {
	n, err := ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("invalid memory limit %q (use e.g. 512m or 2GiB, or 0 for none)", s)
	}
	return n, checkMemory(n)
}

func checkMemory(n int64) error {
	if n != 0 && n < MinMemory {
		return fmt.Errorf("memory limit %d bytes is below the minimum of 6MiB", n)
	}
	return nil
}

// ParseCPUs reads a step's CPU limit, e.g. "1.5" (one and a half CPUs' worth of time per
// period, as docker's --cpus); "0" means none.
func ParseCPUs(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, fmt.Errorf("invalid cpus %q (use a number of CPUs such as 0.5 or 2, or 0 for none)", s)
	}
	return f, checkCPUs(f)
}

func checkCPUs(f float64) error {
	switch {
	case f != f || f < 0: // NaN or negative
		return fmt.Errorf("invalid cpus %v (use a number of CPUs such as 0.5 or 2, or 0 for none)", f)
	case f != 0 && f < 0.01:
		return fmt.Errorf("cpus %v is below the minimum of 0.01", f)
	case f > float64(runtime.NumCPU()):
		return fmt.Errorf("cpus %v is more than the %d CPUs of this machine", f, runtime.NumCPU())
	}
	return nil
}

// checkLimits validates the limits after a layer was applied, so the error names the layer
// that introduced a bad value.
func (c *Config) checkLimits() error {
	n, err := checkPidsLimit(c.PidsLimit)
	if err != nil {
		return fmt.Errorf("pids_limit: %w", err)
	}
	c.PidsLimit = n
	if err := checkMemory(int64(c.Memory)); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if err := checkCPUs(float64(c.CPUs)); err != nil {
		return fmt.Errorf("cpus: %w", err)
	}
	return nil
}

// Cache configures the snapshot cache.
type Cache struct {
	MaxEntries int  `toml:"max_entries"`
	MaxSize    Size `toml:"max_size"`
}

// Builds bounds the build records under STATE/builds (`hm logs`, `hm builds`): the newest
// Keep builds (0: no count limit), none older than MaxAge (0: no age limit).
type Builds struct {
	Keep   int      `toml:"keep"`
	MaxAge Duration `toml:"max_age"`
}

// Defaults are the built-in values.
func Defaults() Config {
	return Config{
		Backend:     "auto",
		Network:     "private",
		PidsLimit:   DefaultPidsLimit,
		Parallelism: runtime.NumCPU(),
		Format:      "human",
		Images:      map[string]string{},
		Env:         map[string]string{},
		Secrets:     map[string]string{},
		Cache:       Cache{MaxEntries: 256},
		Builds:      Builds{Keep: 50, MaxAge: Duration{30 * 24 * time.Hour}},
	}
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m") in TOML.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Size is a byte count written as "512MiB", "2GB", "1048576".
type Size int64

func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	*s = Size(v)
	return err
}

// ParseSize reads sizes like 100, 10KB, 512MiB, 2G, 512m. Units are case-insensitive; K, M,
// G and T alone are binary (as docker's), KB, MB, GB and TB decimal.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if len(t) >= len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 512MiB or 2GB)", s)
	}
	return int64(n * float64(mult)), nil
}

// Paths lists the config files in increasing precedence for a source dir, absolute: the
// errors that name them must say which file, wherever hm was started.
func Paths(dir string) []string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	var out []string
	if base, err := os.UserConfigDir(); err == nil {
		out = append(out, filepath.Join(base, "hm", "config.toml"))
	}
	return append(out, filepath.Join(dir, ".hm", "config.toml"))
}

// Load merges defaults, the config files of dir and the HM_* environment.
func Load(dir string, getenv func(string) string) (Config, error) {
	c := Defaults()
	for _, p := range Paths(dir) {
		if err := loadFile(&c, p); err != nil {
			return c, err
		}
	}
	if err := applyEnv(&c, getenv); err != nil {
		return c, err
	}
	return c, nil
}

func loadFile(c *Config, path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return errs.New(errs.ErrUsage, "config", "check the file's permissions", "cannot read %s: %v", path, err)
	}
	md, err := toml.Decode(string(data), c)
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// PATH:LINE:COL, as compilers write it, so that editors and terminals jump there.
		return errs.New(errs.ErrUsage, "config", "fix the TOML syntax or the value's type",
			"invalid config %s:%d:%d: %s", path, pe.Position.Line, pe.Position.Col, pe.Message)
	}
	if err != nil {
		return errs.New(errs.ErrUsage, "config", "fix the TOML syntax or the value's type",
			"invalid config %s: %v", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return errs.New(errs.ErrUsage, "config", "remove or rename the key; see `hm run --help` for the keys",
			"unknown key %q in %s", und[0].String(), path)
	}
	if err := c.checkLimits(); err != nil {
		return errs.New(errs.ErrUsage, "config", "fix the value in "+path, "invalid config %s: %v", path, err)
	}
	return nil
}

// applyEnv reads HM_BACKEND, HM_NETWORK, HM_PARALLELISM, HM_KEEP_GOING, HM_NO_CACHE,
// HM_TIMEOUT, HM_FORMAT, HM_LOGS, HM_NO_COLOR, HM_CACHE_MAX_ENTRIES, HM_CACHE_MAX_SIZE,
// HM_BUILDS_KEEP, HM_BUILDS_MAX_AGE, HM_PIDS_LIMIT, HM_MEMORY, HM_CPUS, HM_ARTIFACTS, and the remote
// backend's HM_API_URL, HM_API_TOKEN and HM_ORG.
func applyEnv(c *Config, getenv func(string) string) error {
	bad := func(name, v string, err error) error {
		return errs.New(errs.ErrUsage, "config", fmt.Sprintf("fix or unset %s", name),
			"invalid %s=%q: %v", name, v, err)
	}
	for _, f := range []struct {
		name string
		set  func(v string) error
	}{
		{"HM_BACKEND", func(v string) error { c.Backend = v; return nil }},
		{"HM_NETWORK", func(v string) error { c.Network = v; return nil }},
		{"HM_PARALLELISM", func(v string) (err error) { c.Parallelism, err = strconv.Atoi(v); return }},
		{"HM_KEEP_GOING", func(v string) (err error) { c.KeepGoing, err = strconv.ParseBool(v); return }},
		{"HM_NO_CACHE", func(v string) (err error) { c.NoCache, err = strconv.ParseBool(v); return }},
		{"HM_TIMEOUT", func(v string) (err error) { c.Timeout.Duration, err = time.ParseDuration(v); return }},
		{"HM_FORMAT", func(v string) error { c.Format = v; return nil }},
		{"HM_LOGS", func(v string) (err error) { c.Logs, err = strconv.ParseBool(v); return }},
		{"HM_NO_COLOR", func(v string) (err error) { c.NoColor, err = strconv.ParseBool(v); return }},
		{"HM_CACHE_MAX_ENTRIES", func(v string) (err error) { c.Cache.MaxEntries, err = strconv.Atoi(v); return }},
		{"HM_CACHE_MAX_SIZE", func(v string) error { n, err := ParseSize(v); c.Cache.MaxSize = Size(n); return err }},
		{"HM_BUILDS_KEEP", func(v string) (err error) { c.Builds.Keep, err = strconv.Atoi(v); return }},
		{"HM_BUILDS_MAX_AGE", func(v string) (err error) { c.Builds.MaxAge.Duration, err = time.ParseDuration(v); return }},
		{"HM_PIDS_LIMIT", func(v string) (err error) { c.PidsLimit, err = ParsePidsLimit(v); return }},
		{"HM_MEMORY", func(v string) error { n, err := ParseMemory(v); c.Memory = Size(n); return err }},
		{"HM_CPUS", func(v string) error { f, err := ParseCPUs(v); c.CPUs = CPUs(f); return err }},
		{"HM_ARTIFACTS", func(v string) error { c.Artifacts = v; return nil }},
		{"HM_API_URL", func(v string) error { c.Remote.Server = v; return nil }},
		{"HM_API_TOKEN", func(v string) error { c.Remote.Token = v; return nil }},
		{"HM_ORG", func(v string) error { c.Remote.Org = v; return nil }},
	} {
		if v := getenv(f.name); v != "" {
			if err := f.set(v); err != nil {
				return bad(f.name, v, err)
			}
		}
	}
	return nil
}

// StateDir is where hm keeps its state: HM_STATE_DIR, else $XDG_CACHE_HOME/hm, else
// ~/.cache/hm.
func StateDir(getenv func(string) string) (string, error) {
	if d := getenv("HM_STATE_DIR"); d != "" {
		return filepath.Abs(d)
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "hm"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errs.New(errs.ErrUsage, "state_dir", "set HM_STATE_DIR", "cannot find a state directory: %v", err)
	}
	return filepath.Join(home, ".cache", "hm"), nil
}
