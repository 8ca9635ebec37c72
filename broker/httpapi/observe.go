package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
)

// observedWriter records the status and the principal for the request log
// and the metrics.
type observedWriter struct {
	http.ResponseWriter
	status    int
	principal auth.Principal
}

func (o *observedWriter) WriteHeader(status int) {
	if o.status == 0 {
		o.status = status
	}
	o.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection's writer (e.g.
// to extend deadlines for a long upload).
func (o *observedWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

func (o *observedWriter) Write(b []byte) (int, error) {
	if o.status == 0 {
		o.status = http.StatusOK
	}
	return o.ResponseWriter.Write(b)
}

// observe counts and times every request by route, echoes X-Correlation-ID
// and X-Request-ID, and logs one line per request. The log line holds no
// patient identifiers: only the route, the caller's role and organisation,
// the status and the timing.
func (a *api) observe(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if id := r.Header.Get("X-Correlation-ID"); id != "" {
			w.Header().Set("X-Correlation-ID", id)
		}
		if id := r.Header.Get("X-Request-ID"); id != "" {
			w.Header().Set("X-Request-ID", id)
		}
		ow := &observedWriter{ResponseWriter: w}
		a.recoverer(next).ServeHTTP(ow, r)
		if ow.status == 0 {
			ow.status = http.StatusOK
		}
		d := time.Since(start)
		method := methodLabel(r.Method)
		a.Metrics.Requests.WithLabelValues(route, method, strconv.Itoa(ow.status)).Inc()
		a.Metrics.Duration.WithLabelValues(route, method, fmt.Sprintf("%dxx", ow.status/100)).Observe(d.Seconds())
		if route == "GET /healthz" || route == "GET /readyz" || route == "GET /metrics" {
			return
		}
		a.Log.Info("request",
			zap.String("route", route), zap.String("method", r.Method), zap.Int("status", ow.status),
			zap.Duration("duration", d), zap.String("request_id", r.Header.Get("X-Request-ID")),
			zap.String("correlation_id", r.Header.Get("X-Correlation-ID")),
			zap.String("role", string(ow.principal.Role)), zap.String("org", ow.principal.ODS))
	})
}

// methodLabel bounds the method label: anyone can send any method name.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// recoverer turns a panic into a 500 OperationOutcome (and a log line with
// the cause) instead of a dropped connection.
func (a *api) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.Log.Error("panic serving request", zap.String("path", r.URL.Path), zap.Any("panic", v), zap.Stack("stack"))
				answerError(w, fmt.Errorf("panic: %v", v)) // no kind: internal, 500
			}
		}()
		next.ServeHTTP(w, r)
	})
}
