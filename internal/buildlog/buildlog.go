// Package buildlog keeps the event stream of every build under the state dir, so a build's
// output outlives the terminal that showed it (`hm logs`, `hm builds`). It is a store of
// finished and running builds' records, not a renderer and not the cache.
//
// On disk, under STATE/builds/, one directory per build, named by the build's run_id:
//
//	STATE/builds/<run-id>/events.ndjson   the events, one JSON line each, byte for byte as
//	                                      `hm run --format json` streams them
//	STATE/builds/<run-id>/meta.json       pipeline, source dir, start, end, status, exit code,
//	                                      duration, and how many log lines were cut or dropped
//
// events.ndjson is appended as the build runs, one write per event, so a reader can follow it.
// meta.json is written when the build starts (status "running") and replaced atomically
// (temporary file and rename) when it ends.
//
// Bounds: a step_log line longer than MaxLineBytes is stored cut to that length (and "…"); once
// a build's events file holds MaxBuildBytes, further step_log lines are not stored (one notice
// line per step says so, and meta counts them) while every other event still is, so the record
// stays complete. Builds are pruned when a new one starts: all but the newest Keep, and those
// older than MaxAge (config [builds] keep, max_age); `hm builds prune` does it on demand.
//
// Crash recovery: the writing hm holds an exclusive flock(2) on events.ndjson for the whole
// build. The kernel drops it when the process dies, however it dies, so a record whose meta
// still says "running" but whose lock is free belongs to a dead hm and is reported as
// "interrupted"; no PID files, no clean-up pass. Its events file may end in a partial line
// (only after a machine crash: writes are not fsynced), which readers skip.
//
// A failure to write the record never fails a build: Record reports it once and the build
// goes on (a read-only or full state dir).
package buildlog

import (
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
)

const (
	// MaxLineBytes caps one stored log line; the live stream allows 4 MiB, but a record is for
	// reading back, and 256 KiB keeps one runaway line from filling the build's share.
	MaxLineBytes = 256 << 10
	// MaxBuildBytes caps one build's events file.
	MaxBuildBytes = 64 << 20
	// DefaultKeep and DefaultMaxAge are the pruning defaults: the last 50 builds, at most 30
	// days old.
	DefaultKeep   = 50
	DefaultMaxAge = 30 * 24 * time.Hour
)

// Status of a build record.
type Status string

const (
	Running     Status = "running"
	Passed      Status = "passed"
	Failed      Status = "failed"
	TimedOut    Status = "timed_out"
	Canceled    Status = "canceled"
	Interrupted Status = "interrupted" // its hm died before build_end
)

// StatusOf maps a build_end exit code (semantics.md) to a status.
func StatusOf(exitCode int) Status {
	switch exitCode {
	case 0:
		return Passed
	case 124:
		return TimedOut
	case 130:
		return Canceled
	}
	return Failed
}

// Meta is a build's meta.json.
type Meta struct {
	ID         string     `json:"id"`
	Pipeline   string     `json:"pipeline"`
	SourceDir  string     `json:"source_dir"`
	Backend    string     `json:"backend"`
	StartedAt  time.Time  `json:"started_at"`
	EndedAt    *time.Time `json:"ended_at"`
	Status     Status     `json:"status"`
	ExitCode   *int       `json:"exit_code"`
	DurationMS int64      `json:"duration_ms"`
	// CutLines counts log lines stored shortened to MaxLineBytes; DroppedLines those not
	// stored because the build reached MaxBuildBytes.
	CutLines     int `json:"cut_lines"`
	DroppedLines int `json:"dropped_lines"`
	// Artifacts is the build's artifacts directory (its steps' artifacts and manifest),
	// removed with the record; "" when it has none recorded.
	Artifacts string `json:"artifacts,omitempty"`
}

// ErrNotFound and ErrAmbiguous are returned by Find.
var (
	ErrNotFound  = errors.New("no such build")
	ErrAmbiguous = errors.New("build id prefix is ambiguous")
)

