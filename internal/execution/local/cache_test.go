package local

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/vm"
)

// listingVM is a vm.Backend with vm.SnapshotLister: listed is what ListSnapshots returns,
// exists what SnapshotExists answers; it counts the SnapshotExists calls.
type listingVM struct {
	vm.Backend
	listed  []string
	exists  map[string]bool
	inspect int
}

func (f *listingVM) Name() string                                    { return "fake" }
func (f *listingVM) ListSnapshots(context.Context) ([]string, error) { return f.listed, nil }
func (f *listingVM) SnapshotExists(_ context.Context, id string) (bool, error) {
	f.inspect++
	return f.exists[id], nil
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
			reg, err := registry.Open(ctx, filepath.Join(t.TempDir(), "registry.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			results := []cachekey.Result{{Key: "k0", Fingerprint: "f0"}, {Key: "k1", Fingerprint: "f1"}}
			add := func(i int, snap string) {
				e := registry.Entry{Backend: "fake", Base: "base", Key: results[i].Key,
					Fingerprint: results[i].Fingerprint, Snapshot: snap}
				if _, err := reg.Register(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			add(0, "snap0")
			if tc.childEntry {
				add(1, "snap1")
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
