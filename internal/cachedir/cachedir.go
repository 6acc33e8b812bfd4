// Package cachedir keeps the persistent directories of steps' cache_dirs (vm.CacheDir): one
// per backend, org, pipeline and path, like BuildKit's cache mounts, under the state dir.
//
// # Layout
//
//	STATE/cachedirs/BACKEND/ID/meta.json  what the directory is (org, pipeline, path) and
//	                                      when it was created and last used
//	STATE/cachedirs/BACKEND/ID/lock       flock(2): shared while a machine uses it,
//	                                      exclusive while it is removed
//	STATE/cachedirs/BACKEND/ID/data/      the directory itself, for backends that mount a
//	                                      host directory (sandbox, host); docker keeps a
//	                                      volume instead and only the record is here
//	STATE/cachedirs/BACKEND/trash-*       a directory being deleted
//
// # Sharing
//
// Concurrent machines given the same directory share it, as BuildKit's default
// sharing=shared does: the tools whose caches these are (go, cargo, npm, pip, ccache) write
// them with atomic renames and locks of their own precisely so that concurrent builds can
// share one. What hm guarantees is its own part: creating, recording and removing a
// directory races with nothing. A machine holds a shared lock for as long as its step's
// processes may write, and removal takes the exclusive lock without waiting, so a directory
// in use is never deleted (it is reported busy); the lock dies with the process holding it,
// so a killed hm leaves nothing locked.
package cachedir

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/vm"
)

// ErrBusy is returned by Remove for a directory a running step uses.
var ErrBusy = errors.New("cache directory in use by a running step")

// Entry is a recorded cache directory.
type Entry struct {
	ID       string    `json:"id"`
	Backend  string    `json:"backend"`
	Org      string    `json:"org"`
	Pipeline string    `json:"pipeline"`
	Path     string    `json:"path"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used"`
	// Size is the bytes of the regular files in the directory; List fills it for the
	// directories kept here, the backend's for the others (docker volumes). Not recorded.
	Size int64 `json:"-"`
}

// Store is one backend's cache directories under a state dir.
type Store struct {
	dir     string
	backend string
}

// Open returns backend's cache directories under stateDir; nothing is created until Use.
func Open(stateDir, backend string) *Store {
	return &Store{dir: filepath.Join(stateDir, "cachedirs", backend), backend: backend}
}

// Root is where every backend's cache directories of stateDir live.
func Root(stateDir string) string { return filepath.Join(stateDir, "cachedirs") }

func (s *Store) entryDir(id string) string { return filepath.Join(s.dir, id) }

// validID guards paths built from ids that come from the command line.
func validID(id string) bool {
	_, err := hex.DecodeString(id)
	return err == nil && len(id) == 32
}

// Use records d as used now, creating it when new, and locks it against removal until
// release is called, which the caller does once no process of the step can write to it any
// more. dir is the host directory to mount (created; unused by backends that keep volumes).
func (s *Store) Use(d vm.CacheDir) (dir string, release func(), err error) {
	id := d.ID()
	ed := s.entryDir(id)
	fail := func(err error) (string, func(), error) {
		return "", nil, fmt.Errorf("cache dir %s: %w: %w", d.Path, errs.ErrInfra, err)
	}
	// 0700: a step leaves setuid binaries and root's files here, out of other users' reach.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chmod(filepath.Dir(s.dir), 0o700); err != nil {
		return fail(err)
	}
	var lock *os.File
	for attempt := 0; ; attempt++ {
		if err := os.Mkdir(ed, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fail(err)
		}
		f, err := os.OpenFile(filepath.Join(ed, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
				continue // removed between the mkdir and the open
			}
			return fail(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
			f.Close()
			return fail(err)
		}
		// A removal may have renamed the directory away while this waited for the lock: the
		// lock must be the one at the path.
		if same(f, filepath.Join(ed, "lock")) {
			lock = f
			break
		}
		f.Close()
		if attempt >= 3 {
			return fail(errors.New("removed repeatedly while being opened"))
		}
	}
	release = func() { lock.Close() }
	data := filepath.Join(ed, "data")
	if err := os.Mkdir(data, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		release()
		return fail(err)
	}
	now := time.Now().UTC()
	e := Entry{ID: id, Backend: s.backend, Org: d.Org, Pipeline: d.Pipeline, Path: d.Path, Created: now, LastUsed: now}
	if old, err := readMeta(ed); err == nil && !old.Created.IsZero() {
		e.Created = old.Created
	}
	if err := writeMeta(ed, e); err != nil {
		release()
		return fail(err)
	}
	return data, release, nil
}

