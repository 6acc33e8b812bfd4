package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// TestRecentEventsOtherProcess: a build's events appended by two processes sharing the file
// (a second handle stands for the second process), interleaved. Each process's readers
// follow the stream page by page from every resume point and read every event once, in
// order, whichever of them appended it, also from inside a packed row: its cache (store.RecentEvents) answers only what it
// holds, and the rest comes from the file.
func TestRecentEventsOtherProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // hang guard
	defer cancel()
	path := filepath.Join(t.TempDir(), sqlite.FileName)
	a, err := sqlite.OpenFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := sqlite.OpenFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	o, err := a.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	if err != nil {
		t.Fatal(err)
	}
	bl, _, err := a.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: "{}"})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	appendN := func(s *sqlite.DB, n int) {
		t.Helper()
		var ps [][]byte
		for range n {
			want = append(want, fmt.Sprintf(`{"kind":"step_log","line":"%d"}`, len(want)+1))
			ps = append(ps, []byte(want[len(want)-1]))
		}
		if _, err := s.AppendEvents(ctx, bl.ID, ps...); err != nil {
			t.Fatal(err)
		}
	}
	appendN(a, 3)
	appendN(b, 2)
	appendN(a, 4)
	appendN(a, 1)
	appendN(b, 3)
	appendN(a, 2)
	appendN(a, store.PackEvents+10) // rows of PackEvents events: b reads them from the file
	appendN(b, 1)
	for name, s := range map[string]*sqlite.DB{"a": a, "b": b} {
		for from := int64(0); from <= int64(len(want)); from += 1 + from/20 {
			for _, limit := range []int{1, 2, 5, 1000} {
				var got []string
				after := from
				for {
					evs, err := s.ListEvents(ctx, bl.ID, after, limit)
					if err != nil {
						t.Fatal(err)
					}
					if len(evs) == 0 {
						break
					}
					if len(evs) > limit {
						t.Fatalf("%s: %d events for limit %d", name, len(evs), limit)
					}
					for _, e := range evs {
						if e.Seq != after+1 {
							t.Fatalf("%s from %d limit %d: seq %d after %d", name, from, limit, e.Seq, after)
						}
						after = e.Seq
						got = append(got, string(e.Payload))
					}
				}
				if diff := cmp.Diff(want[from:], got, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("%s from %d limit %d (-want +got):\n%s", name, from, limit, diff)
				}
			}
		}
	}
}
