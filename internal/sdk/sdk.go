// Package sdk serves the Go SDK embedded in the hm binary (package hm, ../../sdk.go) to the
// Go toolchain, so that `go run` of a repository's .hm/*.go builds against exactly the SDK of
// the running hm, offline, from any repository: the module github.com/hmci/hm is not
// published, so `go get` cannot fetch it.
//
// On disk the SDK is a module of path github.com/hmci/hm holding only package pipeline and the
// internal packages it imports, with no requirements, under <state dir>/sdk/<content hash>/.
// The directory is written once (to a temporary name, then renamed: a crash leaves no
// half-written SDK under the final name), its files read-only because go builds whatever is
// there, and never pruned (one per hm version, about 100 KB).
//
// Prepare says how to run a .hm/ main package against it; it never edits the user's files:
//   - in a module (a go.mod in .hm/ or above): `go run -modfile=TMP/go.mod .`, TMP/go.mod
//     being the user's go.mod plus a requirement of github.com/hmci/hm replaced by the SDK
//     directory (and TMP/go.sum a copy of theirs). hm's own module runs as it is, so hm's
//     examples build against the working tree.
//   - in no module: the .hm/*.go files are copied into a temporary module that requires the
//     SDK the same way, so only the SDK and the standard library can be imported.
//
// GOWORK=off because -modfile cannot be used in workspace mode, and a go.work of the user's
// (or the one `hm sdk path` helps write for editors) must not change what hm renders. The
// user's GOFLAGS, GOPROXY and GOSUMDB pass through: a directory replacement needs neither the
// network nor a checksum.
package sdk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	goversion "go/version"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/mod/modfile"

	hm "github.com/hmci/hm"
)

// ModulePath is the SDK's module path: the path the pipeline package is imported by.
const ModulePath = "github.com/hmci/hm"

// version is what the requirement names; the replacement makes it meaningless, and this is
// the form the go command itself writes for an unversioned module.
const version = "v0.0.0-00010101000000-000000000000"

// Files returns the SDK module's files by slash-separated path: the embedded non-test Go
// files and a go.mod of ModulePath with hm's go directive and no requirements (hm's own would
// make the toolchain load modules the SDK does not import).
func Files() (map[string][]byte, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(hm.SDKSource, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == "go.mod" || strings.HasSuffix(path, "_test.go") {
			return err
		}
		data, err := hm.SDKSource.ReadFile(path)
		files[path] = data
		return err
	})
	if err != nil {
		return nil, err
	}
	goVersion, err := GoVersion()
	if err != nil {
		return nil, err
	}
	files["go.mod"] = []byte(fmt.Sprintf("module %s\n\ngo %s\n", ModulePath, goVersion))
	return files, nil
}

// GoVersion is the go directive of the module hm was built from: the language version the
// SDK is tested with.
func GoVersion() (string, error) {
	data, err := hm.SDKSource.ReadFile("go.mod")
	if err != nil {
		return "", err
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil || f.Go == nil {
		return "", fmt.Errorf("sdk: hm's embedded go.mod has no go directive: %v", err)
	}
	return f.Go.Version, nil
}

// hash names a set of files by their paths and contents.
func hash(files map[string][]byte) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Dir writes the SDK under stateDir (once per content) and returns its directory.
func Dir(stateDir string) (string, error) {
	files, err := Files()
	if err != nil {
		return "", err
	}
	parent := filepath.Join(stateDir, "sdk")
	dst := filepath.Join(parent, hash(files))
	if _, err := os.Stat(filepath.Join(dst, "go.mod")); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(parent, ".tmp-")
	if err != nil {
		return "", err
	}
	if err := writeFiles(tmp, files); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		// Another hm wrote the same content first.
		if _, serr := os.Stat(filepath.Join(dst, "go.mod")); serr == nil {
			return dst, nil
		}
		return "", err
	}
	return dst, nil
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o444); err != nil {
			return err
		}
	}
	return nil
}

// Invocation is how to run a .hm/ main package: `go Args...` in Dir with Env added.
type Invocation struct {
	Dir  string
	Args []string
	Env  []string
	tmp  string
}