// same reports whether open file f is the file at p.
func same(f *os.File, p string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(p)
	return err == nil && os.SameFile(a, b)
}

func readMeta(ed string) (Entry, error) {
	var e Entry
	b, err := os.ReadFile(filepath.Join(ed, "meta.json"))
	if err != nil {
		return e, err
	}
	if len(b) > 64<<10 {
		return e, errors.New("meta.json too large")
	}
	err = json.Unmarshal(b, &e)
	return e, err
}

// writeMeta replaces the record atomically: concurrent users each rename a whole file.
func writeMeta(ed string, e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp := filepath.Join(ed, "meta.json.tmp-"+randomHex())
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(ed, "meta.json")); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// List returns the recorded directories, most recently used first, with the sizes of those
// kept here. A state dir without any lists none.
func (s *Store) List() ([]Entry, error) {
	des, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list cache dirs: %w: %w", errs.ErrInfra, err)
	}
	var out []Entry
	for _, de := range des {
		if !validID(de.Name()) {
			continue
		}
		e, err := readMeta(s.entryDir(de.Name()))
		if err != nil || e.ID != de.Name() {
			continue // being created or removed
		}
		e.Backend = s.backend
		e.Size = treeSize(filepath.Join(s.entryDir(e.ID), "data"))
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// treeSize adds up the regular files under dir (0 when there is none).
func treeSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Remove deletes the directory id unless a running step uses it (ErrBusy). also, when not
// nil, runs under the exclusive lock before the record goes: the backend removing what it
// keeps elsewhere (a docker volume); its failure keeps the record. Removing what is gone
// already is not an error.
func (s *Store) Remove(id string, also func() error) error {
	if !validID(id) {
		return fmt.Errorf("remove cache dir %q: %w: not a cache dir id", id, errs.ErrInvalid)
	}
	ed := s.entryDir(id)
	f, err := os.OpenFile(filepath.Join(ed, "lock"), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(ed); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		f, err = os.OpenFile(filepath.Join(ed, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		return fmt.Errorf("remove cache dir %s: %w: %w", id, errs.ErrInfra, err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("remove cache dir %s: %w", id, ErrBusy)
		}
		return fmt.Errorf("remove cache dir %s: %w: %w", id, errs.ErrInfra, err)
	}
	if also != nil {
		if err := also(); err != nil {
			return fmt.Errorf("remove cache dir %s: %w", id, err)
		}
	}
	// Renamed away first, under the lock: a Use waiting for the lock then finds it gone from
	// the path and starts afresh, and a crash mid-delete leaves trash, not a half directory.
	trash := filepath.Join(s.dir, "trash-"+randomHex())
	if err := os.Rename(ed, trash); err != nil {
		return fmt.Errorf("remove cache dir %s: %w: %w", id, errs.ErrInfra, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove cache dir %s: %w: %w", id, errs.ErrInfra, err)
	}
	return nil
}

// CleanTrash deletes what removals interrupted by a crash left.
func (s *Store) CleanTrash() {
	des, _ := os.ReadDir(s.dir)
	for _, de := range des {
		if strings.HasPrefix(de.Name(), "trash-") {
			_ = os.RemoveAll(filepath.Join(s.dir, de.Name()))
		}
	}
}
