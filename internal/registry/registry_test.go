package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
)

var t0 = time.Unix(1764000000, 0)

// clock is a deterministic clock: each reading is one second after the previous one, so the
// order of operations is the order of timestamps.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func openTest(t *testing.T, path string) *Registry {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "state", "registry.db")
	}
	r, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	c := &clock{t: t0}
	r.now = c.now
	return r
}

func mustRegister(t *testing.T, r *Registry, e Entry) Entry {
	t.Helper()
	w, err := r.Register(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func keys(es []Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

func entry(key string, size int64) Entry {
	return Entry{Fingerprint: "fp", Backend: "docker", Base: "sha256:base", Key: key, Snapshot: "snap-" + key,
		Pipeline: "ci", StepKey: "step-" + key, Size: size}
}

func TestEvictLRU(t *testing.T) {
	tests := []struct {
		name       string
		sizes      map[string]int64 // registered in key order: a is oldest
		touch      []string         // looked up afterwards, in order
		maxEntries int
		maxBytes   int64
		want       []string // evicted, least recently used first
	}{
		{"under limits", map[string]int64{"a": 1, "b": 1}, nil, 5, 0, []string{}},
		{"count limit evicts oldest", map[string]int64{"a": 1, "b": 1, "c": 1, "d": 1}, nil, 2, 0, []string{"a", "b"}},
		{"lookup refreshes", map[string]int64{"a": 1, "b": 1, "c": 1, "d": 1}, []string{"a"}, 2, 0, []string{"b", "c"}},
		{"touch order decides", map[string]int64{"a": 1, "b": 1, "c": 1}, []string{"c", "b", "a"}, 1, 0, []string{"c", "b"}},
		{"size cap", map[string]int64{"a": 10, "b": 10, "c": 10}, nil, 0, 25, []string{"a"}},
		{"size cap evicts older small entries too", map[string]int64{"a": 1, "b": 30, "c": 10}, nil, 0, 25, []string{"a", "b"}},
		{"both limits, count binds", map[string]int64{"a": 1, "b": 1, "c": 1}, nil, 1, 100, []string{"a", "b"}},
		{"no limits", map[string]int64{"a": 1, "b": 1}, nil, 0, 0, []string{}},
		{"exactly at both limits", map[string]int64{"a": 10, "b": 15}, nil, 2, 25, []string{}},
		{"one over the count limit", map[string]int64{"a": 1, "b": 1, "c": 1}, nil, 2, 0, []string{"a"}},
		{"one byte over the size cap", map[string]int64{"a": 10, "b": 16}, nil, 0, 25, []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := openTest(t, "")
			names := make([]string, 0, len(tc.sizes))
			for k := range tc.sizes {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				mustRegister(t, r, entry(k, tc.sizes[k]))
			}
			// Another backend's entries are neither counted nor evicted.
			mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "sandbox", Base: "b", Key: "old", Snapshot: "s", Size: 1000})
			for _, k := range tc.touch {
				if _, ok, err := r.Lookup(ctx, Scope{"docker", "sha256:base", k, "fp"}); err != nil || !ok {
					t.Fatalf("lookup %s: %v %v", k, ok, err)
				}
			}
			got, err := r.Evict(ctx, "docker", tc.maxEntries, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, keys(got)); d != "" {
				t.Errorf("evicted (-want +got):\n%s", d)
			}
			for _, e := range got {
				if e.Snapshot != "snap-"+e.Key {
					t.Errorf("evicted entry %s lost its snapshot id: %q", e.Key, e.Snapshot)
				}
				if _, ok, _ := r.Lookup(ctx, Scope{"docker", "sha256:base", e.Key, "fp"}); ok {
					t.Errorf("evicted %s still registered", e.Key)
				}
			}
			left, err := r.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != len(tc.sizes)-len(tc.want)+1 {
				t.Errorf("%d entries left, want %d", len(left), len(tc.sizes)-len(tc.want)+1)
			}
		})
	}
}

