package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/registry"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/store"
)

// cache is the scheduler's cache over the store's registry. An entry is scoped, as locally
// (spec/cache-keys.md), by the step's fingerprint and the chain's base image beside its key,
// and named by the id registry.Scope gives it (backend: the driver's runner name), so hits and
// misses read as they do locally: step_cache_hit.entry, and a miss line "hm: cache miss: no
// entry <id>: <what differs from the step's last entry>".
//
// The job is the truth first: a passed job with no attempt was a hit; a job past pending was
// a miss and runs (or ran), explained by the note recorded on it (NoteCacheMiss) before the
// step started; a pending job with a note is that miss again (a driver that stopped between
// the note and the release). Only a pending job without a note consults the registry: its hit
// is recorded on the job (PassCached), its miss note before the scheduler logs it, so that
// every driver of the build publishes the same events.
type cache struct {
	d      *driver
	inputs map[string]cachekey.Inputs // by step key: the client's (hm_options.cache_inputs)
}

// scope is the store's scope string of q: fingerprint, a space, base (an image reference
// holds no space).
func (c *cache) scope(q scheduler.CacheQuery) string {
	return c.inputs[q.StepKey].Fingerprint + " " + q.BaseImage
}

// baseOf is the base image of a stored scope.
func baseOf(scope string) string {
	_, base, ok := strings.Cut(scope, " ")
	if !ok {
		return scope // an entry of a server before fingerprints
	}
	return base
}

// entryID names q's entry as the user sees it.
func (c *cache) entryID(q scheduler.CacheQuery) string {
	return registry.Scope{Backend: c.d.cfg.Backend, Base: q.BaseImage, Key: q.Key,
		Fingerprint: c.inputs[q.StepKey].Fingerprint}.ID()
}

func (c *cache) Lookup(_ context.Context, q scheduler.CacheQuery) (scheduler.CacheResult, error) {
	st, life := c.d.cfg.Store, c.d.life
	id := c.entryID(q)
	j, err := st.GetJob(life, c.d.byKey[q.StepKey].ID)
	if err != nil {
		return scheduler.CacheResult{}, err
	}
	switch {
	case j.State == store.JobPassed && j.Attempt == 0:
		return scheduler.CacheResult{Hit: true, Snapshot: j.Snapshot, Entry: id}, nil
	case j.State != store.JobPending || j.CacheNote != "":
		return scheduler.CacheResult{Entry: id, Explain: j.CacheNote}, nil
	}
	miss := func(why string) (scheduler.CacheResult, error) {
		j, err := st.NoteCacheMiss(life, j.ID, why)
		if err != nil {
			return scheduler.CacheResult{}, err
		}
		return scheduler.CacheResult{Entry: id, Explain: j.CacheNote}, nil
	}
	fp := c.inputs[q.StepKey].Fingerprint
	if fp == "" {
		// Without the fingerprint a key may name another command's snapshot (an on_change
		// key leaves the command out): never a hit, as locally for an entry without one.
		return miss(fmt.Sprintf("no entry %s (the client sent no fingerprint of the step)", id))
	}
	e, err := st.LookupCache(life, c.d.build.OrgID, q.Key, c.scope(q), c.d.cfg.Now())
	if store.IsNotFound(err) {
		return miss(c.explain(q, id))
	}
	if err != nil {
		return scheduler.CacheResult{}, err
	}
	// The snapshot exists while its agent is alive: it is on that agent's disk, and the
	// children of a hit must run there.
	a, err := st.GetAgent(life, e.AgentID)
	if err != nil && !store.IsNotFound(err) {
		return scheduler.CacheResult{}, err
	}
	if err != nil || a.LastSeen.Before(c.d.cfg.Now().Add(-c.d.cfg.AgentTTL)) {
		_ = st.DeleteCacheEntry(life, e.OrgID, e.Key, e.Scope)
		return miss(fmt.Sprintf("entry %s points to snapshot %s, which is gone", id, e.Snapshot))
	}
	if _, err := st.PassCached(life, j.ID, e.Snapshot, e.AgentID, e.Artifacts, c.d.cfg.Now()); err != nil {
		return scheduler.CacheResult{}, err
	}
	return scheduler.CacheResult{Hit: true, Snapshot: e.Snapshot, Entry: id}, nil
}

// explain says what differs from the last entry registered for the same pipeline and step:
// the cached snapshot the user expected to get. The wording is the local backend's.
func (c *cache) explain(q scheduler.CacheQuery, id string) string {
	msg := fmt.Sprintf("no entry %s", id)
	last, err := c.d.cfg.Store.LastCacheEntry(c.d.life, c.d.build.OrgID, c.d.build.PipelineID, q.StepKey)
	if err != nil {
		return msg + " (first run of this step)"
	}
	var diffs []string
	if b := baseOf(last.Scope); b != q.BaseImage {
		diffs = append(diffs, fmt.Sprintf("root image changed: %s → %s", short(b), short(q.BaseImage)))
	}
	var old cachekey.Inputs
	if len(last.Inputs) > 0 && json.Unmarshal(last.Inputs, &old) == nil {
		diffs = append(diffs, cachekey.Diff(old, c.inputs[q.StepKey])...)
	}
	if len(diffs) == 0 {
		return msg
	}
	return msg + ": " + strings.Join(diffs, "; ")
}

func (c *cache) Register(_ context.Context, q scheduler.CacheQuery, snapshot string) (string, error) {
	in, ok := c.inputs[q.StepKey]
	if !ok || in.Fingerprint == "" {
		return snapshot, nil // no entry could ever hit (Lookup): none is kept
	}
	st, life := c.d.cfg.Store, c.d.life
	j, err := st.GetJob(life, c.d.byKey[q.StepKey].ID)
	if err != nil {
		return "", err
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return "", err
	}
	now := c.d.cfg.Now()
	_, err = st.PutCacheEntry(life, store.CacheEntry{OrgID: c.d.build.OrgID, Key: q.Key, Scope: c.scope(q),
		Snapshot: snapshot, AgentID: j.SnapshotAgent, PipelineID: c.d.build.PipelineID, StepKey: q.StepKey,
		Inputs: raw, Artifacts: j.Artifacts, CreatedAt: now, LastUsed: now})
	return snapshot, err
}

func short(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
