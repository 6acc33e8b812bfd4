package server

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/plan"
	"github.com/hmci/hm/internal/secret"
	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/vm"
)

// The agent protocol (internal/agentproto): one handler per call, agent tokens only (the
// s.agent middleware). Each call's idempotency or fencing rule is documented at its message;
// the store makes every one of them a single fenced statement.

// DefaultAgentLeaseTTL is a claimed job's lease lifetime (Config.AgentLeaseTTL).
const DefaultAgentLeaseTTL = 30 * time.Second

func (s *Server) agentRoutes(mux *http.ServeMux) {
	small := func() int64 { return maxSmallBody }
	logs := func() int64 { return agentproto.MaxLogsBody }
	mux.Handle("POST "+agentproto.PathRegister, s.agent(body(s, small, s.agentRegister)))
	mux.Handle("POST "+agentproto.PathAlive, s.agent(body(s, small, s.agentAlive)))
	mux.Handle("POST "+agentproto.PathClaim, s.agent(body(s, small, s.agentClaim)))
	mux.Handle("POST "+agentproto.PathStart, s.agent(body(s, small, s.agentStart)))
	mux.Handle("POST "+agentproto.PathHeartbeat, s.agent(body(s, small, s.agentHeartbeat)))
	mux.Handle("POST "+agentproto.PathLogs, s.agent(body(s, logs, s.agentLogs)))
	mux.Handle("POST "+agentproto.PathFinish, s.agent(body(s, func() int64 { return agentproto.MaxFinishBody }, s.agentFinish)))
	mux.Handle("GET "+agentproto.PathSource, s.agent(s.agentSource))
	mux.Handle("PUT "+agentproto.PathArtifact, s.agent(http.HandlerFunc(s.agentArtifact)))
}

func (s *Server) agentRegister(w http.ResponseWriter, r *http.Request, req agentproto.Register) {
	if req.AgentID == "" || req.Backend == "" {
		s.writeError(w, r, badRequest("validation_failed", "agent_id and backend are required"))
		return
	}
	a, err := s.cfg.Store.UpsertAgent(r.Context(), store.Agent{ID: req.AgentID, OrgID: authOf(r).Org.ID, Name: req.Name, Labels: req.Labels, Backend: req.Backend, BootID: req.BootID}, s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, agentproto.Registered{AgentID: a.ID, Org: authOf(r).Org.Slug})
}

// ownAgent reads the agent the request names, refusing (404, the tenancy answer) one that
// another org's token registered: an agent id is bound to its org (store.UpsertAgent), so
// another tenant can neither heartbeat nor claim as it. An agent of no org must register.
func (s *Server) ownAgent(r *http.Request, id string) (store.Agent, error) {
	a, err := s.cfg.Store.GetAgent(r.Context(), id)
	if err == nil && a.OrgID != authOf(r).Org.ID {
		err = notFound("agent_not_found", "no agent "+quote(id)+" registered by this organization")
	}
	return a, err
}

func (s *Server) agentAlive(w http.ResponseWriter, r *http.Request, req agentproto.Alive) {
	if len(req.Removed) > agentproto.MaxRemovals {
		s.writeError(w, r, badRequest("validation_failed", "at most "+strconv.Itoa(agentproto.MaxRemovals)+" removed snapshots per call"))
		return
	}
	ctx := r.Context()
	if _, err := s.ownAgent(r, req.AgentID); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.cfg.Store.TouchAgent(ctx, req.AgentID, s.now()); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.cfg.Store.AckSnapshotRemovals(ctx, req.AgentID, req.Removed); err != nil {
		s.writeError(w, r, err)
		return
	}
	todo, err := s.cfg.Store.ListSnapshotRemovals(ctx, req.AgentID, agentproto.MaxRemovals)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if todo == nil {
		todo = []string{}
	}
	writeJSON(w, http.StatusOK, agentproto.AliveReply{Status: "ok", RemoveSnapshots: todo})
}

