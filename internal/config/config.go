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
	Network     string            `toml:"network"` // sandbox: "host" or "none"
	Parallelism int               `toml:"parallelism"`
	KeepGoing   bool              `toml:"keep_going"`
	NoCache     bool              `toml:"no_cache"`
	Timeout     Duration          `toml:"timeout"`
	Format      string            `toml:"format"`
	Logs        bool              `toml:"logs"`
	NoColor     bool              `toml:"no_color"`
	Images      map[string]string `toml:"images"` // --map-image FROM=TO
	Env         map[string]string `toml:"env"`    // -e K=V
	Cache       Cache             `toml:"cache"`
	// MaxSourceSize bounds the packed workspace, e.g. "2GiB"; 0 = unlimited.
	MaxSourceSize Size `toml:"max_source_size"`
}

// Cache configures the snapshot cache.
type Cache struct {
	MaxEntries int  `toml:"max_entries"`
	MaxSize    Size `toml:"max_size"`
}

// Defaults are the built-in values.
func Defaults() Config {
	return Config{
		Backend:     "auto",
		Network:     "host",
		Parallelism: runtime.NumCPU(),
		Format:      "human",
		Images:      map[string]string{},
		Env:         map[string]string{},
		Cache:       Cache{MaxEntries: 256},
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

// ParseSize reads sizes like 100, 10KB, 512MiB, 2G.
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
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 512MiB or 2GB)", s)
	}
	return int64(n * float64(mult)), nil
}

// Paths lists the config files in increasing precedence for a source dir.
func Paths(dir string) []string {
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
	if err != nil {
		return errs.New(errs.ErrUsage, "config", "fix the TOML syntax or the value's type",
			"invalid config %s: %v", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return errs.New(errs.ErrUsage, "config", "remove or rename the key; see `hm run --help` for the keys",
			"unknown key %q in %s", und[0].String(), path)
	}
	return nil
}

// applyEnv reads HM_BACKEND, HM_PARALLELISM, HM_KEEP_GOING, HM_NO_CACHE, HM_TIMEOUT,
// HM_FORMAT, HM_LOGS, HM_NO_COLOR, HM_CACHE_MAX_ENTRIES, HM_CACHE_MAX_SIZE.
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
