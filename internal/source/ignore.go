package source

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing/format/config"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// ignoreBase is what applies to the source root before its own .gitignore is read: the
// global excludes file, .git/info/exclude and the .gitignore files of enclosing directories
// up to the repository top when the root is a subdirectory of a repository. Git matches all
// of them against paths relative to the repository top, so prefix is the root's path there.
type ignoreBase struct {
	prefix   []string
	patterns []gitignore.Pattern // ascending priority, as gitignore.NewMatcher wants
}

// loadIgnoreBase finds the enclosing repository (if any) and reads every ignore source that
// is not a .gitignore inside root, in git's precedence order: core.excludesFile, then
// info/exclude, then .gitignore files from the top down.
func loadIgnoreBase(root string) (ignoreBase, error) {
	var b ignoreBase
	top, gitDir := findRepo(root)
	configs := globalConfigFiles()
	if gitDir != "" {
		configs = append(configs, filepath.Join(gitDir, "config"))
	}
	global, err := readPatterns(excludesFile(configs), nil)
	if err != nil {
		return b, err
	}
	b.patterns = append(b.patterns, global...)
	if gitDir == "" {
		return b, nil
	}
	exclude, err := readPatterns(filepath.Join(commonDir(gitDir), "info", "exclude"), nil)
	if err != nil {
		return b, err
	}
	b.patterns = append(b.patterns, exclude...)
	rel, err := filepath.Rel(top, root)
	if err != nil || rel == "." {
		return b, nil
	}
	b.prefix = strings.Split(filepath.ToSlash(rel), "/")
	// .gitignore files of the directories between the top and root (root's own is read by
	// the walk).
	for i := range b.prefix {
		dir := filepath.Join(append([]string{top}, b.prefix[:i]...)...)
		ps, err := readPatterns(filepath.Join(dir, ".gitignore"), b.prefix[:i])
		if err != nil {
			return b, err
		}
		b.patterns = append(b.patterns, ps...)
	}
	return b, nil
}

// readPatterns parses one ignore file; a missing file has no patterns. domain is the file's
// directory relative to the repository top.
func readPatterns(file string, domain []string) ([]gitignore.Pattern, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || isNotDir(err) {
			return nil, nil // git ignores unreadable ignore files too
		}
		return nil, err
	}
	var ps []gitignore.Pattern
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, domain))
	}
	return ps, sc.Err()
}

func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

// findRepo returns the closest directory at or above root holding a .git entry, and the git
// directory it designates (a directory, or the target of a "gitdir:" file as in worktrees
// and submodules). Both are empty outside a repository.
func findRepo(root string) (top, gitDir string) {
	for dir := root; ; {
		dotgit := filepath.Join(dir, ".git")
		if fi, err := os.Stat(dotgit); err == nil {
			if fi.IsDir() {
				return dir, dotgit
			}
			if data, err := os.ReadFile(dotgit); err == nil {
				if target, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "gitdir:"); ok {
					target = strings.TrimSpace(target)
					if !filepath.IsAbs(target) {
						target = filepath.Join(dir, target)
					}
					return dir, target
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ""
		}
		dir = parent
	}
}

// commonDir resolves a linked worktree's git directory to the main one, where info/ lives.
func commonDir(gitDir string) string {
	data, err := os.ReadFile(filepath.Join(gitDir, "commondir"))
	if err != nil {
		return gitDir
	}
	dir := strings.TrimSpace(string(data))
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(gitDir, dir)
	}
	return dir
}

// globalConfigFiles lists the system and global git config files in ascending priority,
// honouring the environment variables git itself honours.
func globalConfigFiles() []string {
	var files []string
	if os.Getenv("GIT_CONFIG_NOSYSTEM") == "" {
		if sys := os.Getenv("GIT_CONFIG_SYSTEM"); sys != "" {
			files = append(files, sys)
		} else {
			files = append(files, "/etc/gitconfig")
		}
	}
	if g := os.Getenv("GIT_CONFIG_GLOBAL"); g != "" {
		return append(files, g)
	}
	if xdg := xdgConfigHome(); xdg != "" {
		files = append(files, filepath.Join(xdg, "git", "config"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".gitconfig"))
	}
	return files
}

func xdgConfigHome() string {
	if xdg := os.Getenv("XDG_CONFIG_HOME"); xdg != "" {
		return xdg
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".config")
	}
	return ""
}

// excludesFile is core.excludesFile from the last config file setting it, or git's default
// $XDG_CONFIG_HOME/git/ignore.
func excludesFile(configs []string) string {
	value := ""
	for _, file := range configs {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		raw := config.New()
		if err := config.NewDecoder(bytes.NewReader(data)).Decode(raw); err != nil {
			continue // a config git would reject; do not fail the build over it
		}
		for _, s := range raw.Sections {
			if s.IsName("core") && s.Options.Has("excludesfile") {
				value = s.Options.Get("excludesfile")
			}
		}
	}
	if value == "" {
		if xdg := xdgConfigHome(); xdg != "" {
			return filepath.Join(xdg, "git", "ignore")
		}
		return ""
	}
	if rest, ok := strings.CutPrefix(value, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			value = filepath.Join(home, rest)
		}
	}
	return value
}