// agentClaim long-polls the store for a job (claimNext) until the wait: 200 with the job, 204
// for none.
func (s *Server) agentClaim(w http.ResponseWriter, r *http.Request, req agentproto.Claim) {
	wait := time.Duration(req.WaitSeconds) * time.Second
	if wait <= 0 || wait > agentproto.MaxClaimWait {
		wait = agentproto.MaxClaimWait
	}
	if len(req.Worker) > agentproto.MaxWorker {
		s.writeError(w, r, badRequest("validation_failed", "worker is longer than "+strconv.Itoa(agentproto.MaxWorker)+" bytes"))
		return
	}
	if _, err := s.ownAgent(r, req.AgentID); err != nil {
		s.writeError(w, r, err) // register first
		return
	}
	// A claim naming its worker gets back a job claimed for that worker whose reply was lost
	// (the store's ClaimJob), rather than a second one.
	j, ok, err := s.claimNext(r, store.Claim{AgentID: req.AgentID, Worker: req.Worker}, wait)
	switch {
	case err != nil:
		s.writeError(w, r, err)
	case ok:
		if job, err := s.claimed(r, j); err != nil {
			s.writeError(w, r, err)
		} else {
			writeJSON(w, http.StatusOK, job)
		}
	case r.Context().Err() == nil:
		w.WriteHeader(http.StatusNoContent)
	}
}

// claimNext claims a job for the agent: at once, then again whenever the store says a job of
// the org was released (store.Watcher), and every claimFallback (the larger of the poll
// interval and 1 s) as the fallback for a lost wake-up, until a job, the wait, the request's
// end or the server's drain (false: no job). c names the agent and whom the claim is for;
// the org, the time and the lease are filled in here.
func (s *Server) claimNext(r *http.Request, c store.Claim, wait time.Duration) (store.Job, bool, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	// Watching before the first claim: a release between that claim and the wait below
	// is not missed.
	released, unwatch := store.Watch(s.cfg.Store, store.JobsReleased(authOf(r).Org.ID))
	defer unwatch()
	fallback := max(s.cfg.PollInterval, time.Second)
	for {
		c.OrgID, c.Now, c.LeaseTTL = authOf(r).Org.ID, s.now(), s.cfg.AgentLeaseTTL
		j, ok, err := s.cfg.Store.ClaimJob(r.Context(), c)
		if err != nil || ok {
			return j, ok, err
		}
		t := time.NewTimer(fallback)
		select {
		case <-released:
			t.Stop()
		case <-t.C:
		case <-deadline.C:
			t.Stop()
			return store.Job{}, false, nil
		case <-r.Context().Done():
			t.Stop()
			return store.Job{}, false, nil
		case <-s.closing:
			t.Stop()
			return store.Job{}, false, nil
		}
	}
}

// claimed is what the agent needs to run a claimed job, read from the build's plan exactly as
// the scheduler would build the step's machine. A job the server cannot describe (its
// build's IR no longer loads) fails at once rather than being run wrong.
func (s *Server) claimed(r *http.Request, j store.Job) (agentproto.Job, error) {
	job, err := s.describe(r, j)
	if err != nil {
		_, ferr := s.cfg.Store.FinishJob(r.Context(), j.ID, j.Attempt, store.Finish{ExitCode: -1,
			ErrorCode: "job_invalid", ErrorMessage: err.Error(), Now: s.now()})
		return agentproto.Job{}, errors.Join(err, ferr)
	}
	s.keepJobBuild(j)
	return job, nil
}

