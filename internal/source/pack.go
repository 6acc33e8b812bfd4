package source

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"

	"github.com/hmci/hm/internal/errs"
)

// Options tune Pack.
type Options struct {
	// MaxBytes bounds the total size of regular files; 0 means unlimited. A bigger source is
	// almost always a forgotten build output or dependency directory, hence a *SizeError
	// naming the largest paths rather than a silent multi-gigabyte copy.
	MaxBytes int64
	// Git adds the root's own .git directory, whole and unfiltered (pipeline `source: {git:
	// true}`): a step can run git describe. Its bytes count towards MaxBytes. A root whose
	// .git is a file (a linked worktree, a submodule) or absent is an error: the git
	// directory it names lies outside the workspace.
	Git bool
}

// excludedNames are never part of a workspace, at any depth.
var excludedNames = map[string]bool{".git": true, ".hm": true}

// Pack walks root once and returns the tree hm overlays into /workspace: .gitignore files at
// every level, .git/info/exclude and the global excludes file are honoured; dotfiles are
// kept; .git and .hm are dropped at any depth; regular files, symlinks (never followed) and
// directories (empty ones too) are entries; sockets, fifos and devices are skipped.
func Pack(ctx context.Context, root string, opts Options) (*Tree, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, errs.New(errs.ErrUsage, "source_not_found", "pass an existing directory with -d",
			"source directory %s: %v", root, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err != nil:
		return nil, errs.New(errs.ErrUsage, "source_not_found", "pass an existing directory with -d",
			"source directory %s: %v", root, err)
	case !fi.IsDir():
		return nil, errs.New(errs.ErrUsage, "source_not_dir", "pass a directory with -d",
			"source %s is not a directory", root)
	}
	base, err := loadIgnoreBase(abs)
	if err != nil {
		return nil, unreadable(abs, err)
	}
	w := walker{ctx: ctx, root: abs, tree: &Tree{Root: abs}, top: map[string]int64{}}
	if err := w.walk("", base.prefix, base.patterns); err != nil {
		return nil, err
	}
	if opts.Git {
		if err := w.addGit(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(w.tree.Entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	if opts.MaxBytes > 0 && w.tree.Size > opts.MaxBytes {
		return nil, newSizeError(abs, w.tree.Size, opts.MaxBytes, w.top)
	}
	return w.tree, nil
}

type walker struct {
	ctx  context.Context // a walk lives only as long as one Pack call
	root string
	tree *Tree
	top  map[string]int64 // bytes of regular files under each top-level path ("dir/" or "file")
}

// walk adds the entries of directory rel ("" for the root). match is rel as the ignore
// matcher sees it (relative to the repository top), ps the patterns inherited from above.
func (w *walker) walk(rel string, match []string, ps []gitignore.Pattern) error {
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("source: pack: %w: %w", errs.ErrCanceled, err)
	}
	dir := filepath.Join(w.root, filepath.FromSlash(rel))
	own, err := readPatterns(filepath.Join(dir, ".gitignore"), match)
	if err != nil {
		return unreadable(dir, err)
	}
	// Clip so that siblings never share (and overwrite) the appended tail.
	ps = append(slices.Clip(ps), own...)
	matcher := gitignore.NewMatcher(ps)
	des, err := os.ReadDir(dir)
	if err != nil {
		return unreadable(dir, err)
	}
	for _, de := range des {
		name := de.Name()
		if excludedNames[name] {
			continue
		}
		childMatch := append(slices.Clip(match), name)
		kind := de.Type()
		if matcher.Match(childMatch, kind.IsDir()) {
			continue
		}
		child := name
		if rel != "" {
			child = rel + "/" + name
		}
		var typ EntryType
		switch {
		case kind.IsDir():
			typ = TypeDir
		case kind&fs.ModeSymlink != 0:
			typ = TypeSymlink
		case kind.IsRegular():
			typ = TypeFile
		default:
			continue // sockets, fifos, devices have no place in a workspace
		}
		info, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed while we walked
		} else if err != nil {
			return unreadable(filepath.Join(dir, name), err)
		}
		e := Entry{Path: child, Type: typ, Mode: info.Mode().Perm(), ModTime: info.ModTime()}
		switch typ {
		case TypeFile:
			e.Size = info.Size()
			w.tree.Size += e.Size
			w.top[topName(child, typ)] += e.Size
		case TypeSymlink:
			if e.Link, err = os.Readlink(filepath.Join(dir, name)); err != nil {
				return unreadable(filepath.Join(dir, name), err)
			}
		case TypeDir:
			w.top[topName(child, typ)] += 0 // listed even when empty
		}
		w.tree.Entries = append(w.tree.Entries, e)
		if typ == TypeDir {
			if err := w.walk(child, childMatch, ps); err != nil {
				return err
			}
		}
	}
	return nil
}

// addGit adds root/.git and everything under it, ignoring no path.
func (w *walker) addGit() error {
	dotgit := filepath.Join(w.root, ".git")
	fi, err := os.Lstat(dotgit)
	if err != nil || !fi.IsDir() {
		return errs.New(errs.ErrUsage, "source_git",
			"run hm from a repository's top (a clone, not a linked worktree or submodule), or drop source.git",
			"source.git: %s is not a git directory", dotgit)
	}
	return filepath.WalkDir(dotgit, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return unreadable(p, err)
		}
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("source: pack: %w: %w", errs.ErrCanceled, err)
		}
		rel, _ := filepath.Rel(w.root, p)
		rel = filepath.ToSlash(rel)
		info, err := de.Info()
		if err != nil {
			return unreadable(p, err)
		}
		e := Entry{Path: rel, Mode: info.Mode().Perm(), ModTime: info.ModTime()}
		switch t := de.Type(); {
		case t.IsDir():
			e.Type = TypeDir
		case t&fs.ModeSymlink != 0:
			e.Type = TypeSymlink
			if e.Link, err = os.Readlink(p); err != nil {
				return unreadable(p, err)
			}
		case t.IsRegular():
			e.Type, e.Size = TypeFile, info.Size()
			w.tree.Size += e.Size
			w.top[".git/"] += e.Size
		default:
			return nil
		}
		w.tree.Entries = append(w.tree.Entries, e)
		return nil
	})
}

// topName is the top-level path containing p, with a trailing slash when it is a directory.
func topName(p string, typ EntryType) string {
	if first, _, ok := strings.Cut(p, "/"); ok {
		return first + "/"
	}
	if typ == TypeDir {
		return p + "/"
	}
	return p
}

func unreadable(path string, err error) error {
	return errs.New(errs.ErrUsage, "source_unreadable",
		"fix the permissions, or add the path to .gitignore",
		"cannot read source %s: %v", path, err)
}