// ShortLen is how many characters of an id `hm builds` shows (a run_id's first group);
// Find accepts any unique prefix, and says when one is ambiguous.
const ShortLen = 8

// Short abbreviates an id.
func Short(id string) string {
	if len(id) > ShortLen {
		return id[:ShortLen]
	}
	return id
}

// Store is the builds directory of a state dir. Opening it does no I/O.
type Store struct{ dir string }

// Open returns the store under stateDir.
func Open(stateDir string) *Store { return &Store{dir: filepath.Join(stateDir, "builds")} }

// Dir is STATE/builds.
func (s *Store) Dir() string { return s.dir }

// EventsPath is the events file of build id.
func (s *Store) EventsPath(id string) string { return filepath.Join(s.dir, id, "events.ndjson") }

func (s *Store) metaPath(id string) string { return filepath.Join(s.dir, id, "meta.json") }

// validID keeps a run_id (from the engine, or a remote server's stream) from naming a path
// outside the store.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// List returns every build, newest first. A directory without a readable meta.json (being
// created, or damaged) is left out.
func (s *Store) List() ([]Meta, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, e := range ents {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		m, err := s.Get(e.Name())
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.After(out[j].StartedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

// Get reads build id's meta, with a "running" record whose writer is gone as Interrupted.
func (s *Store) Get(id string) (Meta, error) {
	if !validID(id) {
		return Meta{}, ErrNotFound
	}
	m, err := s.readMeta(id)
	if err != nil || m.Status != Running {
		return m, err
	}
	if s.Running(id) {
		return m, nil
	}
	// The writer may have finished between the two reads: its final meta is written before
	// it lets go of the lock.
	if m, err = s.readMeta(id); err == nil && m.Status == Running {
		m.Status = Interrupted
	}
	return m, err
}

func (s *Store) readMeta(id string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(s.metaPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("buildlog: %s: %w", s.metaPath(id), err)
	}
	return m, nil
}

// Running reports whether a live hm holds build id's lock.
func (s *Store) Running(id string) bool {
	f, err := os.Open(s.EventsPath(id))
	if err != nil {
		return false
	}
	defer f.Close()
	return locked(f)
}

// locked tries a shared lock on f and reports whether an exclusive one is held elsewhere.
func locked(f *os.File) bool {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}

// Find resolves ref: "" is the newest build, otherwise an id or a unique prefix of one.
func (s *Store) Find(ref string) (Meta, error) {
	all, err := s.List()
	if err != nil {
		return Meta{}, err
	}
	if ref == "" {
		if len(all) == 0 {
			return Meta{}, ErrNotFound
		}
		return all[0], nil
	}
	var match []Meta
	for _, m := range all {
		if m.ID == ref {
			return m, nil
		}
		if strings.HasPrefix(m.ID, ref) {
			match = append(match, m)
		}
	}
	switch len(match) {
	case 0:
		return Meta{}, ErrNotFound
	case 1:
		return match[0], nil
	}
	return Meta{}, ErrAmbiguous
}

// Prune removes all but the newest keep builds (keep < 0: no count limit) and builds started
// before now-maxAge (maxAge <= 0: no age limit). A running build is never removed. It returns
// what it removed.
func (s *Store) Prune(keep int, maxAge time.Duration, now time.Time) ([]Meta, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var removed []Meta
	var firstErr error
	for i, m := range all {
		old := maxAge > 0 && m.StartedAt.Before(now.Add(-maxAge))
		if !(keep >= 0 && i >= keep) && !old {
			continue
		}
		if m.Status == Running {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, m.ID)); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		// The build's artifacts go with it: only the directory hm made for this build, named
		// by its id, whatever a hand-edited meta.json says.
		if a := m.Artifacts; a != "" && filepath.IsAbs(a) && filepath.Base(a) == m.ID {
			if err := os.RemoveAll(a); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		removed = append(removed, m)
	}
	return removed, firstErr
}

// writeMeta replaces meta.json atomically, so a reader sees the old record or the new one.
func (s *Store) writeMeta(m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.metaPath(m.ID) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.metaPath(m.ID))
}