func (s *Server) describe(r *http.Request, j store.Job) (agentproto.Job, error) {
	ctx := r.Context()
	sb, err := s.staticBuild(ctx, j.BuildID)
	if err != nil {
		return agentproto.Job{}, err
	}
	if sb.loadErr != nil {
		return agentproto.Job{}, sb.loadErr
	}
	b, pl, opts := sb.b, sb.plan, sb.opts
	i := slices.IndexFunc(pl.Steps, func(st plan.Step) bool { return st.Key == j.StepKey })
	if i < 0 {
		return agentproto.Job{}, errors.New("step " + quote(j.StepKey) + " is not in the build's plan")
	}
	ps := &pl.Steps[i]
	secrets, err := s.stepSecrets(ctx, b.ID, ps)
	if err != nil {
		return agentproto.Job{}, err
	}
	out := agentproto.Job{Secrets: secrets, JobID: j.ID, BuildID: b.ID, StepKey: j.StepKey, Attempt: j.Attempt,
		LeaseTTLMillis: s.cfg.AgentLeaseTTL.Milliseconds(), Command: ps.Cmd,
		// HM_ATTEMPT last, as the scheduler appends it locally: the attempt of the step's
		// retry policy, from 1.
		Env: append(append(append(slices.Clone(vm.BaseEnv), ps.Env...), opts.ExtraEnv...),
			"HM_ATTEMPT="+strconv.Itoa(max(j.PolicyAttempt, 1))),
		SourceDigest: b.SourceDigest, TimeoutSeconds: int(ps.Timeout / time.Second)}
	root := i
	for pl.Steps[root].Parent >= 0 {
		root = pl.Steps[root].Parent
	}
	base := pl.Steps[root].Image
	if to, ok := opts.MapImage[base]; ok {
		base = to
	}
	if ps.Parent >= 0 {
		p, err := s.cfg.Store.GetJob(ctx, j.ParentID)
		if err != nil {
			return agentproto.Job{}, err
		}
		out.ParentSnapshot = p.Snapshot
	} else {
		out.Image = base
	}
	key := opts.Keys[i]
	cached := key != "" && !opts.NoCache
	// A step with artifacts is committed, as locally: they are copied out of a snapshot.
	out.Artifacts = ps.Artifacts
	out.NeedsSnapshot = cached || len(ps.Children) > 0 || len(ps.Artifacts) > 0
	out.Ephemeral = !cached
	if cached {
		out.CacheKey, out.CacheScope = key, base
	}
	if len(ps.CacheDirs) > 0 {
		out.CacheDirs, out.CacheDirOrg, out.CacheDirPipeline = ps.CacheDirs, authOf(r).Org.Slug, b.PipelineID
	}
	return out, nil
}

// agentJob reads the job named by the path, refusing (404) one of another org's builds.
func (s *Server) agentJob(r *http.Request) (store.Job, error) {
	id := r.PathValue("job_id")
	j, err := s.cfg.Store.GetJob(r.Context(), id)
	if err != nil {
		return j, err
	}
	sb, err := s.staticBuild(r.Context(), j.BuildID)
	if err != nil {
		return j, err
	}
	if sb.b.OrgID != authOf(r).Org.ID {
		return j, notFound("job_not_found", "no job "+quote(id))
	}
	return j, nil
}

func stateOf(j store.Job) agentproto.State {
	st := agentproto.State{State: string(j.State), Attempt: j.Attempt}
	switch j.State {
	case store.JobCanceling:
		st.Stop = agentproto.StopCancel
	case store.JobTimingOut:
		st.Stop = agentproto.StopTimeout
	}
	return st
}

func (s *Server) agentStart(w http.ResponseWriter, r *http.Request, req agentproto.Fence) {
	id, _, err := s.jobBuild(r)
	var j store.Job
	if err == nil {
		j, err = s.cfg.Store.StartJob(r.Context(), id, req.Attempt, s.now())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stateOf(j))
}

