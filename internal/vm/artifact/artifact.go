// Package artifact copies a step's artifacts out of its machine: the files under /workspace
// that a step's `artifacts` patterns name (an hm extension of the IR, schema/README.md),
// into a directory on the host, with a manifest (path, size, sha256) of what was copied.
//
// The backends differ only in how they read the machine's /workspace: the host and sandbox
// backends hand the Collector a read-only fs.FS of it (FromFS), docker a tar stream of the
// archive API (FromTar). Everything that decides what leaves the machine is here, so every
// backend refuses alike:
//
//   - A symlink is never copied, neither as a link nor as its target, whatever it points
//     at: the step's log says it was refused (a warning, the step still passes). Directories
//     are never entered through a symlink either.
//   - Only regular files and directories are copied; devices, FIFOs and sockets are refused
//     like symlinks. Files are written 0644 (0755 when the machine's copy is executable),
//     owned by the user running hm.
//   - Nothing is written outside the destination: it is an *os.Root, and every path is a
//     clean relative path of the machine's workspace.
//   - A step copies at most MaxFiles files and MaxBytes bytes; beyond that the copy fails
//     (the caller removes what it wrote).
package artifact

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// Bounds of one step's artifacts.
const (
	MaxFiles = 10_000
	MaxBytes = int64(4 << 30)
)

