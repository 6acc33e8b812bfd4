package driver

import (
	"context"

	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/store"
)

// cache is the scheduler's cache over the store's registry, scoped by the chain's base
// image. The job is the truth first: a job past pending was a miss and runs (or ran), a
// passed job with no attempt was a hit; only a pending job consults the registry, and its
// hit is recorded on the job (PassCached) before the scheduler reports it.
type cache struct{ d *driver }

func (c *cache) Lookup(_ context.Context, q scheduler.CacheQuery) (scheduler.CacheResult, error) {
	st, life := c.d.cfg.Store, c.d.life
	j, err := st.GetJob(life, c.d.byKey[q.StepKey].ID)
	if err != nil {
		return scheduler.CacheResult{}, err
	}
	switch {
	case j.State == store.JobPassed && j.Attempt == 0:
		return scheduler.CacheResult{Hit: true, Snapshot: j.Snapshot}, nil
	case j.State != store.JobPending:
		return scheduler.CacheResult{}, nil
	}
	e, err := st.LookupCache(life, c.d.build.OrgID, q.Key, q.BaseImage, c.d.cfg.Now())
	if store.IsNotFound(err) {
		return scheduler.CacheResult{}, nil
	}
	if err != nil {
		return scheduler.CacheResult{}, err
	}
	if _, err := st.PassCached(life, j.ID, e.Snapshot, e.AgentID, c.d.cfg.Now()); err != nil {
		return scheduler.CacheResult{}, err
	}
	return scheduler.CacheResult{Hit: true, Snapshot: e.Snapshot}, nil
}

func (c *cache) Register(_ context.Context, q scheduler.CacheQuery, snapshot string) (string, error) {
	st, life := c.d.cfg.Store, c.d.life
	j, err := st.GetJob(life, c.d.byKey[q.StepKey].ID)
	if err != nil {
		return "", err
	}
	_, err = st.PutCacheEntry(life, store.CacheEntry{OrgID: c.d.build.OrgID, Key: q.Key, Scope: q.BaseImage,
		Snapshot: snapshot, AgentID: j.SnapshotAgent, CreatedAt: c.d.cfg.Now(), LastUsed: c.d.cfg.Now()})
	return snapshot, err
}
