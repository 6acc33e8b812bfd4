package source

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hmci/hm/internal/errs"
)

// PathSize is the total size of the regular files under one top-level path of the source.
type PathSize struct {
	Path  string // top-level name; directories end in "/"
	Bytes int64
}

// SizeError reports a source bigger than Options.MaxBytes. It wraps errs.ErrUsage, and
// errors.As converts it to the user-facing *errs.Error (code source_too_large) so that
// errs.Print shows the fix line.
type SizeError struct {
	Root    string
	Total   int64
	Limit   int64
	Largest []PathSize // biggest first, at most 5
}

const largestShown = 5

func newSizeError(root string, total, limit int64, top map[string]int64) *SizeError {
	e := &SizeError{Root: root, Total: total, Limit: limit}
	for p, n := range top {
		e.Largest = append(e.Largest, PathSize{Path: p, Bytes: n})
	}
	slices.SortFunc(e.Largest, func(a, b PathSize) int {
		if a.Bytes != b.Bytes {
			return cmp.Compare(b.Bytes, a.Bytes)
		}
		return strings.Compare(a.Path, b.Path)
	})
	if len(e.Largest) > largestShown {
		e.Largest = e.Largest[:largestShown]
	}
	return e
}

func (e *SizeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "source %s is %s, over the %s limit", e.Root, humanBytes(e.Total), humanBytes(e.Limit))
	if len(e.Largest) > 0 {
		b.WriteString("; largest: ")
		for i, p := range e.Largest {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s)", p.Path, humanBytes(p.Bytes))
		}
	}
	return b.String()
}

func (e *SizeError) Unwrap() error { return errs.ErrUsage }

// UserError is the error as shown to a person.
func (e *SizeError) UserError() *errs.Error {
	fix := "add large paths to .gitignore (or .git/info/exclude), or raise the source size limit"
	if len(e.Largest) > 0 {
		fix = fmt.Sprintf("add large paths such as %s to .gitignore (or .git/info/exclude), or raise the source size limit",
			e.Largest[0].Path)
	}
	return &errs.Error{Code: "source_too_large", Msg: e.Error(), Fix: fix, Exit: errs.ExitUsage, Err: e}
}

// As lets errors.As(err, &userErr) (and so errs.Print and errs.ExitCode) see the
// user-facing form.
func (e *SizeError) As(target any) bool {
	if t, ok := target.(**errs.Error); ok {
		*t = e.UserError()
		return true
	}
	return false
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
