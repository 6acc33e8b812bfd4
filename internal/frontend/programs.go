package frontend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hmci/hm/internal/config"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/sdk"
	"github.com/hmci/hm/pipeline"
)

// Program front ends (Go SDK, harmont DSLs) run in a child process that prints an envelope
// (see parseEnvelope). hm passes HM_SOURCE_DIR, the absolute source directory that on_change
// cache paths are relative to, and HM_PIPELINE_ORG as it is (the harmont DSLs also get it as
// HARMONT_PIPELINE_ORG, the name they read).

// programEnv is the child's environment.
func programEnv(dir string, extra ...string) []string {
	env := os.Environ()
	if abs, err := filepath.Abs(dir); err == nil {
		env = append(env, pipeline.SourceDirEnv+"="+abs)
	}
	if org := os.Getenv("HM_PIPELINE_ORG"); org != "" {
		env = append(env, "HARMONT_PIPELINE_ORG="+org)
	}
	return append(env, extra...)
}

// runProgram runs cmd and returns its stdout; on a non-zero exit it returns the exit code and
// the end of stderr.
func runProgram(cmd *exec.Cmd) (stdout []byte, code int, stderr string, err error) {
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, ee.ExitCode(), tail(errBuf.String()), err
	}
	return out, 0, tail(errBuf.String()), err
}

// tail keeps the last lines of a program's stderr for an error message.
func tail(s string) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > 20 {
		lines = append([]string{"…"}, lines[len(lines)-20:]...)
	}
	return strings.Join(lines, "\n")
}

func programFailed(src, what string, code int, stderr string, err error, fix string) error {
	detail := stderr
	if detail == "" {
		detail = err.Error()
	}
	return errs.New(errs.ErrInvalid, "pipeline_program_failed", fix, "%s: %s failed (exit %d):\n%s", src, what, code, detail)
}

// discoverGo runs the Go main package in .hm/ with `go run`, against the SDK embedded in hm
// (package sdk) unless .hm/ is in hm's own module.
func discoverGo(ctx context.Context, dir string, files []string) []Pipeline {
	src := sourcePath(files, ".go")
	goBin, err := exec.LookPath("go")
	if err != nil {
		return failed(dir, KindGo, files, errs.New(errs.ErrUnavailable, "go_missing",
			"install Go (https://go.dev/dl/) and put the go command on PATH",
			"%s is a Go pipeline, but the go command is not on PATH", src))
	}
	// A state dir that cannot be found is no reason not to render: Prepare then writes the
	// SDK for this run only.
	stateDir, _ := config.StateDir(os.Getenv)
	inv, err := sdk.Prepare(filepath.Join(dir, ".hm"), stateDir)
	if err != nil {
		return failed(dir, KindGo, files, errs.New(errs.ErrInvalid, "pipeline_program_failed",
			"check the go.mod that .hm/ belongs to (go mod edit -json prints how go reads it)",
			"%s: cannot prepare `go run` with hm's Go SDK: %v", src, err))
	}
	defer inv.Cleanup()
	cmd := exec.CommandContext(ctx, goBin, inv.Args...)
	cmd.Dir = inv.Dir
	cmd.Env = programEnv(dir, append(inv.Env, pipeline.EnvelopeEnv+"=1")...)
	out, code, stderr, err := runProgram(cmd)
	if err != nil {
		return failed(dir, KindGo, files, programFailed(src, "go run", code, stderr, err,
			"fix the program (go prints the error above); its main must call pipeline.Main"))
	}
	return fromEnvelope(dir, KindGo, files, ".go", out)
}

// pythonScript loads every .hm/*.py (as the harmont CLI does) and prints the registry
// envelope. Exit status 3 means the harmont package cannot be imported.
const pythonScript = `
import importlib.util, inspect, os, pathlib, sys
try:
    from harmont._envelope import dump_registry_json
except ImportError as e:
    sys.stderr.write("%s: %s\n" % (type(e).__name__, e))
    sys.exit(3)
for p in sorted(pathlib.Path(".hm").glob("*.py")):
    spec = importlib.util.spec_from_file_location("_hm_pipeline_" + p.stem, p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
kw = {}
if "pipeline_org" in inspect.signature(dump_registry_json).parameters:
    kw["pipeline_org"] = os.environ.get("HM_PIPELINE_ORG") or "default"
sys.stdout.write(dump_registry_json(**kw))
`

