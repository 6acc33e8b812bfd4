package source

import (
	"fmt"
	"os"
	"path"

	"github.com/hmci/hm/internal/errs"
)

// sourceFiles opens the regular files of a tree below its root, at write time. It keeps the
// last directory open: entries are sorted, so the files of one directory mostly come in a
// row, and opening "a/b/c" through os.Root costs one openat per component.
type sourceFiles struct {
	root string
	top  *os.Root
	dir  string
	sub  *os.Root // open root of dir
}

// open opens p, checking that it is still what Pack saw: a file whose size changed since
// would yield a corrupt tar or a half-copied workspace.
func (s *sourceFiles) open(p string, e Entry) (*os.File, error) {
	f, err := s.openFile(p)
	if err != nil {
		return nil, fmt.Errorf("source: %w: read %s: %v", errs.ErrInfra, p, err)
	}
	fi, err := f.Stat()
	if err == nil && (!fi.Mode().IsRegular() || fi.Size() != e.Size) {
		err = fmt.Errorf("changed since the source was packed (%d bytes, now %d)", e.Size, fi.Size())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("source: %w: read %s: %v", errs.ErrInfra, p, err)
	}
	return f, nil
}

func (s *sourceFiles) openFile(p string) (*os.File, error) {
	if s.top == nil {
		top, err := os.OpenRoot(s.root)
		if err != nil {
			return nil, err
		}
		s.top = top
	}
	dir, base := path.Split(p)
	if dir == "" {
		return s.top.Open(base)
	}
	if dir != s.dir || s.sub == nil {
		if s.sub != nil {
			s.sub.Close()
			s.sub = nil
		}
		sub, err := s.top.OpenRoot(dir)
		if err != nil {
			return nil, err
		}
		s.dir, s.sub = dir, sub
	}
	return s.sub.Open(base)
}

func (s *sourceFiles) close() {
	if s.sub != nil {
		s.sub.Close()
	}
	if s.top != nil {
		s.top.Close()
	}
}