// Several hm processes starting at once on a fresh state dir all open the registry: creating
// the file, switching it to WAL and migrating its schema must not fail one of them with
// SQLITE_BUSY. Fresh files in several rounds, because the window is only on first use.
func TestOpenConcurrentFresh(t *testing.T) {
	const rounds, openers = 50, 8
	for round := range rounds {
		path := filepath.Join(t.TempDir(), fmt.Sprint(round), "registry.db")
		var wg sync.WaitGroup
		errc := make(chan error, openers)
		for range openers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := Open(context.Background(), path)
				if err != nil {
					errc <- err
					return
				}
				errc <- r.Close()
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}

// Two hm processes (two Registry instances on one file) build the same keys concurrently:
// exactly one snapshot per key is registered and every caller learns which.
func TestRegisterRace(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	// Open concurrently too: two hm starting on a fresh state dir.
	var regs [2]*Registry
	var wg sync.WaitGroup
	openErrs := make([]error, 2)
	for i := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			regs[i], openErrs[i] = Open(ctx, path)
		}()
	}
	wg.Wait()
	for i, err := range openErrs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		t.Cleanup(func() { regs[i].Close() })
	}

	const perReg, nkeys = 12, 3
	type result struct {
		key, mine, winner string
	}
	results := make(chan result, 2*perReg*nkeys)
	errc := make(chan error, 2*perReg*nkeys)
	start := make(chan struct{})
	for ri, r := range regs {
		for g := 0; g < perReg; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for k := 0; k < nkeys; k++ {
					key := fmt.Sprintf("key%d", k)
					mine := fmt.Sprintf("snap-r%d-g%d-%s", ri, g, key)
					w, err := r.Register(ctx, Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: key, Snapshot: mine})
					if err != nil {
						errc <- err
						return
					}
					results <- result{key, mine, w.Snapshot}
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	winners := map[string]map[string]bool{}
	won := map[string]int{}
	n := 0
	for res := range results {
		n++
		if winners[res.key] == nil {
			winners[res.key] = map[string]bool{}
		}
		winners[res.key][res.winner] = true
		if res.winner == res.mine {
			won[res.key]++
		}
	}
	if n != 2*perReg*nkeys {
		t.Fatalf("%d results", n)
	}
	want := map[string]bool{}
	for k := 0; k < nkeys; k++ {
		key := fmt.Sprintf("key%d", k)
		if len(winners[key]) != 1 || won[key] != 1 {
			t.Errorf("%s: callers saw %d snapshots, %d callers won; want 1 and 1", key, len(winners[key]), won[key])
		}
		for s := range winners[key] {
			want[s] = true
		}
	}
	// Every instance sees the same, single registered snapshot per key.
	for i, r := range regs {
		ref, err := r.Referenced(ctx, "docker")
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, ref); d != "" {
			t.Errorf("registry %d referenced (-want +got):\n%s", i, d)
		}
	}
}

func TestScopeByBackendAndBase(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, "")
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "img1", Key: "k", Snapshot: "s1"})
	for _, tc := range []struct{ backend, base string }{{"docker", "img2"}, {"sandbox", "img1"}} {
		if _, ok, err := r.Lookup(ctx, Scope{tc.backend, tc.base, "k", "fp"}); err != nil || ok {
			t.Errorf("lookup %s/%s: hit=%v err=%v, want miss", tc.backend, tc.base, ok, err)
		}
	}
	w := mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "img2", Key: "k", Snapshot: "s2"})
	if w.Snapshot != "s2" {
		t.Errorf("register on another base returned %s", w.Snapshot)
	}
	if err := r.Remove(ctx, Scope{"docker", "img1", "k", "fp"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := r.Lookup(ctx, Scope{"docker", "img1", "k", "fp"}); ok {
		t.Error("removed entry still found")
	}
	if e, ok, _ := r.Lookup(ctx, Scope{"docker", "img2", "k", "fp"}); !ok || e.Snapshot != "s2" {
		t.Errorf("remove deleted the wrong entry: %v %+v", ok, e)
	}
	if _, err := r.Register(ctx, Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: "k"}); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("register without snapshot: %v", err)
	}
}

