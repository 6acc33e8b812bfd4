package server

import (
	"net/http"
)

const (
	orgPath   = "/api/v0/organizations/{org}"
	pipePath  = orgPath + "/pipelines/{pipeline}"
	buildPath = pipePath + "/builds/{number}"
	// AgentPrefix is where the agent protocol lives: agent tokens only.
	AgentPrefix = "/api/v0/agent"
)

// routes is the whole API, one handler per operation (operationIds of cli-subset.openapi.json).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	small := func() int64 { return maxSmallBody }

	mux.HandleFunc("GET /api/v0/ping", s.ping)
	mux.Handle("POST "+orgPath+"/pipelines", s.user(body(s, small, s.createPipeline)))
	mux.Handle("GET "+pipePath, s.user(s.getPipeline))
	mux.Handle("POST "+pipePath+"/builds", s.user(body(s, s.maxBuildBody, s.createBuild)))
	mux.Handle("GET "+pipePath+"/builds", s.user(s.listBuilds))
	mux.Handle("POST "+orgPath+"/builds", s.user(body(s, s.maxBuildBody, s.createBuildBySource)))
	mux.Handle("GET "+buildPath, s.user(s.getBuild))
	mux.Handle("PUT "+buildPath+"/cancel", s.user(s.cancelBuild))
	mux.Handle("GET "+buildPath+"/jobs", s.user(s.listJobs))
	mux.Handle("GET "+buildPath+"/jobs/{job_id}", s.user(s.getJob))
	mux.Handle("GET "+buildPath+"/log-token", s.user(s.getBuildLogToken))
	mux.Handle("GET "+buildPath+"/events", s.user(s.buildEvents))
	mux.Handle("GET "+buildPath+"/artifacts", s.user(http.HandlerFunc(s.getBuildArtifacts)))
	mux.Handle("GET "+buildPath+"/artifacts/{digest}", s.user(http.HandlerFunc(s.getBuildArtifact)))
	// The log stream authenticates by its build-scoped token, not by a bearer token.
	mux.HandleFunc("GET /v0/jobs/{job_id}/logs", s.jobLogs)

	// The agent protocol (agent.go); every route under the prefix takes agent tokens only.
	mux.Handle("GET "+AgentPrefix+"/ping", s.agent(s.agentPing))
	s.agentRoutes(mux)
	mux.Handle(AgentPrefix+"/{rest...}", s.agent(s.notFound))

	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}

	mux.HandleFunc("/", s.notFound)
	return s.outer(mux)
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// agentPing answers an agent that its token works: the first call an agent makes.
func (s *Server) agentPing(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "org": authOf(r).Org.Slug})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, notFound("route_not_found", "no route "+r.Method+" "+r.URL.Path))
}
