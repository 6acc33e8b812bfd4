package remote

import (
	"context"
	"net/http"

	"github.com/hmci/hm/internal/errs"
)

// Why a step could not run: its chain_failed says it in words; its job says it with a code
// (error_code), which is what lets the CLI say what to do, as it does for a local build's
// first infrastructure failure. Read once the build ended, only when a step could not run.

type jobsPage struct {
	Data []struct {
		StepKey      string  `json:"step_key"`
		ErrorCode    *string `json:"error_code"`
		ErrorMessage *string `json:"error_message"`
	} `json:"data"`
}

// stepFailure sets the outcome's error to the job of h.infraStep's, when the build's stream
// reported a step that could not run and nothing else failed the watch. A failed listJobs
// costs only the advice: the events said what happened.
func (h *handle) stepFailure(ctx context.Context) {
	if h.infraStep == "" || h.out.Err != nil {
		return
	}
	var page jobsPage
	if h.c.call(ctx, "listJobs", http.MethodGet, h.buildPath+"/jobs", nil, &page) != nil {
		return
	}
	for _, j := range page.Data {
		if j.StepKey == h.infraStep && j.ErrorCode != nil && *j.ErrorCode != "" {
			msg := ""
			if j.ErrorMessage != nil {
				msg = *j.ErrorMessage
			}
			h.out.Err = &errs.RemoteStepError{Step: j.StepKey, JobCode: *j.ErrorCode, Msg: msg}
			return
		}
	}
}
