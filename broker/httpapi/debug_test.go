package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// Only loopback addresses pass without --debug-listen-any.
func TestCheckDebugAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		any  bool
		ok   bool
	}{
		{"127.0.0.1:6060", false, true},
		{"127.9.9.9:6060", false, true},
		{"localhost:6060", false, true},
		{"LOCALHOST:6060", false, true},
		{"[::1]:6060", false, true},
		{":6060", false, false},
		{"0.0.0.0:6060", false, false},
		{"[::]:6060", false, false},
		{"10.1.2.3:6060", false, false},
		{"[fe80::1]:6060", false, false},
		{"localhost.example.org:6060", false, false},
		{"broker-host:6060", false, false},
		{"0.0.0.0:6060", true, true},
		{"broker-host:6060", true, true},
		{"6060", true, false}, // not host:port at all
	} {
		err := CheckDebugAddr(tc.addr, tc.any)
		if (err == nil) != tc.ok {
			t.Errorf("%q any=%v: %v", tc.addr, tc.any, err)
		}
	}
}

// The debug mux answers the pprof paths only, and no method but GET (and
// POST for symbol).
func TestDebugHandlerRoutes(t *testing.T) {
	h := DebugHandler()
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/debug/pprof/", 200, "Types of profiles available"},
		{"GET", "/debug/pprof/heap?debug=1", 200, "heap profile:"},
		{"GET", "/debug/pprof/goroutine?debug=1", 200, "goroutine profile:"},
		{"GET", "/debug/pprof/nosuch", 404, "Unknown profile"},
		{"GET", "/debug/pprof/symbol", 200, "num_symbols"},
		{"GET", "/", 404, ""},
		{"GET", "/metrics", 404, ""},
		{"GET", "/debug/vars", 404, ""},
		{"DELETE", "/debug/pprof/", 405, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s %s: %d %.100q", tc.method, tc.path, rec.Code, rec.Body.String())
		}
	}
}
