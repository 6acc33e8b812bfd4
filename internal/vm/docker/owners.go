package docker

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"

	"github.com/hmci/hm/internal/proc"
	"github.com/hmci/hm/internal/statedir"
)

// Owner records make a clean start cheap. Finding what dead hm processes left takes an image
// listing, and the daemon walks every image it holds for one, whatever the filter: tens of
// ms on a daemon with a few hundred images, the largest part of a fully cached run. So each
// hm process records itself in the state dir (docker/owners/HOST/PID-START) before it makes
// its first container, and removes the record when it closes the backend with everything it
// made removed again. Reconcile lists containers and images only when this host has the
// record of an owner that is gone (killed, crashed, or it failed to clean up) or when the
// last full reconcile is older than untaggedGrace: that also catches what no record names
// (an hm older than the records, images untagged while a container used them, a record lost
// with the machine's power). Otherwise nothing can be there to clean, and Reconcile makes
// no call to the daemon at all.

// ownersDir holds this host's records; other hosts sharing the state dir judge their own.
func (b *Backend) ownersDir() string {
	return filepath.Join(b.state, "docker", "owners", safeName(b.host))
}

// markerPath's modification time is when the last full reconcile ended.
func (b *Backend) markerPath() string { return filepath.Join(b.state, "docker", "reconciled") }

func safeName(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
}

// record writes o's record, once, before the first container labelled with o is created.
// It is synced, file and directory, so that a crash right after the create still finds it.
func (b *Backend) record(o proc.Owner) error {
	if b.state == "" {
		return nil
	}
	name := o.String()
	b.mu.Lock()
	b.account()
	done := b.records[name]
	b.mu.Unlock()
	if done {
		return nil
	}
	dir := b.ownersDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	err = errors.Join(f.Sync(), f.Close())
	if d, derr := os.Open(dir); derr == nil {
		err = errors.Join(err, d.Sync(), d.Close())
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.records[name] = true
	b.mu.Unlock()
	return nil
}

// needFull reports whether Reconcile must list the daemon's containers and images, and the
// records of dead owners it then removes.
func (b *Backend) needFull() (bool, []string) {
	if b.state == "" {
		return true, nil // nowhere to keep records
	}
	names, err := statedir.List(b.ownersDir())
	if err != nil {
		return true, nil
	}
	var dead []string
	for _, n := range names {
		o, err := proc.ParseOwner(n)
		if err != nil || !o.Alive() {
			dead = append(dead, n)
		}
	}
	st, err := os.Stat(b.markerPath())
	stale := err != nil || time.Since(st.ModTime()) > untaggedGrace
	return stale || len(dead) > 0, dead
}

// fullDone records a successful full reconcile: the dead owners' records go, the marker is
// touched.
func (b *Backend) fullDone(dead []string) {
	if b.state == "" {
		return
	}
	for _, n := range dead {
		_ = os.Remove(filepath.Join(b.ownersDir(), n))
	}
	p := b.markerPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return
	}
	now := time.Now()
	if err := os.Chtimes(p, now, now); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(p, nil, 0o644)
	}
}

// The backend's own account of what it made and has not removed yet, so that Close knows
// whether its records may go.

// account initialises the maps below; b.mu is held. (Tests build Backends by hand.)
func (b *Backend) account() {
	if b.records == nil {
		b.records, b.live, b.eph, b.linger = map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	}
}

func (b *Backend) madeContainer(id string) {
	b.mu.Lock()
	b.account()
	b.live[id] = true
	b.mu.Unlock()
}

func (b *Backend) removedContainer(id string) {
	b.mu.Lock()
	b.account()
	delete(b.live, id)
	b.mu.Unlock()
}

func (b *Backend) madeEphemeral(id string) {
	b.mu.Lock()
	b.account()
	b.eph[id] = true
	b.mu.Unlock()
}

// removedSnapshot: id's tag is gone; lingering, the image itself is not (a container or a
// child image still needs it).
func (b *Backend) removedSnapshot(id string, lingering bool) {
	b.mu.Lock()
	b.account()
	delete(b.eph, id)
	if lingering {
		b.linger[id] = true
	}
	b.mu.Unlock()
}

// failed marks the account unreliable: a removal failed, so something may be left.
func (b *Backend) failed() {
	b.mu.Lock()
	b.dirty = true
	b.mu.Unlock()
}

// release removes this process's records when everything it made is gone, retrying the
// images that lingered untagged while a container still used them. Otherwise the records
// stay, and the next start, finding their owner gone, reconciles in full.
func (b *Backend) release() {
	self := proc.Self().String()
	b.mu.Lock()
	clean := !b.dirty && len(b.live) == 0 && len(b.eph) == 0
	var names []string
	for n := range b.records {
		// Only this process's own: a record of another owner (tests fake dead ones) is
		// judged by the next Reconcile.
		if n == self {
			names = append(names, n)
		}
	}
	linger := make([]string, 0, len(b.linger))
	for id := range b.linger {
		linger = append(linger, id)
	}
	b.mu.Unlock()
	if !clean || len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range linger {
		// No container of this process is left; a child image keeping it is part of a
		// snapshot, and the daemon prunes it with its last child.
		_, err := b.cli.ImageRemove(ctx, id, image.RemoveOptions{PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			return
		}
	}
	for _, n := range names {
		_ = os.Remove(filepath.Join(b.ownersDir(), n))
	}
}
