package docker

import (
	"strings"

	"github.com/docker/docker/api/types/container"
)

// A step's environment never goes into its container's config: the daemon copies that config
// into every image committed from the container (Config.Env merged, and the whole
// ContainerConfig stored beside it), where `docker inspect` and every child would read the
// step's values (a -e TOKEN=..., a secret). A container running the step's command itself
// reads its environment from stdin, before the command starts; a continuable container
// (exec.go) gets it with each exec. Either way the container's config holds the image's
// environment alone, and so does every snapshot.

// envWrapper is the entrypoint of a step container: it reads `export NAME='value'` lines
// from stdin to its end (shell builtins only, so that /bin/sh is all an image needs), runs
// them, and execs `/bin/sh -c CMD` ($1) in its place, so that the command's PID, exit
// status and signals are those of `sh -c CMD` as the container's init. Its own variables are
// not exported, so the command never sees them, and a step variable of any name survives.
const envWrapper = `__hm_env=; while IFS= read -r __hm_line; do __hm_env="$__hm_env$__hm_line
"; done; eval "$__hm_env"; exec /bin/sh -c "$1"`

// stdinEnv sets up cfg to run cmd with its environment given on stdin (envScript), and
// reports false, changing nothing, when env has a name a shell cannot export: such a step
// runs by exec instead.
func stdinEnv(cfg *container.Config, cmd string, env []string) bool {
	for _, kv := range env {
		if !shellName(envKey(kv)) {
			return false
		}
	}
	cfg.Entrypoint = []string{"/bin/sh", "-c", envWrapper, "sh", cmd}
	cfg.Env = nil // the image's alone: the daemon fills it in
	cfg.OpenStdin, cfg.StdinOnce, cfg.AttachStdin = true, true, true
	return true
}

// envScript is what envWrapper reads: one export per entry, in order (a later one wins),
// each value single-quoted so that nothing in it is interpreted.
func envScript(env []string) string {
	var b strings.Builder
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		b.WriteString("export " + k + "='" + strings.ReplaceAll(v, "'", `'\''`) + "'\n")
	}
	return b.String()
}

func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

// shellName reports whether a shell can export name: [A-Za-z_][A-Za-z0-9_]*.
func shellName(name string) bool {
	if name == "" {
		return false
	}
	for i, c := range []byte(name) {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
