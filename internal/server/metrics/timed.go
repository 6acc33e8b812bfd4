package metrics

// The timed methods of the instrumented store: each one observes its latency under its name
// and calls the driver. The few that also count something are in store.go.

import (
	"context"
	"time"

	"github.com/hmci/hm/internal/store"
)

func (s *instrumented) CreateOrg(ctx context.Context, a1 string, a2 string) (store.Org, error) {
	defer s.m.timed("CreateOrg")()
	return s.Store.CreateOrg(ctx, a1, a2)
}

func (s *instrumented) GetOrg(ctx context.Context, a1 string) (store.Org, error) {
	defer s.m.timed("GetOrg")()
	return s.Store.GetOrg(ctx, a1)
}

func (s *instrumented) GetOrgBySlug(ctx context.Context, a1 string) (store.Org, error) {
	defer s.m.timed("GetOrgBySlug")()
	return s.Store.GetOrgBySlug(ctx, a1)
}

func (s *instrumented) CreateToken(ctx context.Context, a1 store.Token) (store.Token, error) {
	defer s.m.timed("CreateToken")()
	return s.Store.CreateToken(ctx, a1)
}

func (s *instrumented) LookupToken(ctx context.Context, a1 store.TokenHash, a2 time.Time) (store.Token, error) {
	defer s.m.timed("LookupToken")()
	return s.Store.LookupToken(ctx, a1, a2)
}

func (s *instrumented) ListTokens(ctx context.Context, a1 string) ([]store.Token, error) {
	defer s.m.timed("ListTokens")()
	return s.Store.ListTokens(ctx, a1)
}

func (s *instrumented) DeleteToken(ctx context.Context, a1 string) error {
	defer s.m.timed("DeleteToken")()
	return s.Store.DeleteToken(ctx, a1)
}

func (s *instrumented) CreatePipeline(ctx context.Context, a1 store.Pipeline) (store.Pipeline, error) {
	defer s.m.timed("CreatePipeline")()
	return s.Store.CreatePipeline(ctx, a1)
}

func (s *instrumented) GetPipeline(ctx context.Context, a1 string, a2 string) (store.Pipeline, error) {
	defer s.m.timed("GetPipeline")()
	return s.Store.GetPipeline(ctx, a1, a2)
}

func (s *instrumented) ListPipelines(ctx context.Context, a1 string) ([]store.Pipeline, error) {
	defer s.m.timed("ListPipelines")()
	return s.Store.ListPipelines(ctx, a1)
}

func (s *instrumented) CreateBuild(ctx context.Context, a1 store.NewBuild) (store.Build, []store.Job, error) {
	defer s.m.timed("CreateBuild")()
	return s.Store.CreateBuild(ctx, a1)
}

func (s *instrumented) GetBuild(ctx context.Context, a1 string) (store.Build, error) {
	defer s.m.timed("GetBuild")()
	return s.Store.GetBuild(ctx, a1)
}

func (s *instrumented) GetBuildByNumber(ctx context.Context, a1 string, a2 int64) (store.Build, error) {
	defer s.m.timed("GetBuildByNumber")()
	return s.Store.GetBuildByNumber(ctx, a1, a2)
}

func (s *instrumented) ListBuilds(ctx context.Context, a1 string, a2 int64, a3 int) ([]store.Build, error) {
	defer s.m.timed("ListBuilds")()
	return s.Store.ListBuilds(ctx, a1, a2, a3)
}

func (s *instrumented) ListUnfinishedBuilds(ctx context.Context) ([]store.Build, error) {
	defer s.m.timed("ListUnfinishedBuilds")()
	return s.Store.ListUnfinishedBuilds(ctx)
}

func (s *instrumented) TransitionBuild(ctx context.Context, a1 string, a2 []store.BuildState, a3 store.BuildState, a4 store.BuildUpdate) (store.Build, error) {
	defer s.m.timed("TransitionBuild")()
	return s.Store.TransitionBuild(ctx, a1, a2, a3, a4)
}

func (s *instrumented) CancelBuild(ctx context.Context, a1 string, a2 time.Time) (store.Build, error) {
	defer s.m.timed("CancelBuild")()
	return s.Store.CancelBuild(ctx, a1, a2)
}

func (s *instrumented) GetJob(ctx context.Context, a1 string) (store.Job, error) {
	defer s.m.timed("GetJob")()
	return s.Store.GetJob(ctx, a1)
}

func (s *instrumented) ListJobs(ctx context.Context, a1 string) ([]store.Job, error) {
	defer s.m.timed("ListJobs")()
	return s.Store.ListJobs(ctx, a1)
}

