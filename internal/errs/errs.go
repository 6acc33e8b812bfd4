// Package errs holds hm's error classes: a few sentinels that every engine error wraps with %w,
// and the user-facing form `error[code]: message` + `  fix    what to do` with its exit code
// (spec/semantics.md). A step that exits non-zero is not an error; it is a step outcome.
package errs

import (
	"errors"
	"fmt"
	"io"
)

// Sentinel classes. Wrap both the class and the cause, so that callers can test either:
// fmt.Errorf("docker: create: %w: %w", errs.ErrUnavailable, err) keeps errors.Is(err,
// fs.ErrNotExist) (or ENOSPC, or a Docker conflict) true beside errors.Is(err, errs.ErrUnavailable).
var (
	ErrUsage         = errors.New("usage error")
	ErrInvalid       = errors.New("pipeline invalid")
	ErrUnavailable   = errors.New("infrastructure unavailable")
	ErrImageNotFound = errors.New("image not found")
	ErrInfra         = errors.New("infrastructure error")
	ErrCanceled      = errors.New("canceled")
	// ErrAuth is a server that refused the credentials (401).
	ErrAuth = errors.New("authentication refused")
	// ErrNotFound is a server's organization or pipeline that does not exist (or is not the
	// token's to see: tenancy failures answer 404).
	ErrNotFound = errors.New("not found")
)

// Process exit codes of hm.
const (
	ExitPassed      = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitAuth        = 3
	ExitUnavailable = 4
	ExitNotFound    = 5
	ExitInvalid     = 7
	ExitTimedOut    = 124
	ExitCanceled    = 130
)

// Error is an error meant for a person: a stable code, a message and a fix.
type Error struct {
	Code string // e.g. "ir_cycle", "image_not_found"
	Msg  string
	Fix  string
	Exit int
	Err  error // the class (and cause), for errors.Is
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// New builds a user-facing error of class class (one of the sentinels).
func New(class error, code, fix, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Fix: fix, Exit: ExitCode(class), Err: class}
}

// ExitCode maps an error to hm's process exit code by its class.
func ExitCode(err error) int {
	var e *Error
	if errors.As(err, &e) && e.Exit != 0 {
		return e.Exit
	}
	switch {
	case err == nil:
		return ExitPassed
	case errors.Is(err, ErrUsage):
		return ExitUsage
	case errors.Is(err, ErrAuth):
		return ExitAuth
	case errors.Is(err, ErrNotFound):
		return ExitNotFound
	case errors.Is(err, ErrInvalid):
		return ExitInvalid
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrImageNotFound):
		return ExitUnavailable
	case errors.Is(err, ErrCanceled):
		return ExitCanceled
	}
	return ExitFailed
}

// Print writes err in the user-facing form. A typed error (ImageError, ...) gets its own code
// and no fix; other errors that are not *Error get their class's code, or "internal".
func Print(w io.Writer, err error) {
	var e *Error
	var typed interface {
		error
		Code() string
	}
	if !errors.As(err, &e) && errors.As(err, &typed) {
		// A typed error nobody turned into advice: its message, without a fix.
		fmt.Fprintf(w, "error[%s]: %s\n", typed.Code(), typed.Error())
		return
	}
	if e == nil {
		code := "internal"
		switch {
		case errors.Is(err, ErrUsage):
			code = "usage"
		case errors.Is(err, ErrInvalid):
			code = "invalid_pipeline"
		case errors.Is(err, ErrUnavailable):
			code = "unavailable"
		case errors.Is(err, ErrImageNotFound):
			code = "image_not_found"
		}
		fmt.Fprintf(w, "error[%s]: %v\n", code, err)
		return
	}
	fmt.Fprintf(w, "error[%s]: %s\n", e.Code, e.Msg)
	if e.Fix != "" {
		fmt.Fprintf(w, "  fix    %s\n", e.Fix)
	}
}
