// Package source packs the working tree that hm overlays into /workspace of every executing
// step (spec/semantics.md, Workspace).
package source

import (
	"io/fs"
	"time"
)

// EntryType is the kind of a tree entry.
type EntryType uint8

const (
	TypeFile EntryType = iota
	TypeDir
	TypeSymlink
)

// Entry is one path of the packed tree.
type Entry struct {
	Path string // slash-separated, relative to the tree root, never "." nor starting with "/"
	Type EntryType
	Mode fs.FileMode // permission bits
	Size int64       // regular files only
	Link string      // symlink target, as stored in the link
	// ModTime is kept so that tools comparing timestamps (make) see edited source as newer
	// than outputs a parent step left in /workspace.
	ModTime time.Time
}

// Tree is the result of one walk of the source directory. Entries are sorted by path, so a
// directory comes before what it contains.
type Tree struct {
	Root    string
	Entries []Entry
	Size    int64 // total bytes of regular files
}
