package host

import (
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkTrivialStep is one step of `true` on the host backend, as the scheduler drives it
// for a root step without children: Create, Run, Destroy. The phases' mean times are
// reported beside ns/op.
func BenchmarkTrivialStep(b *testing.B) {
	be := New(b.TempDir())
	ctx := context.Background()
	var create, run, destroy time.Duration
	for b.Loop() {
		t0 := time.Now()
		m, err := be.Create(ctx, spec("true"))
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if code, err := m.Run(ctx, io.Discard, io.Discard); err != nil || code != 0 {
			b.Fatalf("exit %d, %v", code, err)
		}
		t2 := time.Now()
		if err := m.Destroy(ctx); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		create, run, destroy = create+t1.Sub(t0), run+t2.Sub(t1), destroy+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(create.Microseconds())/n, "create-µs/op")
	b.ReportMetric(float64(run.Microseconds())/n, "run-µs/op")
	b.ReportMetric(float64(destroy.Microseconds())/n, "destroy-µs/op")
}