// File is one copied artifact, as the step_artifact event and the manifest list it.
type File struct {
	// Path is relative to /workspace, slash-separated; the file's path under the step's
	// artifacts directory too.
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Result is what a copy did: the files copied, in the order they were, and why anything
// matched was not (a symlink refused, a pattern matching nothing), for the step's log.
type Result struct {
	Files    []File
	Warnings []string
}

// ErrTooLarge is wrapped by the error of a copy beyond MaxFiles or MaxBytes.
var ErrTooLarge = errors.New("artifacts too large")

// Exceeded is the step's error for err, a copy's error wrapping ErrTooLarge: the same words
// for a local build and an agent's.
func Exceeded(err error) *errs.ArtifactLimitError {
	return &errs.ArtifactLimitError{Err: err,
		Msg: fmt.Sprintf("its artifacts exceed a step's bounds (%d files, %d GiB): %v", MaxFiles, MaxBytes>>30, err)}
}

// Collector copies the files its patterns match into its destination. It is used by one
// goroutine; a backend calls FromFS once, or FromTar once per Prefixes entry.
type Collector struct {
	dst      *os.Root
	pats     [][]string // each pattern's components
	matched  []bool
	written  map[string]bool
	refused  map[string]bool
	res      Result
	bytes    int64
	maxFiles int
	maxBytes int64
}

// New returns a Collector writing into dst. Patterns are as ir validated them: clean,
// relative to /workspace, slash-separated, never "." nor escaping with "..".
func New(dst *os.Root, patterns []string) *Collector {
	c := &Collector{dst: dst, written: map[string]bool{}, refused: map[string]bool{}, maxFiles: MaxFiles, maxBytes: MaxBytes}
	for _, p := range patterns {
		c.pats = append(c.pats, strings.Split(p, "/"))
	}
	c.matched = make([]bool, len(c.pats))
	return c
}

// Result returns what was copied, with a warning for every pattern that matched nothing.
func (c *Collector) Result() Result {
	r := c.res
	r.Warnings = slices.Clone(r.Warnings)
	for i, ok := range c.matched {
		if !ok {
			r.Warnings = append(r.Warnings, fmt.Sprintf("artifact pattern %q matches nothing", strings.Join(c.pats[i], "/")))
		}
	}
	return r
}

// match says whether rel (a clean slash path under /workspace) is covered by a pattern
// (the pattern names it or a directory above it: it is copied) or may lead to a match
// (a pattern names something below it: it is walked into). It marks covering patterns.
func (c *Collector) match(rel string) (covered, descend bool) {
	comps := strings.Split(rel, "/")
	for i, p := range c.pats {
		n := min(len(p), len(comps))
		if !prefixMatch(p[:n], comps[:n]) {
			continue
		}
		if len(comps) >= len(p) {
			covered = true
			c.matched[i] = true
		} else {
			descend = true
		}
	}
	return covered, descend
}

// prefixMatch matches components pairwise. As for cache on_change globs (cachekey), a
// wildcard does not match a leading dot: hidden files are copied only when a pattern names
// them, or a directory above them.
func prefixMatch(pat, comps []string) bool {
	for i, pc := range pat {
		ok, err := path.Match(pc, comps[i])
		if err != nil || !ok {
			return false
		}
		if strings.HasPrefix(comps[i], ".") && !strings.HasPrefix(pc, ".") {
			return false
		}
	}
	return true
}

func (c *Collector) refuse(rel, what string) {
	if c.refused[rel] {
		return
	}
	c.refused[rel] = true
	c.res.Warnings = append(c.res.Warnings, fmt.Sprintf("artifact %q is %s: not copied", rel, what))
}

// Prefixes returns the paths (relative to /workspace; "." is /workspace itself) that hold
// every possible match: each pattern's leading components without wildcards (the whole
// pattern when it has none), deduplicated so that no path lies under another. A backend
// reading by archive (docker) fetches each, which reads nothing outside them.
func Prefixes(patterns []string) []string {
	var out []string
	for _, p := range patterns {
		comps := strings.Split(p, "/")
		n := 0
		for n < len(comps) && !strings.ContainsAny(comps[n], `*?[\`) {
			n++
		}
		if n == 0 {
			out = append(out, ".")
		} else {
			out = append(out, strings.Join(comps[:n], "/"))
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	var kept []string
	for _, p := range out {
		if !slices.ContainsFunc(out, func(d string) bool { return d != p && under(p, d) }) {
			kept = append(kept, p)
		}
	}
	return kept
}

// under reports whether p is dir or below it.
func under(p, dir string) bool {
	return dir == "." || p == dir || strings.HasPrefix(p, dir+"/")
}

// FromFS copies the matches from fsys, the machine's /workspace ("." is /workspace). fsys
// must report symlinks as such in ReadDir (os.Root.FS and the sandbox's layer view do) and
// Open only what ReadDir listed as a regular file.
func (c *Collector) FromFS(ctx context.Context, fsys fs.FS) error {
	return c.walk(ctx, fsys, ".", false)
}

func (c *Collector) walk(ctx context.Context, fsys fs.FS, dir string, all bool) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		if dir == "." && errors.Is(err, fs.ErrNotExist) {
			return nil // no /workspace at all: every pattern matches nothing
		}
		return fmt.Errorf("read %s: %w: %w", dir, errs.ErrInfra, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := e.Name()
		if dir != "." {
			rel = dir + "/" + rel
		}
		covered, descend := all, false
		if !all {
			covered, descend = c.match(rel)
		}
		if !covered && !descend {
			continue
		}
		switch t := e.Type(); {
		case t.IsDir():
			if covered {
				if err := c.mkdir(rel); err != nil {
					return err
				}
			}
			if err := c.walk(ctx, fsys, rel, covered); err != nil {
				return err
			}
		case t.IsRegular() && covered:
			if err := c.copyFrom(fsys, rel, e); err != nil {
				return err
			}
		case t&fs.ModeSymlink != 0:
			c.refuse(rel, "a symlink")
		case covered:
			c.refuse(rel, "not a regular file")
		}
	}
	return nil
}

func (c *Collector) copyFrom(fsys fs.FS, rel string, e fs.DirEntry) error {
	f, err := fsys.Open(rel)
	if err != nil {
		return fmt.Errorf("open %s: %w: %w", rel, errs.ErrInfra, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w: %w", rel, errs.ErrInfra, err)
	}
	if !fi.Mode().IsRegular() { // changed since it was listed
		c.refuse(rel, "not a regular file")
		return nil
	}
	return c.write(rel, fi.Mode(), f)
}

// FromTar copies the matches from a tar stream of dir (relative to /workspace, "." for
// /workspace itself), whose entries are named as docker's archive API names them: after
// dir's last component ("dist/a.txt" for dir "out/dist"), or "workspace/..." for ".".
func (c *Collector) FromTar(ctx context.Context, r io.Reader, dir string) error {
	parent := path.Dir(dir)
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive of %s: %w: %w", dir, errs.ErrInfra, err)
		}
		name := strings.Trim(h.Name, "/")
		if dir == "." {
			rest, ok := strings.CutPrefix(name, "workspace")
			if !ok || rest != "" && rest[0] != '/' {
				return fmt.Errorf("archive of /workspace has entry %q: %w", h.Name, errs.ErrInfra)
			}
			name = strings.TrimPrefix(rest, "/")
			if name == "" {
				continue // /workspace itself
			}
		} else if parent != "." {
			name = parent + "/" + name
		}
		if name != path.Clean(name) || strings.HasPrefix(name, "../") || name == ".." || path.IsAbs(name) {
			return fmt.Errorf("archive of %s has entry %q: %w", dir, h.Name, errs.ErrInfra)
		}
		covered, descend := c.match(name)
		if !covered && !descend {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if covered {
				if err := c.mkdir(name); err != nil {
					return err
				}
			}
		case tar.TypeReg:
			if covered {
				if err := c.write(name, h.FileInfo().Mode(), tr); err != nil {
					return err
				}
			}
		case tar.TypeSymlink:
			c.refuse(name, "a symlink")
		case tar.TypeLink:
			// A hard link to a file earlier in the archive: the same bytes, copied again
			// from what was written (which is inside the destination).
			target := strings.Trim(h.Linkname, "/")
			if dir == "." {
				target = strings.TrimPrefix(strings.TrimPrefix(target, "workspace"), "/")
			} else if parent != "." {
				target = parent + "/" + target
			}
			if covered {
				if err := c.copyLink(name, target); err != nil {
					return err
				}
			}
		default:
			if covered {
				c.refuse(name, "not a regular file")
			}
		}
	}
}

func (c *Collector) copyLink(name, target string) error {
	if !c.written[target] {
		c.refuse(name, "a hard link to a file not copied")
		return nil
	}
	f, err := c.dst.Open(target)
	if err != nil {
		return fmt.Errorf("reopen %s: %w: %w", target, errs.ErrInfra, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reopen %s: %w: %w", target, errs.ErrInfra, err)
	}
	return c.write(name, fi.Mode(), f)
}

func (c *Collector) mkdir(rel string) error {
	if err := c.dst.MkdirAll(rel, 0o755); err != nil {
		return fmt.Errorf("artifacts: mkdir %s: %w: %w", rel, errs.ErrInfra, err)
	}
	return nil
}

// write copies one file's bytes to rel in the destination, hashing them, within the bounds.
func (c *Collector) write(rel string, mode fs.FileMode, r io.Reader) error {
	if c.written[rel] {
		return nil // matched again through another prefix
	}
	if len(c.res.Files) >= c.maxFiles {
		return fmt.Errorf("%w: more than %d files", ErrTooLarge, c.maxFiles)
	}
	if dir := path.Dir(rel); dir != "." {
		if err := c.mkdir(dir); err != nil {
			return err
		}
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	f, err := c.dst.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("artifacts: create %s: %w: %w", rel, errs.ErrInfra, err)
	}
	c.written[rel] = true
	h := sha256.New()
	left := c.maxBytes - c.bytes
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, left+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("artifacts: copy %s: %w: %w", rel, errs.ErrInfra, err)
	}
	if n > left {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, c.maxBytes)
	}
	c.bytes += n
	c.res.Files = append(c.res.Files, File{Path: rel, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}
