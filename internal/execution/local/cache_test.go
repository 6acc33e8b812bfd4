package local

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/vm"
)

// listingVM is a vm.Backend with vm.SnapshotLister: listed is what ListSnapshots returns,
// exists what SnapshotExists answers; it counts the SnapshotExists calls.
// With declined, ListSnapshots returns vm.ErrNotListed.
type listingVM struct {
	vm.Backend
	listed   []string
	declined bool
	exists   map[string]bool
	mu       sync.Mutex
	inspect  int
}

func (f *listingVM) Name() string { return "fake" }
func (f *listingVM) ListSnapshots(context.Context) ([]string, error) {
	if f.declined {
		return nil, vm.ErrNotListed
	}
	return f.listed, nil
}
func (f *listingVM) SnapshotExists(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inspect++
	return f.exists[id], nil
}

// TestLookupChecked: when the backend declines to list, the build's entries are checked at
// the first lookup, once each; a hit whose child hits is answered from that check, and a
// snapshot found gone is a miss.
// testRegistry opens a registry of its own for the test, closed at its cleanup.
func testRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg, err := registry.Open(t.Context(), filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// register registers results[i] of backend fake over base "base" as snapshot snap.
func register(t *testing.T, reg *registry.Registry, results []cachekey.Result, i int, snap string) registry.Entry {
	t.Helper()
	w, err := reg.Register(t.Context(), registry.Entry{Backend: "fake", Base: "base", Key: results[i].Key,
		Fingerprint: results[i].Fingerprint, Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestLookupChecked(t *testing.T) {
	for _, tc := range []struct {
		name        string
		exists      map[string]bool
		wantHits    []bool
		wantInspect int
	}{
		{"all present: one check each", map[string]bool{"snap0": true, "snap1": true}, []bool{true, true}, 2},
		// The parent's child will run: its snapshot is asked again right before its hit; the
		// child's is asked again at its own lookup.
		{"child's snapshot gone", map[string]bool{"snap0": true}, []bool{true, false}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			reg := testRegistry(t)
			results := []cachekey.Result{{Key: "k0", Fingerprint: "f0"}, {Key: "k1", Fingerprint: "f1"}}
			register(t, reg, results, 0, "snap0")
			register(t, reg, results, 1, "snap1")
			f := &listingVM{declined: true, exists: tc.exists}
			c := &registryCache{reg: reg, vm: f, results: results, keys: []string{"k0", "k1"},
				children: [][]int{{1}, nil}}
			var hits []bool
			for i := range 2 {
				res, err := c.Lookup(ctx, scheduler.CacheQuery{Step: i, StepKey: "s", Key: results[i].Key, BaseImage: "base"})
				if err != nil {
					t.Fatal(err)
				}
				hits = append(hits, res.Hit)
			}
			if diff := cmp.Diff(tc.wantHits, hits); diff != "" || f.inspect != tc.wantInspect {
				t.Errorf("hits (-want +got):\n%s; %d inspects, want %d", diff, f.inspect, tc.wantInspect)
			}
		})
	}
}

// TestLookupListing: a hit whose children all hit too is answered from the one listing; a
// hit a child may start from is inspected right before it is reported, so a snapshot
// removed after the listing is a miss.
func TestLookupListing(t *testing.T) {
	for _, tc := range []struct {
		name        string
		childEntry  bool
		exists      bool // the parent's snapshot when inspected
		wantHit     bool
		wantInspect int
	}{
		{"children hit: no inspect", true, false, true, 0},
		{"child misses: inspected, present", false, true, true, 1},
		{"child misses: inspected, removed since the listing", false, false, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			reg := testRegistry(t)
			results := []cachekey.Result{{Key: "k0", Fingerprint: "f0"}, {Key: "k1", Fingerprint: "f1"}}
			register(t, reg, results, 0, "snap0")
			if tc.childEntry {
				register(t, reg, results, 1, "snap1")
			}
			f := &listingVM{listed: []string{"snap0", "snap1"}, exists: map[string]bool{"snap0": tc.exists}}
			c := &registryCache{reg: reg, vm: f, results: results, keys: []string{"k0", "k1"},
				children: [][]int{{1}, nil}}
			res, err := c.Lookup(ctx, scheduler.CacheQuery{Step: 0, StepKey: "s0", Key: "k0", BaseImage: "base"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Hit != tc.wantHit || f.inspect != tc.wantInspect {
				t.Errorf("hit %v after %d inspects, want %v after %d", res.Hit, f.inspect, tc.wantHit, tc.wantInspect)
			}
		})
	}
}

// TestLookupReadsOnce: the build's entries are read at its first lookup and marked used in
// one write (one time for all); an entry registered after that (by a concurrent run) is
// still found at its own lookup, and marked then.
func TestLookupReadsOnce(t *testing.T) {
	ctx := t.Context()
	reg := testRegistry(t)
	results := []cachekey.Result{{Key: "k0", Fingerprint: "f0"}, {Key: "k1", Fingerprint: "f1"}, {Key: "k2", Fingerprint: "f2"}}
	add := func(i int) registry.Entry { return register(t, reg, results, i, fmt.Sprint("snap", i)) }
	registered := []registry.Entry{add(0), add(1)}
	f := &listingVM{declined: true, exists: map[string]bool{"snap0": true, "snap1": true, "snap2": true}}
	c := &registryCache{reg: reg, vm: f, results: results, keys: []string{"k0", "k1", "k2"},
		children: [][]int{{1}, {2}, nil}}
	var hits []bool
	for i := range 3 {
		if i == 2 {
			registered = append(registered, add(2)) // after the first lookup's read
		}
		res, err := c.Lookup(ctx, scheduler.CacheQuery{Step: i, StepKey: "s", Key: results[i].Key, BaseImage: "base"})
		if err != nil {
			t.Fatal(err)
		}
		hits = append(hits, res.Hit)
	}
	c.wait()
	if diff := cmp.Diff([]bool{true, true, true}, hits); diff != "" {
		t.Errorf("hits (-want +got):\n%s", diff)
	}
	var used []time.Time
	for _, r := range registered {
		e, ok, err := reg.Peek(ctx, r.Scope())
		if err != nil || !ok {
			t.Fatalf("entry %s: %v, %v", r.Key, ok, err)
		}
		if !e.LastUsed.After(r.LastUsed) {
			t.Errorf("entry %s not marked used: %v, registered %v", r.Key, e.LastUsed, r.LastUsed)
		}
		used = append(used, e.LastUsed)
	}
	if !used[0].Equal(used[1]) {
		t.Errorf("the first lookup's entries were marked at %v and %v, want one write", used[0], used[1])
	}
}
