package cachekey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// fileHasher resolves and hashes on_change paths relative to dir. Hashes are memoised because
// several steps commonly watch the same lock file.
type fileHasher struct {
	dir    string
	hashes map[string]string
}

func newFileHasher(dir string) *fileHasher {
	return &fileHasher{dir: dir, hashes: map[string]string{}}
}

// resolve expands on_change paths into the ordered list of existing paths they name, as slash
// paths relative to dir: the patterns sorted, each glob replaced by its sorted matches, plain
// paths that do not exist dropped. unmatched lists the patterns that named nothing, sorted.
func (f *fileHasher) resolve(patterns []string) (paths, unmatched []string, err error) {
	sorted := append([]string(nil), patterns...)
	sort.Strings(sorted)
	for _, p := range sorted {
		if !strings.ContainsAny(p, "*?[") {
			if _, err := os.Stat(f.abs(p)); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					unmatched = append(unmatched, p)
					continue
				}
				return nil, nil, fmt.Errorf("on_change path %q: %w: %w", p, errs.ErrInfra, err)
			}
			paths = append(paths, p)
			continue
		}
		matches, err := f.glob(p)
		if err != nil {
			return nil, nil, err
		}
		if len(matches) == 0 {
			unmatched = append(unmatched, p)
		}
		paths = append(paths, matches...)
	}
	return paths, unmatched, nil
}

// glob returns the sorted matches of pattern. Like the front ends' glob libraries (Python's
// glob, node-glob), a wildcard does not match a leading dot, so hidden files are left out
// unless the pattern names them.
func (f *fileHasher) glob(pattern string) ([]string, error) {
	full := pattern
	if !filepath.IsAbs(pattern) {
		full = filepath.Join(escapeGlob(f.dir), pattern)
	}
	matches, err := filepath.Glob(full)
	if err != nil {
		return nil, errs.New(errs.ErrInvalid, "cache_bad_glob",
			"fix the pattern in cache.paths (glob syntax: * ? [a-z])",
			"on_change path %q is not a valid glob: %v", pattern, err)
	}
	pcomps := strings.Split(filepath.ToSlash(filepath.Clean(pattern)), "/")
	var out []string
	for _, m := range matches {
		rel := m
		if !filepath.IsAbs(pattern) {
			if rel, err = filepath.Rel(f.dir, m); err != nil {
				return nil, fmt.Errorf("on_change path %q: %w: %w", pattern, errs.ErrInfra, err)
			}
		}
		rel = filepath.ToSlash(rel)
		if hiddenMatch(pcomps, strings.Split(rel, "/")) {
			continue
		}
		if _, err := os.Stat(m); errors.Is(err, fs.ErrNotExist) {
			continue // dangling symlink: nothing to hash, like a missing plain path
		}
		out = append(out, rel)
	}
	sort.Strings(out)
	return out, nil
}

// hiddenMatch reports whether a wildcard pattern component matched a dot-file name.
func hiddenMatch(pattern, match []string) bool {
	if len(pattern) != len(match) {
		return false
	}
	for i, pc := range pattern {
		if strings.ContainsAny(pc, "*?[") && !strings.HasPrefix(pc, ".") && strings.HasPrefix(match[i], ".") {
			return true
		}
	}
	return false
}

func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (f *fileHasher) abs(rel string) string {
	if filepath.IsAbs(rel) {
		return rel
	}
	return filepath.Join(f.dir, filepath.FromSlash(rel))
}

// hash is the pathhash of rel: sha256 of a file's bytes, or for a directory sha256 over
// `relpath \0 bytes \0` of its files in sorted relative slash-path order.
func (f *fileHasher) hash(rel string) (string, error) {
	if h, ok := f.hashes[rel]; ok {
		return h, nil
	}
	p := f.abs(rel)
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("on_change path %q: %w: %w", rel, errs.ErrInfra, err)
	}
	h := sha256.New()
	if st.IsDir() {
		files, err := dirFiles(p)
		if err != nil {
			return "", fmt.Errorf("on_change path %q: %w: %w", rel, errs.ErrInfra, err)
		}
		for _, name := range files {
			h.Write([]byte(name))
			h.Write([]byte{0})
			if err := copyFile(h, filepath.Join(p, filepath.FromSlash(name))); err != nil {
				return "", fmt.Errorf("on_change path %q: %w: %w", rel, errs.ErrInfra, err)
			}
			h.Write([]byte{0})
		}
	} else if err := copyFile(h, p); err != nil {
		return "", fmt.Errorf("on_change path %q: %w: %w", rel, errs.ErrInfra, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	f.hashes[rel] = sum
	return sum, nil
}

// dirFiles lists the files under dir as sorted slash paths relative to dir. As the reference
// walk does, it follows symlinks to files but does not descend into symlinked directories.
func dirFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			st, err := os.Stat(p)
			if err != nil || st.IsDir() {
				return nil // dangling link or linked directory: not part of the tree's content
			}
		} else if !d.Type().IsRegular() {
			return nil // sockets, fifos, devices have no content to hash
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	// The walk visits "a/b" before "a.txt"; the spec orders by the whole path ("a.txt" first).
	sort.Strings(files)
	return files, err
}

func copyFile(w io.Writer, name string) error {
	fh, err := os.Open(name)
	if err != nil {
		return err
	}
	defer fh.Close()
	_, err = io.Copy(w, fh)
	return err
}
