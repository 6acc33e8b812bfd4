package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
)

// client speaks the Harmont API v0 subset of remote.md: bearer auth, JSON bodies, the error
// envelope. Every failure is an *errs.RemoteError, classified in one place (classify).
type client struct {
	base  string // the server's base URL without a trailing slash
	token string
	hc    *http.Client
}

// newTransport is HTTP/1.1 only and never asks for compression (remote.md's client rules:
// the server needs neither, and an SSE stream must not sit in a decompressor's buffer).
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute, // after the request is written: a big source is checked and stored first
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
}

// envelope is the Harmont error body.
type envelope struct {
	Error struct {
		Type      string `json:"type"`
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

// path joins escaped segments under /api/v0.
func apiPath(segs ...string) string {
	var b strings.Builder
	b.WriteString("/api/v0")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// request builds an authenticated request; body may be nil.
func (c *client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errs.ErrUsage, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// call sends one JSON request and decodes a 2xx answer into out (when not nil).
func (c *client) call(ctx context.Context, op, method, path string, body io.Reader, out any) error {
	req, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.classify(ctx, op, nil, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return c.classify(ctx, op, resp, nil)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return &errs.RemoteError{Server: c.base, Op: op, Status: resp.StatusCode, Class: errs.ErrUnavailable, Err: err,
			Msg: fmt.Sprintf("%s: the server at %s answered something that is not the API's JSON: %v", op, c.base, err)}
	}
	return nil
}

// callJSON is call with v encoded as the body.
func (c *client) callJSON(ctx context.Context, op, method, path string, v, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.call(ctx, op, method, path, bytes.NewReader(b), out)
}

// classify turns a failed call into an *errs.RemoteError: the one place that decides what a
// failure means (and so whether the stream watcher may retry it: see retryable).
func (c *client) classify(ctx context.Context, op string, resp *http.Response, cause error) error {
	if resp == nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w: %w", op, errs.ErrCanceled, ctx.Err())
		}
		return &errs.RemoteError{Server: c.base, Op: op, Class: errs.ErrUnavailable, Err: cause,
			Msg: fmt.Sprintf("the hm server at %s cannot be reached (%s): %v", c.base, op, unwrapURL(cause))}
	}
	e := &errs.RemoteError{Server: c.base, Op: op, Status: resp.StatusCode}
	var env envelope
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &env) == nil && env.Error.Code != "" {
		e.APICode, e.RequestID = env.Error.Code, env.Error.RequestID
		e.Msg = env.Error.Message
	} else {
		e.Msg = strings.TrimSpace(string(raw))
		if len(e.Msg) > 200 {
			e.Msg = e.Msg[:200] + "…"
		}
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Class = errs.ErrAuth
		e.Msg = fmt.Sprintf("the server at %s refused the token (%s): %s", c.base, op, e.Msg)
	case http.StatusNotFound:
		e.Class = errs.ErrNotFound
	case http.StatusUnprocessableEntity:
		e.Class = errs.ErrInvalid
		if e.APICode == "build_plan_rejected" {
			e.Msg = "the server rejected the pipeline: " + e.Msg
		}
	case http.StatusRequestEntityTooLarge:
		e.Class = errs.ErrUsage
	default:
		e.Class = errs.ErrUnavailable
		e.Msg = fmt.Sprintf("%s: the server at %s answered %d %s", op, c.base, resp.StatusCode, e.Msg)
	}
	if e.Msg == "" {
		e.Msg = op + ": " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	}
	return e
}

// unwrapURL drops net/http's "Get "URL": " prefix: the message names the server already.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// retryable says whether a failed stream request may be tried again: no answer, a dropped
// connection, or an answer of an overloaded or restarting server (5xx, 429). Auth, tenancy
// and validation answers are final.
func retryable(err error) bool {
	var re *errs.RemoteError
	if !errors.As(err, &re) {
		return !errors.Is(err, errs.ErrCanceled) // a broken read, an idle timeout
	}
	return re.Status == 0 || re.Status >= 500 || re.Status == http.StatusTooManyRequests
}
