package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
)

// DebugHandler serves Go's runtime profiles (net/http/pprof) under
// /debug/pprof/: the index, cmdline, profile (CPU), symbol and trace, and
// through the index every named profile (heap, allocs, goroutine, mutex,
// block, threadcreate). It is a mux of its own, never http.DefaultServeMux,
// and is meant for the --debug-listen listener alone: the API handler does
// not route /debug/. Everything else answers 404.
func DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// CheckDebugAddr refuses a --debug-listen address that is not on the
// loopback interface unless allowAny (--debug-listen-any) is set: a heap
// profile holds pieces of the broker's memory, prescriptions and patient
// details among them, and the listener has no authentication. Loopback is
// an IP literal in 127.0.0.0/8 or ::1, or the name localhost; an empty host
// (every interface), 0.0.0.0, :: and any other name are not.
func CheckDebugAddr(addr string, allowAny bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("debug-listen %q: want host:port", addr)
	}
	if allowAny || IsLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("debug-listen %q is not a loopback address: the profiles it serves expose the broker's memory (patient data) without authentication; "+
		"use 127.0.0.1, [::1] or localhost, or set --debug-listen-any to listen there anyway", addr)
}

// IsLoopbackHost reports whether host (of a host:port) names the loopback
// interface only.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
