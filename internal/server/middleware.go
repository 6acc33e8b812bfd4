package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hmci/hm/internal/store"
)

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyAuth
)

// auth is who called: the token (never its secret) and its org.
type auth struct {
	Token store.Token
	Org   store.Org
}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(keyRequestID).(string)
	return id
}

func authOf(r *http.Request) auth {
	a, _ := r.Context().Value(keyAuth).(auth)
	return a
}

// outer wraps every route: the path cleaned of repeated slashes before the mux sees it (the
// mux would answer 301, which turns a client's POST into a GET), a request id, one log line.
func (s *Server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "//") {
			r2 := *r
			u := *r.URL
			u.Path = collapseSlashes(u.Path)
			u.RawPath = ""
			r2.URL = &u
			r = &r2
		}
		b := make([]byte, 8)
		rand.Read(b)
		id := hex.EncodeToString(b)
		r = r.WithContext(context.WithValue(r.Context(), keyRequestID, id))
		w.Header().Set("X-Request-Id", id)
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		// The path only: a log stream's query holds its token.
		s.cfg.Logger.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration_ms", time.Since(start).Milliseconds(), "request_id", id)
	})
}

func collapseSlashes(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// recorder keeps the status for the log line; Unwrap lets http.ResponseController flush.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// bearer looks the presented token up by its hash (cached for tokenTTL, tokencache.go) and
// checks its kind.
func (s *Server) bearer(r *http.Request, kind store.TokenKind) (auth, error) {
	h := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(secret) == "" {
		return auth{}, unauthorized("an Authorization: Bearer token is required")
	}
	hash, now := store.HashToken(strings.TrimSpace(secret)), s.now()
	a, ok := s.tokens.get(hash, now)
	if !ok {
		t, err := s.cfg.Store.LookupToken(r.Context(), hash, now)
		if store.IsNotFound(err) {
			return auth{}, unauthorized("the token is not valid")
		}
		if err != nil {
			return auth{}, err
		}
		org, err := s.cfg.Store.GetOrg(r.Context(), t.OrgID)
		if err != nil {
			return auth{}, err
		}
		a = auth{Token: t, Org: org}
		s.tokens.put(hash, a, now)
	}
	if t := a.Token; t.Kind != kind {
		if kind == store.TokenAgent {
			return auth{}, unauthorized("agent routes take an agent token, not a user token")
		}
		return auth{}, unauthorized("an agent token cannot call user routes")
	}
	return a, nil
}

// user authenticates a user token; on a route with {org} the org must be the token's, and
// any other answers 404 organization_not_found (whether it exists or not).
func (s *Server) user(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.bearer(r, store.TokenUser)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if slug := r.PathValue("org"); slug != "" && slug != a.Org.Slug {
			s.writeError(w, r, notFound("organization_not_found", "no organization "+quote(slug)))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyAuth, a)))
	})
}

// agent authenticates an agent token: the only kind the /api/v0/agent/ routes take.
func (s *Server) agent(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.bearer(r, store.TokenAgent)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyAuth, a)))
	})
}

// body decodes a JSON request body of at most limit bytes into a T before h runs: a larger
// body answers 413 request_too_large, malformed JSON 400 malformed_json; neither reaches h.
// A T with a fast path for its usual form (wireDecoder) is read by it first.
func body[T any](s *Server, limit func() int64, h func(http.ResponseWriter, *http.Request, T)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit())
		var v T
		b, err := io.ReadAll(r.Body)
		switch {
		case err != nil:
		case len(bytes.TrimSpace(b)) == 0:
			err = io.EOF
		default:
			if d, ok := any(&v).(wireDecoder); !ok || !d.DecodeWire(b) {
				err = json.Unmarshal(b, &v)
			}
		}
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.writeError(w, r, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request", Code: "request_too_large",
				Message: "the request body is larger than the server accepts"})
			return
		case errors.Is(err, io.EOF):
			s.writeError(w, r, badRequest("malformed_json", "the request body is empty; a JSON object is required"))
			return
		case err != nil:
			s.writeError(w, r, badRequest("malformed_json", "the request body is not a valid JSON object: "+err.Error()))
			return
		}
		h(w, r, v)
	}
}

// wireDecoder is a request type's fast path (agentproto.Logs): DecodeWire reads b and says
// true only when it holds what encoding/json would decode from b; false leaves it unchanged.
type wireDecoder interface {
	DecodeWire(b []byte) bool
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
