package metrics

import (
	"context"
	"time"

	"github.com/hmci/hm/internal/store"
)

// instrumented is a store.Store that times every call (timed.go) and counts the transitions
// the metrics name. It forwards store.Watcher, the one optional ability the server's waiters
// look for; Unwrap gives the driver for the others (probes, names).
type instrumented struct {
	store.Store
	m *Metrics
}

// Store wraps st.
func (m *Metrics) Store(st store.Store) store.Store { return &instrumented{Store: st, m: m} }

// Unwrap is the driver under a store Metrics.Store wrapped, or st itself.
func Unwrap(st store.Store) store.Store {
	if i, ok := st.(*instrumented); ok {
		return i.Store
	}
	return st
}

// Watch forwards the driver's wake-ups (a never-receiving channel when it has none).
func (s *instrumented) Watch(topics ...store.Topic) (<-chan struct{}, func()) {
	return store.Watch(s.Store, topics...)
}

var _ store.Watcher = (*instrumented)(nil)

func (s *instrumented) ClaimJob(ctx context.Context, c store.Claim) (store.Job, bool, error) {
	defer s.m.timed("ClaimJob")()
	j, ok, err := s.Store.ClaimJob(ctx, c)
	if err == nil && ok {
		s.m.claims.Inc()
		if !j.ReadyAt.IsZero() && !c.Now.IsZero() {
			s.m.claimWait.Observe(max(c.Now.Sub(j.ReadyAt), 0).Seconds())
		}
	}
	return j, ok, err
}

func (s *instrumented) FinishJob(ctx context.Context, id string, attempt int, f store.Finish) (store.Job, error) {
	defer s.m.timed("FinishJob")()
	j, err := s.Store.FinishJob(ctx, id, attempt, f)
	if err == nil && j.State.Terminal() && !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
		s.m.stepSeconds.WithLabelValues(string(j.State)).Observe(max(j.FinishedAt.Sub(j.StartedAt), 0).Seconds())
	}
	return j, err
}

func (s *instrumented) ReapExpiredLeases(ctx context.Context, now time.Time, maxRetries int) ([]store.Job, error) {
	defer s.m.timed("ReapExpiredLeases")()
	js, err := s.Store.ReapExpiredLeases(ctx, now, maxRetries)
	s.m.expiries.Add(float64(len(js)))
	return js, err
}

func (s *instrumented) FailOrphans(ctx context.Context, now time.Time, agentTTL time.Duration) ([]store.Job, error) {
	defer s.m.timed("FailOrphans")()
	js, err := s.Store.FailOrphans(ctx, now, agentTTL)
	s.m.orphans.Add(float64(len(js)))
	return js, err
}

func (s *instrumented) AcquireLeader(ctx context.Context, name, owner string, now time.Time, ttl time.Duration) (int64, bool, error) {
	defer s.m.timed("AcquireLeader")()
	epoch, ok, err := s.Store.AcquireLeader(ctx, name, owner, now, ttl)
	if err == nil {
		v := 0.0
		if ok {
			v = 1
		}
		s.m.leader.Set(v)
	}
	return epoch, ok, err
}

func (s *instrumented) ReleaseLeader(ctx context.Context, name, owner string, epoch int64) error {
	defer s.m.timed("ReleaseLeader")()
	err := s.Store.ReleaseLeader(ctx, name, owner, epoch)
	if err == nil {
		s.m.leader.Set(0)
	}
	return err
}
