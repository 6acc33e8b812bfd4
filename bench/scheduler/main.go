// Command scheduler measures the scheduler's own overhead: a 10,000-step DAG on an in-process
// no-op VM backend, every event encoded as NDJSON. Baseline, measured in the same run: the same
// number of no-op machine lifecycles and events driven by a plain loop with no scheduling.
//
//	go run ./bench/scheduler [-steps 10000] [-parallelism 8]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/source"
	"github.com/hmci/hm/internal/vm"
)

type noopVM struct{}

func (noopVM) Name() string                                                        { return "noop" }
func (noopVM) ResolveImage(context.Context, string) (string, error)                { return "noop-image", nil }
func (noopVM) Create(context.Context, vm.Spec) (vm.Machine, error)                 { return noopMachine{}, nil }
func (noopVM) SnapshotExists(context.Context, string) (bool, error)                { return true, nil }
func (noopVM) RemoveSnapshot(context.Context, string) error                        { return nil }
func (noopVM) Reconcile(context.Context) error                                     { return nil }
func (noopVM) PruneSnapshots(context.Context, func(string) bool) ([]string, error) { return nil, nil }
func (noopVM) SnapshotSize(context.Context, string) (int64, error)                 { return 0, nil }

type noopMachine struct{}

func (noopMachine) Inject(context.Context, *source.Tree) error { return nil }
func (noopMachine) Run(_ context.Context, stdout, _ io.Writer) (int, error) {
	_, err := io.WriteString(stdout, "ok\n")
	return 0, err
}
func (noopMachine) Commit(context.Context, bool) (string, error) { return "snap", nil }
func (noopMachine) Destroy(context.Context) error                { return nil }

// dag builds n steps: chains of builds_in lineage (length 1-8) with depends_on fan-ins from
// random earlier steps, the shape of a large monorepo pipeline.
func dag(n int) *ir.Pipeline {
	r := rand.New(rand.NewPCG(1, 2))
	p := &ir.Pipeline{Version: "0", DefaultImage: "img"}
	for i := 0; i < n; i++ {
		p.Nodes = append(p.Nodes, ir.Node{Step: ir.Step{Key: fmt.Sprintf("s%05d", i), Cmd: "true"}, Env: map[string]string{"CI": "true"}})
		if i == 0 {
			continue
		}
		if i%8 != 0 {
			p.Edges = append(p.Edges, ir.Edge{From: i - 1, To: i, Kind: ir.BuildsIn})
		}
		for k := 0; k < 2; k++ {
			from := r.IntN(i)
			if from != i-1 {
				p.Edges = append(p.Edges, ir.Edge{From: from, To: i, Kind: ir.DependsOn})
			}
		}
	}
	return p
}

func drain(q *events.Queue) chan int {
	done := make(chan int)
	go func() {
		w := events.NewNDJSONWriter(io.Discard)
		n := 0
		for e := range q.C() {
			_ = w.Write(e)
			n++
		}
		done <- n
	}()
	return done
}

func main() {
	steps := flag.Int("steps", 10000, "steps in the DAG")
	par := flag.Int("parallelism", runtime.NumCPU(), "parallelism")
	flag.Parse()

	p := dag(*steps)
	ctx := context.Background()

	// Baseline: the same machine lifecycles and the same kind of events, in a plain loop.
	q := events.NewQueue()
	done := drain(q)
	t0 := time.Now()
	for i := 0; i < *steps; i++ {
		m, _ := noopVM{}.Create(ctx, vm.Spec{})
		lw := events.NewLineWriter(func(l string) {
			q.Publish(events.Event{Kind: events.KindStepLog, StepLog: &events.StepLog{StepID: "x", Stream: "stdout", Line: l, TS: time.Now()}})
		})
		for _, k := range []events.Kind{events.KindStepQueued, events.KindStepStart} {
			q.Publish(events.Event{Kind: k, StepQueued: &events.StepQueued{StepID: "x"}, StepStart: &events.StepStart{StepID: "x"}})
		}
		_, _ = m.Run(ctx, lw, io.Discard)
		_ = m.Destroy(ctx)
		q.Publish(events.Event{Kind: events.KindStepEnd, StepEnd: &events.StepEnd{StepID: "x"}})
	}
	q.Close()
	baseEvents := <-done
	base := time.Since(t0)

	// hm: parse-free plan + scheduler + event stream.
	q = events.NewQueue()
	done = drain(q)
	t1 := time.Now()
	pl := plan.New(p)
	res := scheduler.Run(ctx, pl, noopVM{}, scheduler.Options{Parallelism: *par, Publish: q.Publish})
	q.Close()
	n := <-done
	took := time.Since(t1)
	if res.Status != scheduler.BuildPassed {
		fmt.Fprintln(os.Stderr, "build did not pass:", res.Status)
		os.Exit(1)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	rssMB := float64(ru.Maxrss) / 1024

	fmt.Printf("| %d-step DAG, parallelism %d | %s | %s | %.1f× | %.0f MB | %d events (baseline %d) |\n",
		*steps, *par, took.Round(time.Millisecond), base.Round(time.Millisecond),
		float64(took)/float64(base), rssMB, n, baseEvents)
}