// Cleanup removes what Prepare wrote for this invocation (not the SDK directory).
func (inv Invocation) Cleanup() {
	if inv.tmp != "" {
		os.RemoveAll(inv.tmp)
	}
}

// Prepare returns the invocation that runs the main package in hmDir against the SDK written
// under stateDir (or, when that cannot be written, a copy for this invocation only).
func Prepare(hmDir, stateDir string) (Invocation, error) {
	hmDir, err := filepath.Abs(hmDir)
	if err != nil {
		return Invocation{}, err
	}
	goMod, err := findGoMod(hmDir)
	if err != nil {
		return Invocation{}, err
	}
	var user *modfile.File
	if goMod != "" {
		data, err := os.ReadFile(goMod)
		if err != nil {
			return Invocation{}, err
		}
		if user, err = modfile.Parse(goMod, data, nil); err != nil {
			return Invocation{}, err
		}
		if user.Module != nil && user.Module.Mod.Path == ModulePath {
			return Invocation{Dir: hmDir, Args: []string{"run", "."}}, nil
		}
	}
	tmp, err := os.MkdirTemp("", "hm-go-run-")
	if err != nil {
		return Invocation{}, err
	}
	inv := Invocation{tmp: tmp, Env: []string{"GOWORK=off"}}
	if err := inv.prepare(hmDir, goMod, user, stateDir); err != nil {
		inv.Cleanup()
		return Invocation{}, err
	}
	return inv, nil
}

func (inv *Invocation) prepare(hmDir, goMod string, user *modfile.File, stateDir string) error {
	sdkDir, err := Dir(stateDir)
	if err != nil {
		if sdkDir, err = Dir(filepath.Join(inv.tmp, "state")); err != nil {
			return err
		}
	}
	if user == nil {
		// No module: a module of the .hm/ files alone.
		modDir := filepath.Join(inv.tmp, "main")
		if err := copyGoFiles(hmDir, modDir); err != nil {
			return err
		}
		user = &modfile.File{}
		if err := user.AddModuleStmt("hm.local/pipeline"); err != nil {
			return err
		}
		inv.Dir, inv.Args = modDir, []string{"run", "."}
		return writeModFile(filepath.Join(modDir, "go.mod"), user, sdkDir)
	}
	if sum, err := os.ReadFile(strings.TrimSuffix(goMod, ".mod") + ".sum"); err == nil {
		if err := os.WriteFile(filepath.Join(inv.tmp, "go.sum"), sum, 0o644); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	modPath := filepath.Join(inv.tmp, "go.mod")
	inv.Dir, inv.Args = hmDir, []string{"run", "-modfile=" + modPath, "."}
	return writeModFile(modPath, user, sdkDir)
}

// writeModFile writes f requiring the SDK module replaced by sdkDir, at a go version no lower
// than the SDK's (the go command refuses a main module older than a dependency).
func writeModFile(path string, f *modfile.File, sdkDir string) error {
	goVersion, err := GoVersion()
	if err != nil {
		return err
	}
	if f.Go == nil || goversion.Compare("go"+f.Go.Version, "go"+goVersion) < 0 {
		if err := f.AddGoStmt(goVersion); err != nil {
			return err
		}
	}
	// The user's own requirement or replacement of the SDK (a clone, say) gives way to the
	// SDK of the running hm, which is what the IR must come from.
	if err := f.DropRequire(ModulePath); err != nil {
		return err
	}
	for _, r := range f.Replace {
		if r.Old.Path == ModulePath {
			if err := f.DropReplace(ModulePath, r.Old.Version); err != nil {
				return err
			}
		}
	}
	if err := f.AddRequire(ModulePath, version); err != nil {
		return err
	}
	if err := f.AddReplace(ModulePath, "", sdkDir, ""); err != nil {
		return err
	}
	f.Cleanup()
	data, err := f.Format()
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// findGoMod returns the go.mod of the module dir is in, as the go command finds it, or "".
func findGoMod(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "go.mod")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if d == filepath.Dir(d) {
			return "", nil
		}
	}
}

func copyGoFiles(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, n), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