func (s *Server) agentHeartbeat(w http.ResponseWriter, r *http.Request, req agentproto.Fence) {
	id, _, err := s.jobBuild(r)
	var j store.Job
	if err == nil {
		j, err = s.cfg.Store.Heartbeat(r.Context(), id, req.Attempt, s.now(), s.cfg.AgentLeaseTTL)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if j.AgentID != "" {
		_ = s.cfg.Store.TouchAgent(r.Context(), j.AgentID, s.now())
	}
	st := stateOf(j)
	st.LeaseTTLMillis = s.cfg.AgentLeaseTTL.Milliseconds()
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) agentLogs(w http.ResponseWriter, r *http.Request, req agentproto.Logs) {
	if len(req.Chunks) > agentproto.MaxLogChunks {
		s.writeError(w, r, badRequest("validation_failed", "at most "+strconv.Itoa(agentproto.MaxLogChunks)+" chunks per call"))
		return
	}
	j, err := s.agentJob(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if j.Attempt != req.Attempt {
		s.writeError(w, r, &store.ConflictError{Kind: "job", Key: j.ID, Reason: "attempt " + strconv.Itoa(req.Attempt) + " is not the current one",
			State: string(j.State), Attempt: j.Attempt})
		return
	}
	// The agent masked the chunks; an agent that did not (or a value split across chunks it
	// missed) is masked here before anything is stored.
	mask, err := s.masker(r.Context(), j.BuildID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	chunks := make([]store.LogChunk, len(req.Chunks))
	for i, c := range req.Chunks {
		chunks[i] = store.LogChunk{Seq: c.Seq, Stream: c.Stream, Content: mask.String(c.Content), TS: c.TS}
	}
	n, err := s.cfg.Store.AppendLogs(r.Context(), j.ID, req.Attempt, chunks)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, agentproto.LogsAck{Contiguous: n})
}

func (s *Server) agentFinish(w http.ResponseWriter, r *http.Request, req agentproto.Finish) {
	id, buildID, err := s.jobBuild(r)
	var j store.Job
	if err == nil && (req.ErrorMessage != "" || len(req.ArtifactWarnings) > 0) {
		var mask *secret.Masker
		if mask, err = s.masker(r.Context(), buildID); err == nil {
			req.ErrorMessage = mask.String(req.ErrorMessage)
			for i, w := range req.ArtifactWarnings {
				req.ArtifactWarnings[i] = mask.String(w)
			}
		}
	}
	if err == nil {
		f := store.Finish{ExitCode: req.ExitCode, Snapshot: req.Snapshot, ErrorCode: req.ErrorCode, ErrorMessage: req.ErrorMessage, Now: s.now()}
		if req.ExitCode == 0 && req.ErrorCode == "" {
			var aerr error
			if f.Artifacts, aerr = s.finishArtifacts(r.Context(), req.Artifacts, req.ArtifactWarnings); aerr != nil {
				// The step passed but its artifacts cannot be recorded: it fails, as one
				// whose copy failed locally.
				f = store.Finish{ExitCode: -1, ErrorCode: "artifacts_invalid", ErrorMessage: aerr.Error(), Now: f.Now}
			}
		}
		j, err = s.cfg.Store.FinishJob(r.Context(), id, req.Attempt, f)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	st := stateOf(j)
	if req.Next != nil {
		// The finish is recorded whatever happens to the claim: a claim that fails (an
		// agent of another org, a store error, a job that cannot be described) leaves Next
		// empty, and the agent claims on its own. The claim names this Finish: a repeat
		// (a lost reply) gets the job the first one claimed, never a second one.
		c := store.Claim{AgentID: req.Next.AgentID, Worker: req.Next.Worker, AfterJob: id, AfterAttempt: req.Attempt}
		if _, err := s.ownAgent(r, c.AgentID); err == nil && len(c.Worker) <= agentproto.MaxWorker {
			if nj, ok, err := s.claimNext(r, c, s.cfg.FinishNextWait); err == nil && ok {
				if job, err := s.claimed(r, nj); err == nil {
					st.Next = &job
				}
			}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// agentSource streams a source archive: only one that is the source of a build of the agent
// token's org (a digest of another tenant's build answers 404, like a missing one).
func (s *Server) agentSource(w http.ResponseWriter, r *http.Request) {
	d := r.PathValue("digest")
	if _, err := s.cfg.Store.GetOrgBlob(r.Context(), authOf(r).Org.ID, d); err != nil {
		s.writeError(w, r, err)
		return
	}
	rc, size, err := s.cfg.Blobs.OpenBlob(r.Context(), d)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	_, _ = io.Copy(w, rc)
}
