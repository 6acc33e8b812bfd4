package local

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/scheduler"
)

// resolvingVM is a listingVM that resolves images locally (localResolver): images maps a
// reference to its id, and the references asked are recorded.
type resolvingVM struct {
	*listingVM
	images map[string]string
	rmu    sync.Mutex
	asked  []string
}

func (f *resolvingVM) ResolveLocal(_ context.Context, ref string) (string, error) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	f.asked = append(f.asked, ref)
	if id, ok := f.images[ref]; ok {
		return id, nil
	}
	return "", &errs.ImageError{Ref: ref, Class: errs.ErrImageNotFound}
}

// TestPrefetch: with a cached root, the build's entries are read and their snapshots checked
// before the first lookup, under the root image's local id (after --map-image); the lookups
// then hit from those checks with no inspect of their own. Where the prefetch cannot know the
// first lookup's base (no local resolution, the image absent, an uncached root) or guessed
// another, the lookups do the work, as without it, and still hit.
func TestPrefetch(t *testing.T) {
	for _, tc := range []struct {
		name         string
		resolver     bool
		images       map[string]string
		rootKey      string
		wantAsked    []string
		wantPrefetch int // inspects done before the first lookup
		wantInspect  int // after the lookups
	}{
		{"cached root", true, map[string]string{"mapped": "base"}, "k0", []string{"mapped"}, 2, 2},
		{"no local resolution", false, nil, "k0", nil, 0, 2},
		{"image absent", true, nil, "k0", []string{"mapped"}, 0, 2},
		{"another base than the lookups'", true, map[string]string{"mapped": "other"}, "k0", []string{"mapped"}, 0, 2},
		{"uncached root", true, map[string]string{"mapped": "base"}, "", nil, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			reg := testRegistry(t)
			results := []cachekey.Result{{Key: tc.rootKey, Fingerprint: "f0"}, {Key: "k1", Fingerprint: "f1"}}
			for i, snap := range []string{"snap0", "snap1"} {
				if results[i].Key != "" {
					register(t, reg, results, i, snap)
				}
			}
			lv := &listingVM{declined: true, exists: map[string]bool{"snap0": true, "snap1": true}}
			rv := &resolvingVM{listingVM: lv, images: tc.images}
			c := &registryCache{reg: reg, vm: lv, results: results, keys: []string{tc.rootKey, "k1"},
				children: [][]int{{1}, nil}}
			if tc.resolver {
				c.vm = rv
			}
			pl := &plan.Plan{Steps: []plan.Step{{Key: "s0", Image: "img", Parent: -1}, {Key: "s1", Parent: 0}}}
			c.prefetch(ctx, pl, map[string]string{"img": "mapped"})
			if c.prefetched != nil {
				<-c.prefetched
			}
			for _, ch := range c.checks { // the checks run in the background
				<-ch.done
			}
			lv.mu.Lock()
			prefetched := lv.inspect
			lv.mu.Unlock()

			var hits []bool
			for i := range 2 {
				if results[i].Key == "" {
					continue // the scheduler looks up cached steps only
				}
				res, err := c.Lookup(ctx, scheduler.CacheQuery{Step: i, StepKey: "s", Key: results[i].Key, BaseImage: "base"})
				if err != nil {
					t.Fatal(err)
				}
				hits = append(hits, res.Hit)
			}
			c.wait()
			want := []bool{true, true}
			if tc.rootKey == "" {
				want = want[1:]
			}
			if diff := cmp.Diff(want, hits); diff != "" {
				t.Errorf("hits (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAsked, rv.asked); diff != "" {
				t.Errorf("images resolved (-want +got):\n%s", diff)
			}
			if prefetched != tc.wantPrefetch || lv.inspect != tc.wantInspect {
				t.Errorf("%d inspects before the lookups, %d after; want %d and %d", prefetched, lv.inspect, tc.wantPrefetch, tc.wantInspect)
			}
		})
	}
}
