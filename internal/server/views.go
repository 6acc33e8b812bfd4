package server

import (
	"net/url"
	"strings"
	"time"

	"github.com/hmci/hm/internal/store"
)

// The response bodies, shaped as cli-subset.openapi.json's schemas. Nullable fields are
// pointers: present with null rather than absent, as the Harmont server sends them.

type pipelineView struct {
	Slug          string  `json:"slug"`
	Name          string  `json:"name"`
	Repository    string  `json:"repository"`
	RepoName      *string `json:"repo_name"`
	DefaultBranch string  `json:"default_branch"`
	Description   *string `json:"description"`
	Visibility    string  `json:"visibility"`
	AllowManual   bool    `json:"allow_manual"`
	CreatedAt     string  `json:"created_at"`
}

type buildView struct {
	// ID is hm's addition: the run id of the build's events (build_start's run_id).
	ID           string  `json:"id"`
	Number       int64   `json:"number"`
	State        string  `json:"state"`
	PipelineSlug string  `json:"pipeline_slug"`
	Branch       *string `json:"branch"`
	Commit       *string `json:"commit"`
	Message      *string `json:"message"`
	Source       *string `json:"source"`
	ErrorCode    *string `json:"error_code"`
	ErrorMessage *string `json:"error_message"`
	CreatedAt    string  `json:"created_at"`
	ScheduledAt  *string `json:"scheduled_at"`
	StartedAt    *string `json:"started_at"`
	FinishedAt   *string `json:"finished_at"`
}

type buildList struct {
	Data       []buildView `json:"data"`
	NextCursor *string     `json:"next_cursor"`
}

type jobView struct {
	ID             string          `json:"id"`
	State          string          `json:"state"`
	StepKey        *string         `json:"step_key"`
	Name           *string         `json:"name"`
	Command        *string         `json:"command"`
	DependsOn      []string        `json:"depends_on"`
	ExitCode       *int            `json:"exit_code"`
	ErrorCode      *string         `json:"error_code"`
	ErrorMessage   *string         `json:"error_message"`
	SoftFailed     bool            `json:"soft_failed"`
	RetryPolicy    *map[string]any `json:"retry_policy"`
	SoftFailPolicy *map[string]any `json:"soft_fail_policy"`
	CreatedAt      string          `json:"created_at"`
	StartedAt      *string         `json:"started_at"`
	FinishedAt     *string         `json:"finished_at"`
}

type jobList struct {
	Data []jobView `json:"data"`
}

type logTokenView struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := stamp(t)
	return &s
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func newPipelineView(p store.Pipeline) pipelineView {
	return pipelineView{Slug: p.Slug, Name: p.Name, Repository: p.Repository, RepoName: optString(repoName(p.Repository)),
		DefaultBranch: p.DefaultBranch, Description: optString(p.Description), Visibility: "private", AllowManual: true,
		CreatedAt: stamp(p.CreatedAt)}
}

// repoName is "owner/repo" of a clone URL (https://host/o/r.git, git@host:o/r.git) or of an
// "owner/repo" label itself; "" when it has no such shape.
func repoName(repo string) string {
	r := strings.TrimSuffix(strings.TrimSuffix(repo, "/"), ".git")
	if u, err := url.Parse(r); err == nil && u.Host != "" {
		r = strings.TrimPrefix(u.Path, "/")
	} else if at := strings.Index(r, "@"); at >= 0 {
		if c := strings.Index(r[at:], ":"); c >= 0 {
			r = r[at+c+1:]
		}
	}
	parts := strings.Split(r, "/")
	if len(parts) < 2 || parts[len(parts)-2] == "" || parts[len(parts)-1] == "" {
		return ""
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}

func newBuildView(b store.Build, pipelineSlug string) buildView {
	return buildView{ID: b.ID, Number: b.Number, State: string(b.State), PipelineSlug: pipelineSlug,
		Branch: optString(b.Branch), Commit: optString(b.Commit), Message: optString(b.Message), Source: optString(b.Source),
		ErrorCode: optString(b.ErrorCode), ErrorMessage: optString(b.ErrorMessage),
		CreatedAt: stamp(b.CreatedAt), ScheduledAt: optTime(b.CreatedAt), StartedAt: optTime(b.StartedAt), FinishedAt: optTime(b.FinishedAt)}
}

func newJobView(j store.Job) jobView {
	deps := j.DependsOn
	if deps == nil {
		deps = []string{}
	}
	return jobView{ID: j.ID, State: string(j.State), StepKey: optString(j.StepKey), Name: optString(j.Name),
		Command: optString(j.Command), DependsOn: deps, ExitCode: j.ExitCode,
		ErrorCode: optString(j.ErrorCode), ErrorMessage: optString(j.ErrorMessage),
		CreatedAt: stamp(j.CreatedAt), StartedAt: optTime(j.StartedAt), FinishedAt: optTime(j.FinishedAt)}
}