// discoverPython renders .hm/*.py with the harmont package.
func discoverPython(ctx context.Context, dir string, files []string) []Pipeline {
	src := sourcePath(files, ".py")
	py, err := exec.LookPath("python3")
	if err != nil {
		return failed(dir, KindPython, files, errs.New(errs.ErrUnavailable, "python_missing",
			"install Python 3.11+ (e.g. apt-get install python3) and the harmont package (python3 -m pip install harmont)",
			"%s is a harmont Python pipeline, but python3 is not on PATH", src))
	}
	cmd := exec.CommandContext(ctx, py, "-c", pythonScript)
	cmd.Dir = dir
	cmd.Env = programEnv(dir, "PYTHONDONTWRITEBYTECODE=1")
	out, code, stderr, err := runProgram(cmd)
	switch {
	case code == 3:
		return failed(dir, KindPython, files, errs.New(errs.ErrUnavailable, "harmont_missing",
			"install it: python3 -m pip install harmont (or put it on PYTHONPATH); or commit the rendered IR as .hm/NAME.json",
			"%s needs the harmont Python package, which python3 cannot import (%s)", src, stderr))
	case err != nil:
		return failed(dir, KindPython, files, programFailed(src, "python3", code, stderr, err,
			"fix the pipeline file (python3 prints the error above)"))
	}
	return fromEnvelope(dir, KindPython, files, ".py", out)
}

// typeScriptScript imports every .hm/*.ts (default export or `pipelines`, one definition or a
// list) and prints @harmont/hm's envelope. It runs in .hm/, so @harmont/hm resolves from there.
const typeScriptScript = `
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
const dir = process.cwd();
const files = readdirSync(dir).filter(f => /\.m?ts$/.test(f) && !f.endsWith('.d.ts')).sort();
const defs = [];
for (const f of files) {
  const mod = await import(pathToFileURL(join(dir, f)).href);
  const d = mod.default ?? mod.pipelines;
  if (Array.isArray(d)) defs.push(...d); else if (d) defs.push(d);
}
const { renderEnvelope } = await import('@harmont/hm');
process.stdout.write(renderEnvelope(defs, { basePath: process.env.HM_SOURCE_DIR }));
`

// discoverTypeScript renders .hm/*.ts with node and @harmont/hm.
func discoverTypeScript(ctx context.Context, dir string, files []string) []Pipeline {
	src := sourcePath(files, ".ts")
	node, err := exec.LookPath("node")
	if err != nil {
		return failed(dir, KindTypeScript, files, errs.New(errs.ErrUnavailable, "node_missing",
			"install Node.js 22.6+ (it runs .ts files directly) and @harmont/hm (npm install --save-dev @harmont/hm)",
			"%s is a harmont TypeScript pipeline, but node is not on PATH", src))
	}
	hmDir := filepath.Join(dir, ".hm")
	if !harmontTSInstalled(hmDir) {
		return failed(dir, KindTypeScript, files, errs.New(errs.ErrUnavailable, "harmont_missing",
			"install it: npm install --save-dev @harmont/hm (in the repository or in .hm/); or commit the rendered IR as .hm/NAME.json",
			"%s needs the @harmont/hm package, which is not installed (no node_modules/@harmont/hm from .hm/ up)", src))
	}
	flags, err := nodeTypeScriptFlags(ctx, node)
	if err != nil {
		return failed(dir, KindTypeScript, files, errs.New(errs.ErrUnavailable, "node_too_old",
			"install Node.js 22.6 or newer, which runs .ts files directly", "%s: %v", src, err))
	}
	args := append(flags, "--input-type=module", "-e", typeScriptScript)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = hmDir
	cmd.Env = programEnv(dir)
	out, code, stderr, err := runProgram(cmd)
	if err != nil {
		return failed(dir, KindTypeScript, files, programFailed(src, "node", code, stderr, err,
			"fix the pipeline file (node prints the error above)"))
	}
	return fromEnvelope(dir, KindTypeScript, files, ".ts", out)
}

// harmontTSInstalled looks for node_modules/@harmont/hm from dir up, as node resolves a bare
// import.
func harmontTSInstalled(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for d := abs; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "node_modules", "@harmont", "hm", "package.json")); err == nil {
			return true
		}
		if d == filepath.Dir(d) {
			return false
		}
	}
}

// nodeTypeScriptFlags returns the flags node needs to import .ts files: none from 23.6 (type
// stripping is on by default), --experimental-strip-types from 22.6; older versions cannot.
func nodeTypeScriptFlags(ctx context.Context, node string) ([]string, error) {
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("node --version: %v", err)
	}
	v := strings.TrimSpace(string(out))
	var major, minor int
	if _, err := fmt.Sscanf(v, "v%d.%d", &major, &minor); err != nil {
		return nil, fmt.Errorf("cannot read the node version %q", v)
	}
	switch {
	case major > 23 || major == 23 && minor >= 6:
		return nil, nil
	case major > 22 || major == 22 && minor >= 6:
		return []string{"--experimental-strip-types", "--disable-warning=ExperimentalWarning"}, nil
	}
	return nil, fmt.Errorf("node %s cannot load TypeScript files (type stripping needs 22.6+)", v)
}
