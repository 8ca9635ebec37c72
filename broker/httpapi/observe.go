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
// the status and the timing. Per request it allocates only its writer and
// the echoed headers: the handler chain, the label strings and the log
// fields are made once, or only when the line is written.
func (a *api) observe(route string, next http.Handler) http.Handler {
	h := a.recoverer(next)
	quiet := route == "GET /healthz" || route == "GET /readyz" || route == "GET /metrics"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		correlationID := r.Header.Get(hdrCorrelationID)
		requestID := r.Header.Get(hdrRequestID)
		if correlationID != "" {
			w.Header().Set(hdrCorrelationID, correlationID)
		}
		if requestID != "" {
			w.Header().Set(hdrRequestID, requestID)
		}
		ow := &observedWriter{ResponseWriter: w}
		h.ServeHTTP(ow, r)
		if ow.status == 0 {
			ow.status = http.StatusOK
		}
		d := time.Since(start)
		method := methodLabel(r.Method)
		a.Metrics.Requests.WithLabelValues(route, method, statusLabel(ow.status)).Inc()
		a.Metrics.Duration.WithLabelValues(route, method, outcomeLabel(ow.status)).Observe(d.Seconds())
		if quiet {
			return
		}
		if ce := a.Log.Check(zap.InfoLevel, "request"); ce != nil {
			ce.Write(zap.String("route", route), zap.String("method", r.Method), zap.Int("status", ow.status),
				zap.Duration("duration", d), zap.String("request_id", requestID),
				zap.String("correlation_id", correlationID),
				zap.String("role", string(ow.principal.Role)), zap.String("org", ow.principal.ODS))
		}
	})
}

// X-Correlation-ID and X-Request-ID in the canonical form that net/http
// keeps header names in: Get and Set with another form allocate its
// canonical form on every call.
const (
	hdrCorrelationID = "X-Correlation-Id"
	hdrRequestID     = "X-Request-Id"
)

// statusLabels and outcomeLabels are the label values of the statuses
// 100-599, made once: strconv and fmt would allocate them per request.
var statusLabels, outcomeLabels = func() (s, o [600]string) {
	for c := 100; c < 600; c++ {
		s[c], o[c] = strconv.Itoa(c), strconv.Itoa(c/100)+"xx"
	}
	return s, o
}()

// statusLabel is the code label of status, as strconv.Itoa writes it.
func statusLabel(status int) string {
	if status >= 100 && status < 600 {
		return statusLabels[status]
	}
	return strconv.Itoa(status)
}

// outcomeLabel is the outcome label of status: its class, "2xx".
func outcomeLabel(status int) string {
	if status >= 100 && status < 600 {
		return outcomeLabels[status]
	}
	return fmt.Sprintf("%dxx", status/100)
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