func (s *instrumented) ReleaseJob(ctx context.Context, a1 string, a2 time.Time) (store.Job, error) {
	defer s.m.timed("ReleaseJob")()
	return s.Store.ReleaseJob(ctx, a1, a2)
}

func (s *instrumented) PassCached(ctx context.Context, a1 string, a2 string, a3 string, a4 []byte, a5 time.Time) (store.Job, error) {
	defer s.m.timed("PassCached")()
	return s.Store.PassCached(ctx, a1, a2, a3, a4, a5)
}

func (s *instrumented) SkipJob(ctx context.Context, a1 string, a2 string, a3 time.Time) (store.Job, error) {
	defer s.m.timed("SkipJob")()
	return s.Store.SkipJob(ctx, a1, a2, a3)
}

func (s *instrumented) CancelJob(ctx context.Context, a1 string, a2 time.Time) (store.Job, error) {
	defer s.m.timed("CancelJob")()
	return s.Store.CancelJob(ctx, a1, a2)
}

func (s *instrumented) TimeOutJob(ctx context.Context, a1 string, a2 time.Time) (store.Job, error) {
	defer s.m.timed("TimeOutJob")()
	return s.Store.TimeOutJob(ctx, a1, a2)
}

func (s *instrumented) NoteCacheMiss(ctx context.Context, a1 string, a2 string) (store.Job, error) {
	defer s.m.timed("NoteCacheMiss")()
	return s.Store.NoteCacheMiss(ctx, a1, a2)
}

func (s *instrumented) RetryJob(ctx context.Context, a1 string, a2 int, a3 time.Time) (store.Job, error) {
	defer s.m.timed("RetryJob")()
	return s.Store.RetryJob(ctx, a1, a2, a3)
}

func (s *instrumented) ListJobTries(ctx context.Context, a1 string) ([]store.JobTry, error) {
	defer s.m.timed("ListJobTries")()
	return s.Store.ListJobTries(ctx, a1)
}

func (s *instrumented) StartJob(ctx context.Context, a1 string, a2 int, a3 time.Time) (store.Job, error) {
	defer s.m.timed("StartJob")()
	return s.Store.StartJob(ctx, a1, a2, a3)
}

func (s *instrumented) Heartbeat(ctx context.Context, a1 string, a2 int, a3 time.Time, a4 time.Duration) (store.Job, error) {
	defer s.m.timed("Heartbeat")()
	return s.Store.Heartbeat(ctx, a1, a2, a3, a4)
}

func (s *instrumented) AppendEvents(ctx context.Context, a1 string, a2 ...[]byte) ([]int64, error) {
	defer s.m.timed("AppendEvents")()
	return s.Store.AppendEvents(ctx, a1, a2...)
}

func (s *instrumented) ListEvents(ctx context.Context, a1 string, a2 int64, a3 int) ([]store.Event, error) {
	defer s.m.timed("ListEvents")()
	return s.Store.ListEvents(ctx, a1, a2, a3)
}

func (s *instrumented) AppendLogs(ctx context.Context, a1 string, a2 int, a3 []store.LogChunk) (int64, error) {
	defer s.m.timed("AppendLogs")()
	return s.Store.AppendLogs(ctx, a1, a2, a3)
}

func (s *instrumented) ListLogs(ctx context.Context, a1 string, a2 int, a3 int64, a4 int) ([]store.LogChunk, error) {
	defer s.m.timed("ListLogs")()
	return s.Store.ListLogs(ctx, a1, a2, a3, a4)
}

func (s *instrumented) PutBlob(ctx context.Context, a1 store.Blob) (store.Blob, error) {
	defer s.m.timed("PutBlob")()
	return s.Store.PutBlob(ctx, a1)
}

func (s *instrumented) GetBlob(ctx context.Context, a1 string) (store.Blob, error) {
	defer s.m.timed("GetBlob")()
	return s.Store.GetBlob(ctx, a1)
}

func (s *instrumented) GetOrgBlob(ctx context.Context, a1 string, a2 string) (store.Blob, error) {
	defer s.m.timed("GetOrgBlob")()
	return s.Store.GetOrgBlob(ctx, a1, a2)
}

func (s *instrumented) UpsertAgent(ctx context.Context, a1 store.Agent, a2 time.Time) (store.Agent, error) {
	defer s.m.timed("UpsertAgent")()
	return s.Store.UpsertAgent(ctx, a1, a2)
}

func (s *instrumented) GetAgent(ctx context.Context, a1 string) (store.Agent, error) {
	defer s.m.timed("GetAgent")()
	return s.Store.GetAgent(ctx, a1)
}

func (s *instrumented) ListAgents(ctx context.Context) ([]store.Agent, error) {
	defer s.m.timed("ListAgents")()
	return s.Store.ListAgents(ctx)
}

