package cli

import (
	"errors"
	"net/url"
	"strings"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/execution/remote"
)

// isRemote says the build goes to an hm server (`cloud` is the Harmont CLI's name for it).
func isRemote(backend string) bool { return backend == "remote" || backend == "cloud" }

// remoteBackend is the remote execution backend of the settings (spec/cli.md § Remote):
// server from --server / HM_API_URL / [remote] server, token from --token / HM_API_TOKEN, org
// from --org / HM_ORG / [remote] org.
func remoteBackend(s settings, f *runFlags) (*remote.Backend, error) {
	r := s.Remote
	if r.Server == "" {
		return nil, usage("pass --server URL, or set HM_API_URL or `[remote] server` in .hm/config.toml",
			"the remote backend needs the hm server's URL")
	}
	u, err := url.Parse(r.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usage("give --server an http:// or https:// URL, e.g. http://127.0.0.1:8080",
			"invalid server URL %q", r.Server)
	}
	if r.Org == "" {
		return nil, usage("pass --org ORG, or set HM_ORG or `[remote] org` in .hm/config.toml",
			"the remote backend needs the organization to build in")
	}
	// No token is sent as none: the server's 401 (exit 3) says what to do.
	return &remote.Backend{Server: r.Server, Token: r.Token, Org: r.Org, Branch: f.branch, Message: f.message}, nil
}

// remoteFix says what to do about a failed call to the server.
func remoteFix(e *errs.RemoteError) string {
	switch {
	case e.Status == 0:
		return "check --server (or HM_API_URL, `[remote] server`) and that `hm server` runs there and is reachable from here"
	case errors.Is(e.Class, errs.ErrAuth):
		return "set HM_API_TOKEN to a current API token of the org (`hm server token create --org ORG` on the server prints one)"
	case e.APICode == "organization_not_found":
		return "check --org (or HM_ORG, `[remote] org`): the server has no such organization, or the token is another org's"
	case e.APICode == "pipeline_not_found", e.APICode == "build_not_found":
		return "check --org and the pipeline's name; the token may belong to another organization"
	case e.APICode == "build_plan_rejected":
		return "fix the pipeline; `hm render` prints the IR that was submitted"
	case strings.HasPrefix(e.APICode, "source_"):
		return "make the source smaller (.gitignore what the build does not need) or raise the server's max source size"
	case errors.Is(e.Class, errs.ErrUnavailable) && e.RequestID != "":
		return "retry once the server answers again; its log has request " + e.RequestID
	case errors.Is(e.Class, errs.ErrUnavailable):
		return "retry once the server answers again"
	}
	return ""
}
