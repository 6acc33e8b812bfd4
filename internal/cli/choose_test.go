package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/errs"
)

// TestChooseVMSettles: chooseVM takes the state dir's verdict (settle) exactly once, before
// any error of its own, whichever backend is asked for: a failed check is what the user is
// told, as when the check ran before the backend was opened.
func TestChooseVMSettles(t *testing.T) {
	stateErr := &errs.StateDirError{Dir: "/state", Err: errors.New("read-only file system")}
	for _, tc := range []struct {
		name    string
		backend string
		images  []string
		settle  error
		wantErr string // "" for a backend chosen
	}{
		{"host, state dir fine", "host", []string{HostImage}, nil, ""},
		{"host, state dir unwritable", "host", []string{HostImage}, stateErr, "read-only file system"},
		{"unknown backend, state dir fine", "bogus", nil, nil, `unknown backend "bogus"`},
		{"unknown backend, state dir unwritable", "bogus", nil, stateErr, "read-only file system"},
		{"docker with the host image, state dir fine", "docker", []string{HostImage}, nil, "the docker backend cannot run"},
		{"docker with the host image, state dir unwritable", "docker", []string{HostImage}, stateErr, "read-only file system"},
		{"auto, state dir unwritable", "auto", []string{HostImage}, stateErr, "read-only file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			settle := func() error { calls++; return tc.settle }
			b, _, err := chooseVM(t.Context(), tc.backend, t.TempDir(), vmOptions{}, tc.images, settle)
			if b != nil {
				closeVM(b)
			}
			switch {
			case tc.wantErr == "" && (err != nil || b == nil):
				t.Errorf("got %v, %v; want a backend", b, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got error %v, want one containing %q", err, tc.wantErr)
			}
			if calls != 1 {
				t.Errorf("settle called %d times, want once", calls)
			}
		})
	}
}
