// Package metrics is the Prometheus instrumentation of `hm server` (client_golang): what a
// deployment of several replicas watches, served at /metrics in the text exposition format.
//
// Everything is observed at the store boundary, by a store.Store wrapper (Metrics.Store), so
// that the HTTP layer, the agent protocol and the scheduling driver stay free of metric calls
// and every replica counts what it itself did:
//
//	hm_store_seconds{op}              histogram: latency of each store method
//	hm_claims_total                   counter: jobs handed to agents (ClaimJob that claimed; a
//	                                  claim answered again after a lost reply counts again)
//	hm_claim_wait_seconds             histogram: a job's wait from claimable to claimed (dispatch)
//	hm_lease_expiries_total           counter: jobs whose agent lease lapsed (the reaper's)
//	hm_orphans_failed_total           counter: requeued jobs failed for want of a live agent
//	hm_step_seconds{state}            histogram: a step's run time on its agent, by end state
//	hm_reaper_leader                  gauge: 1 on the replica holding the reaper's leader lease
//
// and, read from the store at each scrape (the same answer on every replica):
//
//	hm_queue_depth                    gauge: jobs claimable now and not claimed (scheduled)
//	hm_jobs{state}                    gauge: jobs not yet terminal, by state
//
// plus the Go runtime's and the process's collectors. A FinishJob repeated by an agent (its
// reply was lost) observes its step again: rare, and a histogram of run times shrugs it off.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hmci/hm/internal/store"
)

// scrapeTimeout bounds the store query of a scrape.
const scrapeTimeout = 2 * time.Second

// Metrics is one server process's registry.
type Metrics struct {
	reg          *prometheus.Registry
	storeSeconds *prometheus.HistogramVec
	claims       prometheus.Counter
	claimWait    prometheus.Histogram
	expiries     prometheus.Counter
	orphans      prometheus.Counter
	stepSeconds  *prometheus.HistogramVec
	leader       prometheus.Gauge
}

// New makes the registry; queue gauges read st (the driver, not the wrapper: a scrape is not
// store traffic worth timing).
func New(st store.Stats) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		storeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hm_store_seconds", Help: "Latency of store operations, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12), // 0.1 ms … ~2 s
		}, []string{"op"}),
		claims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hm_claims_total", Help: "Jobs handed to agents by this replica.",
		}),
		claimWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hm_claim_wait_seconds", Help: "Wait of a job from claimable (released or requeued) to claimed.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14), // 1 ms … ~2 min
		}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hm_lease_expiries_total", Help: "Jobs whose agent lease lapsed, reaped by this replica.",
		}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hm_orphans_failed_total", Help: "Requeued jobs failed agent_lost because no live agent could run them.",
		}),
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hm_step_seconds", Help: "Run time of steps on agents (start to finish), by end state.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 12), // 10 ms … ~30 min
		}, []string{"state"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hm_reaper_leader", Help: "1 when this replica holds the reaper's leader lease.",
		}),
	}
	m.reg.MustRegister(m.storeSeconds, m.claims, m.claimWait, m.expiries, m.orphans, m.stepSeconds, m.leader,
		&queue{st: st}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) timed(op string) func() {
	t0 := time.Now()
	return func() { m.storeSeconds.WithLabelValues(op).Observe(time.Since(t0).Seconds()) }
}

var (
	queueDepth = prometheus.NewDesc("hm_queue_depth", "Jobs claimable now and not yet claimed by an agent.", nil, nil)
	jobsDesc   = prometheus.NewDesc("hm_jobs", "Jobs not yet terminal, by state.", []string{"state"}, nil)
	liveStates = []store.JobState{store.JobPending, store.JobScheduled, store.JobAssigned, store.JobRunning,
		store.JobCanceling, store.JobTimingOut}
)

// queue reads the job counts at each scrape.
type queue struct{ st store.Stats }

func (q *queue) Describe(ch chan<- *prometheus.Desc) { ch <- queueDepth; ch <- jobsDesc }

func (q *queue) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	counts, err := q.st.JobCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepth, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(counts[store.JobScheduled]))
	for _, s := range liveStates {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}

// Claims, LeaseExpiries and Leader are the counters and the gauge (tests read them).
func (m *Metrics) Claims() prometheus.Counter        { return m.claims }
func (m *Metrics) LeaseExpiries() prometheus.Counter { return m.expiries }
func (m *Metrics) Leader() prometheus.Gauge          { return m.leader }
