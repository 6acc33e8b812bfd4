package store

import (
	"errors"
	"fmt"
)

// Classes of store errors, beside errs.ErrInfra and errs.ErrCanceled for database failures.
var (
	ErrNotFound          = errors.New("not found")
	ErrConflict          = errors.New("conflict")
	ErrInvalidTransition = errors.New("invalid state transition")
)

// NotFoundError says an entity does not exist (or is not the caller's: the same answer, 404).
type NotFoundError struct {
	Kind string // "org", "token", "pipeline", "build", "job", "agent", "blob", "cache_entry"
	Key  string // what was looked up
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("store: %s %q not found", e.Kind, e.Key) }
func (e *NotFoundError) Unwrap() error { return ErrNotFound }
func (e *NotFoundError) Code() string  { return e.Kind + "_not_found" }

// ConflictError says a write was refused: a duplicate, a stale attempt, or an entity no longer
// in the state the write needs. State and Attempt are the entity's current ones when known.
type ConflictError struct {
	Kind    string
	Key     string
	Reason  string
	State   string
	Attempt int
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("store: %s %q: %s", e.Kind, e.Key, e.Reason)
	if e.State != "" {
		s += fmt.Sprintf(" (state %s, attempt %d)", e.State, e.Attempt)
	}
	return s
}
func (e *ConflictError) Unwrap() error { return ErrConflict }
func (e *ConflictError) Code() string  { return "conflict" }

// IsNotFound and IsConflict are the tests a server maps to 404 and 409.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }
