package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/store"
)

// docBase is where an error's doc_url points (the code is the anchor).
const docBase = "https://github.com/hmci/hm/blob/main/docs/errors.md#"

// apiError is every error a handler answers; writeError is the only place that writes one.
type apiError struct {
	Status  int
	Type    string // stable class: invalid_request, authentication, not_found, conflict, unprocessable, internal
	Code    string // catalog code, e.g. build_not_found
	Message string
	// Flat also puts code and message at the top level: the log stream contract reads
	// {"code","message"} there, and the envelope stays for everything else.
	Flat bool
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request", Code: code, Message: msg}
}

func unauthorized(msg string) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Type: "authentication", Code: "unauthorized", Message: msg}
}

func notFound(code, msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "not_found", Code: code, Message: msg}
}

func unprocessable(code, msg string) *apiError {
	return &apiError{Status: http.StatusUnprocessableEntity, Type: "unprocessable", Code: code, Message: msg}
}

// fromStore maps a store error: a missing entity is a 404 of its kind (also the tenancy
// answer), a conflict 409, a canceled request nothing useful, anything else 500 without its
// cause (which is logged, never sent: it can name files and queries).
func fromStore(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var nf *store.NotFoundError
	if errors.As(err, &nf) {
		return notFound(nf.Code(), nf.Kind+" not found")
	}
	if store.IsConflict(err) {
		return &apiError{Status: http.StatusConflict, Type: "conflict", Code: "conflict", Message: err.Error()}
	}
	if errors.Is(err, errs.ErrCanceled) {
		return &apiError{Status: http.StatusServiceUnavailable, Type: "unavailable", Code: "canceled", Message: "the request was canceled"}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "internal", Code: "internal", Message: "internal server error"}
}

type envelope struct {
	Error envelopeBody `json:"error"`
	// The log stream contract's flat fields (apiError.Flat).
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

type envelopeBody struct {
	Type      string `json:"type"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	DocURL    string `json:"doc_url"`
	RequestID string `json:"request_id"`
}

// writeError writes err as the Harmont error envelope. Internal causes go to the log with the
// request id, which the client sees.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := fromStore(err)
	id := requestID(r)
	if ae.Status >= 500 {
		s.cfg.Logger.Error("request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err.Error())
	}
	env := envelope{Error: envelopeBody{Type: ae.Type, Code: ae.Code, Message: ae.Message, DocURL: docBase + ae.Code, RequestID: id}}
	if ae.Flat {
		env.Code, env.Message = ae.Code, ae.Message
	}
	writeJSON(w, ae.Status, env)
}

// writeJSON writes v with status. Never compressed (remote.md): no Content-Encoding, ever.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"type":"internal","code":"internal","message":"encoding the response failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
