package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hmci/hm/internal/store"
	"github.com/hmci/hm/internal/store/postgres"
)

// readyTimeout bounds a /readyz probe of the store: a load balancer must get an answer, and a
// database slower than this is not one to send traffic to.
const readyTimeout = 2 * time.Second

// health serves the probes of a deployment (a load balancer, Kubernetes): /healthz says the
// process is up and serving HTTP; /readyz says it should get traffic: the store answers, is
// at this hm's schema, and the server is not draining. Everything else goes to next.
type health struct {
	st       store.Store
	next     http.Handler
	draining atomic.Bool
}

// Optional abilities of a store, probed by /readyz: a store without them is ready when a
// read answers.
type (
	pinger        interface{ Ping(context.Context) error }
	schemaChecker interface{ CheckSchema(context.Context) error }
)

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		probeAnswer(w, http.StatusOK, "ok")
	case "/readyz":
		code, status := h.ready(r.Context())
		probeAnswer(w, code, status)
	default:
		h.next.ServeHTTP(w, r)
	}
}

func (h *health) ready(ctx context.Context) (int, string) {
	if h.draining.Load() {
		return http.StatusServiceUnavailable, "draining"
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var err error
	if p, ok := h.st.(pinger); ok {
		err = p.Ping(ctx)
	} else {
		// A lookup that finds nothing is an answer of the database all the same.
		if _, err = h.st.GetOrg(ctx, ""); store.IsNotFound(err) {
			err = nil
		}
	}
	if err != nil {
		return http.StatusServiceUnavailable, "store_unreachable"
	}
	if c, ok := h.st.(schemaChecker); ok {
		// Behind this hm: its statements need what is missing. A schema ahead (a newer
		// replica of a rolling upgrade migrated it) is left to that upgrade to finish.
		var se *postgres.SchemaError
		if err := c.CheckSchema(ctx); errors.As(err, &se) && se.Have < se.Known {
			return http.StatusServiceUnavailable, "store_not_migrated"
		} else if err != nil && se == nil {
			return http.StatusServiceUnavailable, "store_unreachable"
		}
	}
	return http.StatusOK, "ready"
}

func probeAnswer(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"status": status})
}
