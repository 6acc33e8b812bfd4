package sqlite_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/sqlite"
)

// The server's log path per line: an agent's chunks appended in batches of 1000 and read
// back by the driver, the step_log events appended and read back by the event stream.
//
//	go test -run XXX -bench BenchmarkLogPath ./internal/store/sqlite/
func BenchmarkLogPath(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	o, err := s.CreateOrg(ctx, "acme", "Acme")
	if err != nil {
		b.Fatal(err)
	}
	p, err := s.CreatePipeline(ctx, store.Pipeline{OrgID: o.ID, Slug: "ci", Name: "CI"})
	if err != nil {
		b.Fatal(err)
	}
	bd, js, err := s.CreateBuild(ctx, store.NewBuild{OrgID: o.ID, PipelineID: p.ID, IR: `{}`, Jobs: []store.NewJob{{StepKey: "s", Command: "true"}}, Now: now})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.ReleaseJob(ctx, js[0].ID, now); err != nil {
		b.Fatal(err)
	}
	if _, err := s.UpsertAgent(ctx, store.Agent{ID: "a1", OrgID: o.ID, Name: "a1", Backend: "host"}, now); err != nil {
		b.Fatal(err)
	}
	j, ok, err := s.ClaimJob(ctx, store.Claim{AgentID: "a1", OrgID: o.ID, Now: now, LeaseTTL: time.Hour})
	if err != nil || !ok {
		b.Fatal(ok, err)
	}
	const batch = 1000
	var seq, last int64 // across the runs of each sub-benchmark: the streams continue
	b.Run("chunks", func(b *testing.B) {
		from := seq
		for b.Loop() {
			cs := make([]store.LogChunk, batch)
			for i := range cs {
				seq++
				cs[i] = store.LogChunk{Seq: seq, Content: fmt.Sprint(seq), TS: now}
			}
			if head, err := s.AppendLogs(ctx, j.ID, j.Attempt, cs); err != nil || head != seq {
				b.Fatal(head, err)
			}
			if got, err := s.ListLogs(ctx, j.ID, j.Attempt, seq-batch, batch); err != nil || len(got) != batch {
				b.Fatal(len(got), err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq-from), "ns/line")
	})
	b.Run("events", func(b *testing.B) {
		n := 0
		for b.Loop() {
			ps := make([][]byte, batch)
			for i := range ps {
				ps[i] = fmt.Appendf(nil, `{"kind":"step_log","step_id":"%s","stream":"stdout","line":"%d","ts":"2026-12-01T10:00:00.123456789Z","attempt":1}`, j.ID, n)
				n++
			}
			seqs, err := s.AppendEvents(ctx, bd.ID, ps...)
			if err != nil {
				b.Fatal(err)
			}
			if got, err := s.ListEvents(ctx, bd.ID, last, batch); err != nil || len(got) != batch {
				b.Fatal(len(got), err)
			}
			last = seqs[len(seqs)-1]
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/line")
	})
}
