package prepare

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/source"
)

// isolateGit keeps the machine's git config and global excludes out of the walk.
func isolateGit(t *testing.T) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", "")
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// chainIR is deps (on_change go.sum) -> test (forever), plus lint (not cached), with an
// unknown field that must survive verbatim.
const chainIR = `{"version": "0", "default_image": "busybox", "x-unknown": {"kept": true},
 "graph": {"nodes": [
  {"step": {"key": "deps", "cmd": "go mod download", "cache": {"policy": "on_change", "paths": ["go.sum", "nope.sum"]}}, "env": {"A": "1"}},
  {"step": {"key": "test", "cmd": "go test", "cache": {"policy": "forever", "env_keys": ["HM_PREP_TEST"]}}},
  {"step": {"key": "lint", "cmd": "vet"}}
 ], "edges": [[0, 1, "builds_in"], [0, 2, "depends_on"]]}}`

func TestNew(t *testing.T) {
	isolateGit(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"go.sum": "sum", "main.go": "package main", ".hm/p.json": chainIR})
	getenv := func(k string) string { return map[string]string{"HM_PREP_TEST": "v"}[k] }
	opts := Options{Parallelism: 3, KeepGoing: true, NoCache: true, Timeout: 90 * time.Second,
		Env: []string{"A=1", "B=2", "A=3"}, MapImage: map[string]string{"busybox": "host"}}
	b, err := New(context.Background(), Input{IR: []byte(chainIR), Slug: "ci", Dir: dir, Getenv: getenv, Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	p, err := ir.Parse([]byte(chainIR))
	if err != nil {
		t.Fatal(err)
	}
	wantSteps, err := cachekey.Compute(cachekey.Context{Slug: "ci", Dir: dir, Getenv: getenv}, p)
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		IR, Slug, Org, Dir string
		Steps              []string
		Keys               []string
		Fingerprints       int
		Warned             []bool
		Options            Options
		Files              []string
	}
	got := summary{IR: string(b.IR), Slug: b.Slug, Org: b.Org, Dir: b.Source.Dir, Keys: b.Keys(), Options: b.Options}
	for _, s := range b.Plan.Steps {
		got.Steps = append(got.Steps, s.Key)
	}
	for i, r := range b.Steps {
		if r.Fingerprint != "" && r.Fingerprint == wantSteps[i].Fingerprint {
			got.Fingerprints++
		}
		got.Warned = append(got.Warned, len(b.Warnings()[i]) > 0)
	}
	for _, e := range b.Source.Tree.Entries {
		got.Files = append(got.Files, e.Path)
	}
	want := summary{
		IR: chainIR, Slug: "ci", Org: cachekey.DefaultOrg, Dir: dir,
		Steps:        []string{"deps", "test", "lint"},
		Keys:         []string{wantSteps[0].Key, wantSteps[1].Key, ""},
		Fingerprints: 3,
		Warned:       []bool{true, false, false}, // nope.sum matches nothing
		Options:      opts,
		Files:        []string{"go.sum", "main.go"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("build (-want +got):\n%s", diff)
	}
	if !b.Cached() || b.Keys()[0] == "" || b.Keys()[1] == "" {
		t.Errorf("keys %q: want deps and test keyed", b.Keys())
	}
	if diff := cmp.Diff(map[string]string{"A": "3", "B": "2"}, b.Options.EnvMap()); diff != "" {
		t.Errorf("EnvMap (-want +got):\n%s", diff)
	}
}

func TestNewRefused(t *testing.T) {
	isolateGit(t)
	uncachedParent := `{"version": "0", "graph": {"nodes": [{"step": {"key": "a", "cmd": "x"}},
	  {"step": {"key": "b", "cmd": "y", "cache": {"policy": "forever"}}}], "edges": [[0, 1, "builds_in"]]}}`
	tests := []struct {
		name     string
		ir       string
		files    map[string]string
		dir      string // relative to the temp dir; "" = the temp dir
		maxBytes int64
		class    error
		code     string // the user-facing code, when there is one
	}{
		{name: "invalid IR", ir: `{"version": "1"}`, class: errs.ErrInvalid},
		{name: "cached child of an uncached parent", ir: uncachedParent, class: errs.ErrInvalid, code: "cache_parent_uncached"},
		{name: "missing source", ir: chainIR, dir: "nope", class: errs.ErrUsage, code: "source_not_found"},
		{name: "source over the bound", ir: chainIR, files: map[string]string{"big": strings.Repeat("x", 2048), "small": "x"},
			maxBytes: 1024, class: errs.ErrUsage, code: "source_too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, tc.files)
			_, err := New(context.Background(), Input{IR: []byte(tc.ir), Slug: "ci",
				Dir: filepath.Join(root, tc.dir), MaxSourceBytes: tc.maxBytes})
			if !errors.Is(err, tc.class) {
				t.Fatalf("err = %v, want class %v", err, tc.class)
			}
			var ue *errs.Error
			if tc.code != "" && (!errors.As(err, &ue) || ue.Code != tc.code) {
				t.Errorf("err = %v (%+v), want code %s", err, ue, tc.code)
			}
		})
	}
	// The size bound names the biggest path, so that the fix line can.
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"vendor/blob": strings.Repeat("x", 4096), "a": "1"})
	_, err := New(context.Background(), Input{IR: []byte(chainIR), Dir: root, MaxSourceBytes: 100})
	var se *source.SizeError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a *source.SizeError", err)
	}
	if diff := cmp.Diff([]source.PathSize{{Path: "vendor/", Bytes: 4096}, {Path: "a", Bytes: 1}}, se.Largest); diff != "" {
		t.Errorf("largest (-want +got):\n%s", diff)
	}
}

