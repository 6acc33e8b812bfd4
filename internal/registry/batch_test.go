package registry

import (
	"fmt"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPeekManyTouch: PeekMany finds exactly the registered entries of the scopes asked (also
// past one batch), Touch marks exactly those used, and neither finds an empty fingerprint.
func TestPeekManyTouch(t *testing.T) {
	r := openTest(t, "")
	ctx := t.Context()
	var asked []Scope
	want := []string{}
	for i := range batchSize + 5 {
		e := entry(fmt.Sprintf("k%03d", i), 0)
		if i%2 == 0 {
			mustRegister(t, r, e)
			want = append(want, e.Key)
		}
		asked = append(asked, e.Scope())
	}
	other := mustRegister(t, r, entry("other", 0)) // registered, not asked
	asked = append(asked, Scope{"docker", "sha256:base", "other", ""})
	got, err := r.PeekMany(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	gotKeys := []string{}
	for s, e := range got {
		if s != e.Scope() {
			t.Errorf("entry %+v under scope %+v", e, s)
		}
		gotKeys = append(gotKeys, e.Key)
	}
	sort.Strings(gotKeys)
	if diff := cmp.Diff(want, gotKeys); diff != "" {
		t.Fatalf("PeekMany keys (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if !e.LastUsed.Before(other.LastUsed) {
			t.Fatalf("PeekMany or a later Register changed last_used of %s", e.Key)
		}
	}

	if err := r.Touch(ctx, asked); err != nil {
		t.Fatal(err)
	}
	after, err := r.PeekMany(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	for s, e := range after {
		if !e.LastUsed.After(other.LastUsed) {
			t.Errorf("Touch left %s at %v (registered %v)", e.Key, e.LastUsed, got[s].LastUsed)
		}
		if used == 0 {
			used = e.LastUsed.UnixNano()
		} else if e.LastUsed.UnixNano() != used {
			t.Errorf("Touch marked %s at %v, others at %v: one write, one time", e.Key, e.LastUsed, used)
		}
	}
	if o, _, _ := r.Peek(ctx, other.Scope()); !o.LastUsed.Equal(other.LastUsed) {
		t.Errorf("Touch marked %s, which was asked with an empty fingerprint only", o.Key)
	}
	if err := r.Touch(ctx, nil); err != nil {
		t.Errorf("Touch of nothing = %v", err)
	}
}
