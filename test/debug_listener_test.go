package test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/config"
)

// get answers a GET on a full URL: status and body.
func debugGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, body
}

// The pprof paths a profile is taken from.
var debugPaths = []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1",
	"/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"}

// Without --debug-listen there is no debug listener, and the API listener
// answers 404 (an OperationOutcome) under /debug/.
func TestDebugListenerOffByDefault(t *testing.T) {
	b := startBroker(t, "")
	if b.App.DebugAddr() != "" {
		t.Errorf("a debug listener without --debug-listen: %s", b.App.DebugAddr())
	}
	for _, p := range debugPaths {
		res := b.do("GET", p, "", nil)
		if res.Status != 404 || !res.outcome(t).hasCode("RESOURCE_NOT_FOUND") {
			t.Errorf("API listener %s: %d %.200s", p, res.Status, res.Body)
		}
	}
}

// With --debug-listen the profiles are served there, and only there: the
// API listener still answers 404 under /debug/, and neither the API nor
// /metrics is reachable through the debug listener.
func TestDebugListener(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.DebugListen = "127.0.0.1:0" })
	addr := b.App.DebugAddr()
	if addr == "" {
		t.Fatal("no debug listener with --debug-listen")
	}
	if addr == strings.TrimPrefix(b.URL, "http://") {
		t.Fatal("the debug listener is the API listener")
	}
	debug := "http://" + addr
	for _, tc := range []struct {
		path string
		want string // in the body
	}{
		{"/debug/pprof/", "Types of profiles available"},
		{"/debug/pprof/", "<a href='heap?debug=1'>heap</a>"},
		{"/debug/pprof/", "<a href='goroutine?debug=1'>goroutine</a>"},
		{"/debug/pprof/heap?debug=1", "heap profile:"},
		{"/debug/pprof/allocs?debug=1", "heap profile:"},
		{"/debug/pprof/goroutine?debug=1", "goroutine profile:"},
		{"/debug/pprof/mutex?debug=1", "--- mutex:"},
		{"/debug/pprof/threadcreate?debug=1", "threadcreate profile:"},
		{"/debug/pprof/cmdline", ""},
		{"/debug/pprof/profile?seconds=1", ""}, // a gzipped CPU profile
		{"/debug/pprof/trace?seconds=1", ""},   // a runtime trace
	} {
		status, body := debugGet(t, debug+tc.path)
		if status != 200 || !bytes.Contains(body, []byte(tc.want)) || len(body) == 0 && tc.path != "/debug/pprof/cmdline" {
			t.Errorf("debug listener %s: %d %.200q", tc.path, status, body)
		}
		if res := b.do("GET", tc.path, "", nil); res.Status != 404 || bytes.Contains(res.Body, []byte(tc.want)) && tc.want != "" {
			t.Errorf("API listener %s: %d %.200s", tc.path, res.Status, res.Body)
		}
	}
	// A CPU profile is gzip, as go tool pprof reads it.
	if _, body := debugGet(t, debug+"/debug/pprof/profile?seconds=1"); !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Errorf("CPU profile is not gzip: %.20q", body)
	}
	for _, p := range []string{"/FHIR/R4/metadata", "/metrics", "/_ping", "/", "/debug/vars"} {
		if status, body := debugGet(t, debug+p); status != 404 {
			t.Errorf("debug listener %s: %d %.200s", p, status, body)
		}
	}
	// The API listener still serves the API.
	if res := b.do("GET", "/FHIR/R4/metadata", "", nil); res.Status != 200 {
		t.Errorf("API metadata: %d", res.Status)
	}
	// Shut down with the broker.
	b.stop()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("debug listener %s still accepting after the broker stopped", addr)
	}
}

// A --debug-listen address off the loopback interface is refused at start
// (nothing is started: the data dir is free for the next broker) unless
// --debug-listen-any allows it; loopback addresses start.
func TestDebugListenerAddress(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		any   bool
		start bool
	}{
		{"127.0.0.1:0", false, true},
		{"localhost:0", false, true},
		{"[::1]:0", false, true},
		{"127.0.0.2:0", false, true},
		{"0.0.0.0:0", false, false},
		{":0", false, false},
		{"[::]:0", false, false},
		{"192.0.2.10:6060", false, false},
		{"debug.example.org:6060", false, false},
		{"0.0.0.0:0", true, true},
		{":0", true, true},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default()
			cfg.DataDir, cfg.HTTPAddr = dir, "127.0.0.1:0"
			cfg.DebugListen, cfg.DebugListenAny = tc.addr, tc.any
			cfg.ShutdownDelay = 0
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a, err := app.New(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), nil)
			if !tc.start {
				if err == nil || !strings.Contains(err.Error(), "not a loopback address") || !strings.Contains(err.Error(), "--debug-listen-any") {
					t.Fatalf("want a refusal naming --debug-listen-any, got %v", err)
				}
				// Nothing was left running: the next broker takes the dir.
				startBroker(t, dir)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Listen(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- a.Serve(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			host, port, _ := net.SplitHostPort(a.DebugAddr())
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				host = "127.0.0.1" // every interface: reach it on loopback
			}
			if status, body := debugGet(t, "http://"+net.JoinHostPort(host, port)+"/debug/pprof/heap?debug=1"); status != 200 || !bytes.Contains(body, []byte("heap profile:")) {
				t.Errorf("heap profile: %d %.100q", status, body)
			}
		})
	}
}
