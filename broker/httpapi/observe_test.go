package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRequestLogLine: every request but health, readiness and metrics
// logs one line with the route, the method, the status, the duration, the
// request and correlation IDs and the caller's role and organisation, and
// nothing else (no patient identifier); it is counted and timed by route,
// method and status; the IDs are echoed.
func TestRequestLogLine(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var m Metrics
	f := newFixture(t, func(d *Deps) { d.Log = zap.New(core); m = d.Metrics })

	w := f.do(req{method: http.MethodPost, path: "/FHIR/R4/$process-message", token: tokPrescriber, body: `{"resourceType":"Bundle"}`,
		header: map[string]string{"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}})
	if w.Code != http.StatusOK || w.Header().Get("X-Request-ID") != "req-1" || w.Header().Get("X-Correlation-ID") != "corr-1" {
		t.Fatalf("status %d, X-Request-ID %q, X-Correlation-ID %q", w.Code, w.Header().Get("X-Request-ID"), w.Header().Get("X-Correlation-ID"))
	}
	f.do(req{method: http.MethodGet, path: "/FHIR/R4/metadata"})
	f.do(req{method: http.MethodPost, path: "/FHIR/R4/$process-message", body: `{}`})
	f.do(req{method: "BREW", path: "/FHIR/R4/metadata"})
	f.do(req{method: http.MethodGet, path: "/healthz"})

	var lines []map[string]any
	for _, e := range logs.FilterMessage("request").All() {
		if e.Level != zapcore.InfoLevel {
			t.Errorf("request line at level %s", e.Level)
		}
		c := e.ContextMap()
		d, ok := c["duration"].(time.Duration)
		if !ok || d < 0 {
			t.Errorf("duration %v (%T)", c["duration"], c["duration"])
		}
		delete(c, "duration")
		lines = append(lines, c)
	}
	want := []map[string]any{
		{"route": "POST /FHIR/R4/$process-message", "method": "POST", "status": int64(200), "request_id": "req-1", "correlation_id": "corr-1", "role": "prescriber", "org": "A83008"},
		{"route": "GET /FHIR/R4/metadata", "method": "GET", "status": int64(200), "request_id": "", "correlation_id": "", "role": "", "org": ""},
		{"route": "POST /FHIR/R4/$process-message", "method": "POST", "status": int64(401), "request_id": "", "correlation_id": "", "role": "", "org": ""},
		{"route": "/FHIR/R4/metadata", "method": "BREW", "status": int64(405), "request_id": "", "correlation_id": "", "role": "", "org": ""},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d request lines, want %d: %v", len(lines), len(want), lines)
	}
	for i := range want {
		keys := func(m map[string]any) []string {
			var k []string
			for key := range m {
				k = append(k, key)
			}
			slices.Sort(k)
			return k
		}
		if !slices.Equal(keys(lines[i]), keys(want[i])) {
			t.Errorf("line %d: fields %v, want %v", i, keys(lines[i]), keys(want[i]))
		}
		for k, v := range want[i] {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, lines[i][k], v)
			}
		}
	}

	for _, c := range []struct {
		route, method, code, outcome string
	}{
		{"POST /FHIR/R4/$process-message", "POST", "200", "2xx"},
		{"POST /FHIR/R4/$process-message", "POST", "401", "4xx"},
		{"/FHIR/R4/metadata", "other", "405", "4xx"},
		{"GET /healthz", "GET", "200", "2xx"},
	} {
		if n := sampleCount(t, m, "eps_http_requests_total", map[string]string{"route": c.route, "method": c.method, "code": c.code}); n != 1 {
			t.Errorf("eps_http_requests_total{%s,%s,%s} = %v, want 1", c.route, c.method, c.code, n)
		}
		if n := sampleCount(t, m, "eps_http_request_duration_seconds", map[string]string{"route": c.route, "method": c.method, "outcome": c.outcome}); n != 1 {
			t.Errorf("eps_http_request_duration_seconds{%s,%s,%s}: %d samples, want 1", c.route, c.method, c.outcome, n)
		}
	}
}

// sampleCount is the value of the counter name, or the number of
// observations of the histogram name, whose labels are labels (0 when there
// is no such series).
func sampleCount(t *testing.T, m Metrics, name string, labels map[string]string) uint64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, labels) {
				if h := s.GetHistogram(); h != nil {
					return h.GetSampleCount()
				}
				return uint64(s.GetCounter().GetValue())
			}
		}
	}
	return 0
}
