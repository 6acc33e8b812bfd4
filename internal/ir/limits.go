package ir

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// Bounds on IR, checked before the work they bound (schema/README.md): the size and nesting
// before the JSON is decoded, the counts before the graph is built.
const (
	MaxBytes = 8 << 20 // the largest IR read
	MaxDepth = 64      // nesting of JSON objects and arrays
	MaxSteps = 50_000
	MaxEdges = 250_000 // including those a flat-form wait barrier implies
	MaxEnv   = 4_096   // environment entries of one step
	// MaxEnvTotal bounds the entries of all steps: the flat form merges the pipeline's env
	// into every step's, so a small file could otherwise expand to millions.
	MaxEnvTotal = 250_000
)

// The kernel's bounds on what execve takes (Linux defaults: ARG_MAX is a quarter of the 8 MiB
// stack limit; MAX_ARG_STRLEN is 32 pages). Fixed rather than read from this machine's
// sysconf, so that an IR valid here is valid on every machine it runs on.
const (
	ArgMax       = 2 << 20
	MaxArgStrlen = 128 << 10
	// argReserve is kept for what the machine adds to a step's argv and environment (sh -c,
	// PATH, HOME, HM_* variables).
	argReserve = 64 << 10
)

func limit(l string, max int64, format string, args ...any) error {
	return &errs.LimitError{Format: "ir", Limit: l, Max: max, Msg: fmt.Sprintf(format, args...)}
}

// precheck refuses IR too large or nested too deeply, before it is decoded.
func precheck(data []byte) error {
	if len(data) > MaxBytes {
		return limit(errs.LimitSize, MaxBytes, "the IR is %d bytes, more than the %d (8 MiB) hm reads", len(data), MaxBytes)
	}
	depth, inString, escaped := 0, false, false
	for i, c := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString:
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > MaxDepth {
				line, col := lineCol(data, int64(i))
				return limit(errs.LimitDepth, MaxDepth, "the IR nests objects and arrays more than %d deep (line %d, column %d)", MaxDepth, line, col)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// checkStep refuses what execve would: a NUL byte in the key, command or environment (the
// kernel ends a string at the NUL, so the step would run something else), a command or
// variable longer than MAX_ARG_STRLEN, or together more than ARG_MAX. env is the node's merged
// environment.
func checkStep(st Step, env map[string]string) error {
	name := fmt.Sprintf("step %q", strings.ReplaceAll(st.Key, "\x00", `\x00`))
	switch {
	case strings.ContainsRune(st.Key, 0):
		return invalid("ir_nul", "remove the NUL byte (\\u0000) from the step key", "%s: the key holds a NUL byte", name)
	case strings.ContainsRune(st.Cmd, 0):
		return invalid("ir_nul", "remove the NUL byte (\\u0000) from the command: a process's arguments cannot hold one",
			"%s: the command holds a NUL byte", name)
	case len(st.Cmd)+1 > MaxArgStrlen:
		return invalid("ir_arg_max", "put the script in a file of the workspace and run that file",
			"%s: the command is %d bytes; the kernel takes at most %d (MAX_ARG_STRLEN) in one argument", name, len(st.Cmd), MaxArgStrlen-1)
	}
	if len(env) > MaxEnv {
		return limit(errs.LimitEnv, MaxEnv, "%s has %d environment entries, more than %d", name, len(env), MaxEnv)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the error names the same variable every time
	// Counted as the kernel counts: each string with its NUL and its pointer.
	total := len("sh") + len("-c") + len(st.Cmd) + 3 + 4*8
	for _, k := range keys {
		v := env[k]
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			return invalid("ir_env", "use a variable name without '=' or NUL bytes",
				"%s: environment variable name %q is not valid", name, k)
		case strings.ContainsRune(v, 0):
			return invalid("ir_nul", fmt.Sprintf("remove the NUL byte (\\u0000) from %s: an environment variable cannot hold one", k),
				"%s: environment variable %s holds a NUL byte", name, k)
		case len(k)+len(v)+2 > MaxArgStrlen:
			return invalid("ir_arg_max", fmt.Sprintf("pass the value of %s in a file of the workspace instead", k),
				"%s: environment variable %s is %d bytes; the kernel takes at most %d (MAX_ARG_STRLEN) in one variable", name, k, len(k)+len(v)+1, MaxArgStrlen-1)
		}
		total += len(k) + len(v) + 2 + 8
	}
	if total > ArgMax-argReserve {
		return invalid("ir_arg_max", "move long values or the script into files of the workspace",
			"%s: its command and environment are %d bytes; the kernel takes at most %d (ARG_MAX, less %d kept for the machine)", name, total, ArgMax-argReserve, argReserve)
	}
	return nil
}
