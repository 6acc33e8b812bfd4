package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// StatusError is a non-2xx answer of the server, with the code of its error envelope.
type StatusError struct {
	Status  int
	Code    string
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrDropped says the server no longer gives this agent the work (409: an older attempt; 404:
// the job is gone): stop it without finishing.
var ErrDropped = errors.New("agent: the work belongs to another attempt")

// ErrAuth says the server refused the token (401): fatal for the agent.
var ErrAuth = errors.New("agent: the server refused the agent token")

// action is what to do after a failed call.
type action int

const (
	retry action = iota // transient: retry with backoff
	drop                // the work is not ours any more
	fatal               // retrying cannot help
)

// classify is the agent's one retry policy. Network errors, 5xx (a server draining or
// restarting) and 429 are retried with backoff, which every call's idempotency or fencing
// makes safe; 409 and 404 drop the work; 401 and 403 are fatal, and so is any other 4xx (a
// request the server will never accept) and the agent's own context ending.
func classify(ctx context.Context, err error) action {
	if ctx.Err() != nil {
		return fatal
	}
	var se *StatusError
	if !errors.As(err, &se) {
		return retry // connection refused or reset, timeout, EOF mid-body
	}
	switch {
	case se.Status == http.StatusConflict || se.Status == http.StatusNotFound:
		return drop
	case se.Status == http.StatusTooManyRequests || se.Status >= 500:
		return retry
	}
	return fatal
}

// client calls the server. Every call is one HTTP request bounded by a timeout; call repeats
// it as classify says until it succeeds, ctx ends, or the error is not transient.
type client struct {
	base  string
	token string
	hc    *http.Client
	// timeout bounds one request (a claim adds its long poll to it).
	timeout time.Duration
	// backoff bounds, and how long a transient failure is retried before giving up (0: until ctx).
	minBackoff, maxBackoff time.Duration
}

// once makes one request; out is decoded from a 200 answer. 204 returns (false, nil).
func (c *client) once(ctx context.Context, method, path string, in, out any, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	ctype, length := "application/json", int64(-1)
	switch in := in.(type) {
	case nil:
	case rawBody:
		rc, err := in.open()
		if err != nil {
			return false, err
		}
		defer rc.Close()
		body, ctype, length = rc, "application/octet-stream", in.size
	default:
		b, err := marshal(in)
		if err != nil {
			return false, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return false, err
	}
	if length >= 0 {
		req.ContentLength = length
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return false, nil
	}
	if resp.StatusCode/100 != 2 {
		var env struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = json.Unmarshal(b, &env)
		return false, &StatusError{Status: resp.StatusCode, Code: env.Error.Code, Message: env.Error.Message}
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return true, err
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return true, err
	}
	return true, json.NewDecoder(resp.Body).Decode(out)
}

// call is once, retried per classify; its error wraps ErrDropped, ErrAuth or the last cause.
// reset, when not nil, runs before each retry (an io.Writer out starts over).
func (c *client) call(ctx context.Context, method, path string, in, out any, extra time.Duration, reset func()) (bool, error) {
	backoff := c.minBackoff
	for {
		ok, err := c.once(ctx, method, path, in, out, c.timeout+extra)
		if err == nil {
			return ok, nil
		}
		switch classify(ctx, err) {
		case drop:
			return false, fmt.Errorf("%w: %w", ErrDropped, err)
		case fatal:
			var se *StatusError
			if errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
				return false, fmt.Errorf("%w: %w", ErrAuth, err)
			}
			if ctx.Err() != nil {
				return false, fmt.Errorf("%w: %w", errs.ErrCanceled, context.Cause(ctx))
			}
			return false, fmt.Errorf("%w: %s %s: %w", errs.ErrInfra, method, pathOnly(path), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, fmt.Errorf("%w: %w (last error: %w)", errs.ErrCanceled, context.Cause(ctx), err)
		case <-t.C:
		}
		backoff = min(backoff*2, c.maxBackoff)
		if reset != nil {
			reset()
		}
	}
}

func pathOnly(p string) string { before, _, _ := strings.Cut(p, "?"); return before }

// marshal is json.Marshal, through a body's own writer of the same bytes when it has one
// (agentproto.Logs: a big log is a call per 1000 lines).
func marshal(v any) ([]byte, error) {
	if w, ok := v.(interface{ AppendWire([]byte) ([]byte, bool) }); ok {
		if b, ok := w.AppendWire(nil); ok {
			return b, nil
		}
	}
	return json.Marshal(v)
}
