package secret

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
)

// DotEnv is the file in the source directory that a secret's value is read from last.
const DotEnv = ".env"

// maxFile bounds a .env file and a secret read from a file.
const maxFile = 1 << 20

// Request says where the build's secrets come from.
type Request struct {
	// Flags are the --secret arguments, NAME or NAME=VALUE, in order (a later one wins).
	Flags []string
	// Config is the config's [secrets] table: NAME = "" (the value comes from where a bare
	// --secret NAME takes it), "env:VAR" (the environment variable VAR) or "file:PATH" (the
	// file's content without one trailing newline; PATH relative to Dir). A flag for the same
	// name wins.
	Config map[string]string
	// Dir is the source directory, which may hold DotEnv.
	Dir    string
	Getenv func(string) string
}

// Resolved is the build's secrets by name, and whether DotEnv supplied any (the workspace
// must then leave it out).
type Resolved struct {
	Values     map[string]string
	FromDotEnv bool
}

// Names are the secrets' names, sorted.
func (r Resolved) Names() []string {
	out := make([]string, 0, len(r.Values))
	for n := range r.Values {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func usage(fix, format string, args ...any) error {
	return errs.New(errs.ErrUsage, "secret", fix, format, args...)
}

// Resolve reads every secret's value: a flag's own, else the environment, else DotEnv. A
// secret found nowhere is an error (class errs.ErrUsage), as is a malformed flag or config
// entry.
func Resolve(req Request) (Resolved, error) {
	out := Resolved{Values: map[string]string{}}
	var dotenv map[string]string
	dotenvRead := false
	fallback := func(name, what string) (string, error) {
		if v := req.Getenv(name); v != "" {
			return v, nil
		}
		if !dotenvRead {
			dotenvRead = true
			var err error
			if dotenv, err = readDotEnv(filepath.Join(req.Dir, DotEnv)); err != nil {
				return "", err
			}
		}
		if v, ok := dotenv[name]; ok && v != "" {
			out.FromDotEnv = true
			return v, nil
		}
		return "", usage(fmt.Sprintf("set %s in the environment or in %s, or pass --secret %s=VALUE", name, filepath.Join(req.Dir, DotEnv), name),
			"secret %s (%s) has no value: it is neither in the environment nor in %s", name, what, DotEnv)
	}
	names := make([]string, 0, len(req.Config))
	for n := range req.Config {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		src := req.Config[name]
		if !ir.ValidSecretName(name) {
			return out, usage("name secrets as environment variables, e.g. NPM_TOKEN", "config [secrets] has an invalid name %q", name)
		}
		var v string
		var err error
		switch kind, arg, _ := strings.Cut(src, ":"); {
		case src == "":
			v, err = fallback(name, "config [secrets]")
		case kind == "env" && arg != "":
			if v = req.Getenv(arg); v == "" {
				err = usage(fmt.Sprintf("set %s in the environment", arg), "secret %s comes from the environment variable %s, which is not set", name, arg)
			}
		case kind == "file" && arg != "":
			v, err = readFile(name, req.Dir, arg)
		default:
			err = usage(`write a secret's source as "" (the environment, then .env), "env:VAR" or "file:PATH"`,
				"config [secrets] %s has an unknown source (a value never belongs in a config file)", name)
		}
		if err != nil {
			return out, err
		}
		out.Values[name] = v
	}
	for _, f := range req.Flags {
		name, v, given := strings.Cut(f, "=")
		if !ir.ValidSecretName(name) {
			return out, usage("write --secret NAME or --secret NAME=VALUE, NAME an environment variable name", "invalid --secret %q", name)
		}
		if !given {
			var err error
			if v, err = fallback(name, "--secret"); err != nil {
				return out, err
			}
		}
		if v == "" {
			return out, usage("give the secret a value", "secret %s is empty", name)
		}
		out.Values[name] = v
	}
	return out, nil
}

// Check refuses a pipeline whose step names a secret the build was not given (class
// errs.ErrUsage: the invocation lacks it), before anything runs.
func Check(p *ir.Pipeline, values map[string]string) error {
	for _, n := range p.Nodes {
		for _, name := range n.Step.Secrets {
			if _, ok := values[name]; !ok {
				return errs.New(errs.ErrUsage, "secret_missing",
					fmt.Sprintf("pass --secret %s (its value from the environment or .env), or add %s to [secrets] in the config", name, name),
					"step %q needs secret %s, which was not given", n.Step.Key, name)
			}
		}
	}
	return nil
}

func readFile(name, dir, path string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	b, err := readBounded(path)
	if err != nil {
		return "", usage("check the path in [secrets]", "secret %s: %v", name, err)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", usage("put the value in the file", "secret %s: %s is empty", name, path)
	}
	return v, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFile)
	}
	return b, nil
}

// readDotEnv reads a .env file: NAME=VALUE lines, an optional `export ` before the name,
// blank lines and # comments skipped; a value in single quotes is taken as it is, one in
// double quotes with \n, \", \\ unescaped, a bare one trimmed and cut at " #". A missing file
// is an empty one.
func readDotEnv(path string) (map[string]string, error) {
	b, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, usage("make .env readable, or pass --secret NAME=VALUE", "cannot read %s: %v", path, err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxFile+1)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, v, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !ir.ValidSecretName(name) {
			return nil, usage("write NAME=VALUE lines in .env", "%s:%d is not a NAME=VALUE line", path, ln)
		}
		v = strings.TrimSpace(v)
		switch {
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			v = strings.NewReplacer(`\n`, "\n", `\"`, `"`, `\\`, `\`).Replace(v[1 : len(v)-1])
		default:
			if i := strings.Index(v, " #"); i >= 0 {
				v = strings.TrimSpace(v[:i])
			}
		}
		out[name] = v
	}
	return out, sc.Err()
}