func TestDropMissing(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, "")
	for _, k := range []string{"a", "b", "c"} {
		mustRegister(t, r, entry(k, 1))
	}
	// Two entries sharing one snapshot (same image for two keys).
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "other", Key: "a", Snapshot: "snap-a"})
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "sandbox", Base: "x", Key: "z", Snapshot: "snap-b"})
	calls := map[string]int{}
	gone := map[string]bool{"snap-a": true, "snap-b": true}
	dropped, err := r.DropMissing(ctx, "docker", func(id string) (bool, error) {
		calls[id]++
		return !gone[id], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range dropped {
		got = append(got, e.Base+"/"+e.Key)
	}
	sort.Strings(got)
	if d := cmp.Diff([]string{"other/a", "sha256:base/a", "sha256:base/b"}, got); d != "" {
		t.Errorf("dropped (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int{"snap-a": 1, "snap-b": 1, "snap-c": 1}, calls); d != "" {
		t.Errorf("exists calls (-want +got):\n%s", d)
	}
	ref, err := r.Referenced(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// snap-b stays referenced by the sandbox entry: DropMissing was scoped to docker.
	if d := cmp.Diff(map[string]bool{"snap-b": true, "snap-c": true}, ref); d != "" {
		t.Errorf("referenced (-want +got):\n%s", d)
	}

	boom := errors.New("daemon gone")
	if _, err := r.DropMissing(ctx, "", func(string) (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("exists error: got %v", err)
	}
	if left, _ := r.List(ctx, ""); len(left) != 2 {
		t.Errorf("an exists error must drop nothing; %d entries left, want 2", len(left))
	}
}

func TestPruneClean(t *testing.T) {
	tests := []struct {
		name      string
		keep      int
		olderThan time.Duration
		clean     bool
		want      []string
	}{
		// Entries a..e are last used at t0+1s..t0+5s, the sandbox entry at t0+6s; the prune runs
		// at t0+7s, so 4.5s ago is t0+2.5s.
		{"keep only", 2, 0, false, []string{"a", "b", "c"}},
		{"older than only", 0, 4500 * time.Millisecond, false, []string{"a", "b"}},
		{"both: kept ones are safe even if old", 4, 4500 * time.Millisecond, false, []string{"a"}},
		{"both: young ones are safe beyond keep", 1, 4500 * time.Millisecond, false, []string{"a", "b"}},
		{"keep more than there are", 10, 0, false, []string{}},
		{"clean", 0, 0, true, []string{"a", "b", "c", "d", "e"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			r := openTest(t, "")
			for _, k := range []string{"a", "b", "c", "d", "e"} {
				mustRegister(t, r, entry(k, 1))
			}
			mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "sandbox", Base: "b", Key: "s", Snapshot: "s"})
			var got []Entry
			var err error
			if tc.clean {
				got, err = r.Clean(ctx, "docker")
			} else {
				got, err = r.Prune(ctx, "docker", tc.keep, tc.olderThan)
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, keys(got)); d != "" {
				t.Errorf("removed (-want +got):\n%s", d)
			}
			if left, _ := r.List(ctx, "sandbox"); len(left) != 1 {
				t.Errorf("other backend touched: %d entries left", len(left))
			}
		})
	}
	r := openTest(t, "")
	if _, err := r.Prune(context.Background(), "", -1, 0); !errors.Is(err, errs.ErrUsage) {
		t.Errorf("negative keep: %v", err)
	}
	mustRegister(t, r, entry("x", 1))
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "sandbox", Base: "b", Key: "s", Snapshot: "s"})
	if got, err := r.Clean(context.Background(), ""); err != nil || len(got) != 2 {
		t.Errorf("clean all: %d entries, %v", len(got), err)
	}
}

func TestLastFor(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, "")
	in1 := cachekey.Inputs{Policy: "forever", CmdHash: "c1"}
	in2 := cachekey.Inputs{Policy: "forever", CmdHash: "c2"}
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: "k1", Snapshot: "s1", Pipeline: "ci", StepKey: "build", Inputs: in1})
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: "k2", Snapshot: "s2", Pipeline: "ci", StepKey: "build", Inputs: in2})
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: "k3", Snapshot: "s3", Pipeline: "ci", StepKey: "test"})
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: "k4", Snapshot: "s4", Pipeline: "release", StepKey: "build"})
	mustRegister(t, r, Entry{Fingerprint: "fp", Backend: "sandbox", Base: "img", Key: "k5", Snapshot: "s5", Pipeline: "ci", StepKey: "build"})
	// Using the older entry does not make it the last registered one.
	if _, ok, _ := r.Lookup(ctx, Scope{"docker", "img", "k1", "fp"}); !ok {
		t.Fatal("k1 missing")
	}
	e, ok, err := r.LastFor(ctx, "docker", "", "ci", "build")
	if err != nil || !ok {
		t.Fatalf("LastFor: %v %v", ok, err)
	}
	if e.Key != "k2" {
		t.Errorf("LastFor key %s, want k2", e.Key)
	}
	if d := cmp.Diff(in2, e.Inputs); d != "" {
		t.Errorf("inputs (-want +got):\n%s", d)
	}
	if _, ok, err := r.LastFor(ctx, "docker", "", "ci", "deploy"); ok || err != nil {
		t.Errorf("LastFor unknown step: %v %v", ok, err)
	}
}

func TestReopenPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{Fingerprint: "fp", Backend: "docker", Base: "img", Key: "k", Snapshot: "s", Pipeline: "ci", StepKey: "build",
		Created: t0, LastUsed: t0, Size: 42,
		Inputs: cachekey.Inputs{Policy: "on_change", ParentKey: "scratch", Files: map[string]string{"go.sum": "h"},
			EnvValues: map[string]string{"A": "1"}, TTLBuckets: []cachekey.TTLBucket{{Seconds: 60, Bucket: 3}}}}
	mustRegister(t, r, want)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openTest(t, path)
	es, err := r.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]Entry{want}, es, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); d != "" {
		t.Errorf("after reopen (-want +got):\n%s", d)
	}
	var v int
	if err := r.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("user_version %d (%v), want %d", v, err, len(migrations))
	}
	var mode string
	if err := r.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q (%v), want wal", mode, err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(ctx, path)
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != "registry_too_new" {
		t.Fatalf("open newer schema: %v", err)
	}
}

func TestSetSizeFeedsTheSizeCap(t *testing.T) {
	ctx := context.Background()
	r, err := Open(ctx, filepath.Join(t.TempDir(), "reg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, k := range []string{"old", "new"} {
		if _, err := r.Register(ctx, Entry{Fingerprint: "fp", Backend: "b", Base: "img", Key: k, Snapshot: "s-" + k,
			Created: time.Unix(int64(100+i), 0), LastUsed: time.Unix(int64(100+i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	// Unsized entries never trip the cap.
	if ev, err := r.Evict(ctx, "b", 0, 150); err != nil || len(ev) != 0 {
		t.Fatalf("Evict before sizes: %v, %v", ev, err)
	}
	for _, k := range []string{"old", "new"} {
		if err := r.SetSize(ctx, Scope{"b", "img", k, "fp"}, 100); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := r.Evict(ctx, "b", 0, 150)
	if err != nil || len(ev) != 1 || ev[0].Key != "old" || ev[0].Size != 100 {
		t.Fatalf("Evict after sizes = %+v, %v; want the old entry of 100 bytes", ev, err)
	}
}

// TestPeek: Peek finds what Lookup finds and leaves last_used as it was.
func TestPeek(t *testing.T) {
	r := openTest(t, "")
	ctx := t.Context()
	w := mustRegister(t, r, entry("a", 0))
	p, ok, err := r.Peek(ctx, w.Scope())
	if err != nil || !ok || p.Snapshot != w.Snapshot {
		t.Fatalf("Peek = %+v, %v, %v; want the registered entry", p, ok, err)
	}
	if !p.LastUsed.Equal(w.LastUsed) {
		t.Errorf("Peek changed last_used: %v, registered %v", p.LastUsed, w.LastUsed)
	}
	if _, ok, _ := r.Peek(ctx, entry("b", 0).Scope()); ok {
		t.Error("Peek found an entry never registered")
	}
}

// TestEvictWithinBoundsReads: within its bounds Evict only reads, so it neither waits for
// another hm holding the write lock nor takes it; over them it still decides under the lock.
func TestEvictWithinBoundsReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := openTest(t, path)
	for _, k := range []string{"a", "b"} {
		mustRegister(t, r, entry(k, 1))
	}
	other := openTest(t, path) // another hm, in the middle of a write
	tx, err := other.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second) // busy_timeout is 30 s
	defer cancel()
	got, err := r.Evict(ctx, "docker", 2, 0)
	if err != nil || len(got) != 0 {
		t.Errorf("Evict within bounds beside a writer: %v, %v; want nothing evicted at once", keys(got), err)
	}
	if _, err := r.Evict(ctx, "docker", 1, 0); err == nil {
		t.Errorf("Evict over its bounds did not wait for the other writer's lock")
	}
}

// BenchmarkEvictWithinBounds is the end of a build that registered nothing: 40 entries, a
// bound of 256 (local's default).
func BenchmarkEvictWithinBounds(b *testing.B) {
	r, err := Open(b.Context(), filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for i := range 40 {
		e := entry(fmt.Sprint("k", i), 1000)
		e.Inputs = cachekey.Inputs{Policy: "forever", Org: "org"}
		if _, err := r.Register(b.Context(), e); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := r.Evict(b.Context(), "docker", 256, 0); err != nil {
			b.Fatal(err)
		}
	}
}
