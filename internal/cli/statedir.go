package cli

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/execution/local"
)

// checkStateDir makes sure a build can write its state: machines, snapshots and the registry
// live there, and a state dir that cannot take them otherwise surfaces as a failed step or an
// internal error far from its cause (an unwritable HOME, a read-only registry, HM_STATE_DIR
// on a read-only filesystem).
//
// A state dir hm creates is private (0700): build records hold step output, the registry names
// every pipeline and snapshot. An existing one keeps the mode its owner gave it.
func checkStateDir(dir string) error {
	if err := makeStateDir(dir); err != nil {
		return err
	}
	return probeStateDir(dir)
}

// makeStateDir creates the state dir (private, see checkStateDir) if it is missing: before
// anything else can create it (a backend's own directories in it) with another mode.
func makeStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return stateDirError(dir, err)
	}
	return nil
}

// probeStateDir is checkStateDir's check of an existing state dir: a synced write, and the
// registry's files writable. It writes only a file of its own, removed again, so it may run
// beside the backend's start.
func probeStateDir(dir string) error {
	f, err := os.CreateTemp(dir, ".hm-write-check-*")
	if err != nil {
		return stateDirError(dir, err)
	}
	// A few bytes, not an empty file: a full filesystem still creates empty files.
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	os.Remove(f.Name())
	if err != nil {
		return stateDirError(dir, err)
	}
	// The directory may be writable while the registry is not (a file copied in, or chmod-ed):
	// SQLite would only fail at the first write, after steps ran.
	reg := local.RegistryPath(dir)
	for _, p := range []string{reg, reg + "-wal", reg + "-shm", reg + ".lock"} {
		if err := unix.Access(p, unix.W_OK); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return stateDirError(dir, &fs.PathError{Op: "write", Path: p, Err: err})
		}
	}
	return nil
}

// stateDirError is a state dir hm cannot write: exit 4, the machine's setup is at fault.
func stateDirError(dir string, err error) error {
	return &errs.StateDirError{Dir: dir, Err: err}
}