func (s *instrumented) TouchAgent(ctx context.Context, a1 string, a2 time.Time) error {
	defer s.m.timed("TouchAgent")()
	return s.Store.TouchAgent(ctx, a1, a2)
}

func (s *instrumented) PutCacheEntry(ctx context.Context, a1 store.CacheEntry) (store.CacheEntry, error) {
	defer s.m.timed("PutCacheEntry")()
	return s.Store.PutCacheEntry(ctx, a1)
}

func (s *instrumented) LookupCache(ctx context.Context, a1 string, a2 string, a3 string, a4 time.Time) (store.CacheEntry, error) {
	defer s.m.timed("LookupCache")()
	return s.Store.LookupCache(ctx, a1, a2, a3, a4)
}

func (s *instrumented) DeleteCacheEntry(ctx context.Context, a1 string, a2 string, a3 string) error {
	defer s.m.timed("DeleteCacheEntry")()
	return s.Store.DeleteCacheEntry(ctx, a1, a2, a3)
}

func (s *instrumented) LastCacheEntry(ctx context.Context, a1 string, a2 string, a3 string) (store.CacheEntry, error) {
	defer s.m.timed("LastCacheEntry")()
	return s.Store.LastCacheEntry(ctx, a1, a2, a3)
}

func (s *instrumented) DeleteAgentCache(ctx context.Context, a1 string) (int, error) {
	defer s.m.timed("DeleteAgentCache")()
	return s.Store.DeleteAgentCache(ctx, a1)
}

func (s *instrumented) AcquireBuildLease(ctx context.Context, a1 string, a2 string, a3 time.Time, a4 time.Duration) (int64, error) {
	defer s.m.timed("AcquireBuildLease")()
	return s.Store.AcquireBuildLease(ctx, a1, a2, a3, a4)
}

func (s *instrumented) ReleaseBuildLease(ctx context.Context, a1 string, a2 string, a3 int64) error {
	defer s.m.timed("ReleaseBuildLease")()
	return s.Store.ReleaseBuildLease(ctx, a1, a2, a3)
}

func (s *instrumented) AppendEventsFenced(ctx context.Context, a1 string, a2 int64, a3 ...[]byte) ([]int64, error) {
	defer s.m.timed("AppendEventsFenced")()
	return s.Store.AppendEventsFenced(ctx, a1, a2, a3...)
}

func (s *instrumented) QueueSnapshotRemoval(ctx context.Context, a1 string, a2 string, a3 time.Time) error {
	defer s.m.timed("QueueSnapshotRemoval")()
	return s.Store.QueueSnapshotRemoval(ctx, a1, a2, a3)
}

func (s *instrumented) ListSnapshotRemovals(ctx context.Context, a1 string, a2 int) ([]string, error) {
	defer s.m.timed("ListSnapshotRemovals")()
	return s.Store.ListSnapshotRemovals(ctx, a1, a2)
}

func (s *instrumented) AckSnapshotRemovals(ctx context.Context, a1 string, a2 []string) error {
	defer s.m.timed("AckSnapshotRemovals")()
	return s.Store.AckSnapshotRemovals(ctx, a1, a2)
}

func (s *instrumented) JobCounts(ctx context.Context) (map[store.JobState]int64, error) {
	defer s.m.timed("JobCounts")()
	return s.Store.JobCounts(ctx)
}

func (s *instrumented) GetBuildSecrets(ctx context.Context, a1 string) ([]byte, error) {
	defer s.m.timed("GetBuildSecrets")()
	return s.Store.GetBuildSecrets(ctx, a1)
}

func (s *instrumented) DeleteBuildSecrets(ctx context.Context, a1 string) error {
	defer s.m.timed("DeleteBuildSecrets")()
	return s.Store.DeleteBuildSecrets(ctx, a1)
}

func (s *instrumented) DeleteEndedBuildSecrets(ctx context.Context) (int, error) {
	defer s.m.timed("DeleteEndedBuildSecrets")()
	return s.Store.DeleteEndedBuildSecrets(ctx)
}

func (s *instrumented) PruneBuilds(ctx context.Context, a1 time.Time, a2 int) (int, error) {
	defer s.m.timed("PruneBuilds")()
	return s.Store.PruneBuilds(ctx, a1, a2)
}

func (s *instrumented) BlobRefs(ctx context.Context) (map[string]bool, error) {
	defer s.m.timed("BlobRefs")()
	return s.Store.BlobRefs(ctx)
}

func (s *instrumented) SharedKey(ctx context.Context, a1 string, a2 []byte) ([]byte, error) {
	defer s.m.timed("SharedKey")()
	return s.Store.SharedKey(ctx, a1, a2)
}