// TestArchiveOnce: the source is packed on the first ask only, every caller gets the same
// archive, and Close removes its file.
func TestArchiveOnce(t *testing.T) {
	isolateGit(t)
	dir, tmp := t.TempDir(), t.TempDir()
	writeFiles(t, dir, map[string]string{"main.go": "package main", ".gitignore": "out/\n", "out/bin": "ELF"})
	b, err := New(context.Background(), Input{IR: []byte(chainIR), Slug: "ci", Dir: dir, TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(tmp); len(des) != 0 {
		t.Fatalf("New packed an archive already: %v", des)
	}
	var wg sync.WaitGroup
	got := make([]*source.Archive, 4)
	for i := range got {
		wg.Go(func() {
			a, err := b.Source.Archive(context.Background())
			if err != nil {
				t.Error(err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	for _, a := range got[1:] {
		if a != got[0] {
			t.Fatalf("archives %p and %p: want one", got[0], a)
		}
	}
	if des, _ := os.ReadDir(tmp); len(des) != 1 {
		t.Fatalf("temp dir holds %d files, want the one archive", len(des))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(got[0].Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("archive %s still there after Close (%v)", got[0].Path, err)
	}
	again, err := b.Source.Archive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if again.Digest != got[0].Digest {
		t.Errorf("repacked digest %s, first %s", again.Digest, got[0].Digest)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b2, err := New(context.Background(), Input{IR: []byte(chainIR), Dir: dir, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Source.Archive(ctx); !errors.Is(err, errs.ErrCanceled) {
		t.Errorf("canceled pack: err = %v, want errs.ErrCanceled", err)
	}
	if _, err := b2.Source.Archive(context.Background()); err != nil {
		t.Errorf("a canceled pack is remembered: %v", err)
	}
	b2.Close()
}

func TestOptions(t *testing.T) {
	tests := []struct {
		timeout time.Duration
		want    int64
	}{{0, 0}, {-time.Second, 0}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {10 * time.Minute, 600}}
	for _, tc := range tests {
		if got := (Options{Timeout: tc.timeout}).TimeoutSeconds(); got != tc.want {
			t.Errorf("TimeoutSeconds(%v) = %d, want %d", tc.timeout, got, tc.want)
		}
	}
}
