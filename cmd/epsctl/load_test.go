package main

import (
	"strings"
	"testing"
)

// TestLoadFlags runs epsctl load for a moment with the in-process broker's
// settings and checks what a user sees: the broker's token cache and debug
// listener as asked, and refusals that name the flag.
func TestLoadFlags(t *testing.T) {
	tiny := []string{"load", "--duration", "300ms", "--rounds", "1", "--quiet", "--concurrency", "2"}
	tests := []struct {
		name      string
		args      []string
		dataDir   bool // add a --data-dir of the test's own
		code      int
		stdout    []string // each must appear
		notStdout []string // none may appear
		stderr    []string
	}{
		{name: "defaults", dataDir: true, code: exitOK,
			stdout:    []string{"token cache 10000,", "http/jetstream ratio per round"},
			notStdout: []string{"/debug/pprof/", "failure", "http median 0/s"}},
		{name: "cache off and a debug listener", dataDir: true, code: exitOK,
			args:      []string{"--token-cache-size", "0", "--debug-listen", "127.0.0.1:0"},
			stdout:    []string{"token cache 0,", "at http://127.0.0.1:", "/debug/pprof/", "http/jetstream ratio per round"},
			notStdout: []string{"failure", "http median 0/s"}},
		{name: "cache of one", dataDir: true, code: exitOK,
			args:      []string{"--token-cache-size=1"},
			stdout:    []string{"token cache 1,"},
			notStdout: []string{"failure", "http median 0/s"}},
		{name: "debug listener not on loopback", dataDir: true, code: exitFailure,
			args:   []string{"--debug-listen", "0.0.0.0:0"},
			stderr: []string{"start broker", `debug-listen "0.0.0.0:0" is not a loopback address`, "--debug-listen-any"}},
		{name: "debug listener without a port", dataDir: true, code: exitFailure,
			args:   []string{"--debug-listen", "127.0.0.1"},
			stderr: []string{"start broker", `debug-listen "127.0.0.1": want host:port`}},
		{name: "negative cache", code: exitUsage,
			args:   []string{"--token-cache-size", "-1"},
			stderr: []string{"--token-cache-size -1: want a whole number from 0 to 1000000"}},
		{name: "cache too big", code: exitUsage,
			args:   []string{"--token-cache-size", "1000001"},
			stderr: []string{"--token-cache-size 1000001: want a whole number from 0 to 1000000"}},
		{name: "cache not a number", code: exitUsage,
			args:   []string{"--token-cache-size", "lots"},
			stderr: []string{"token-cache-size", "lots"}},
		{name: "with --url", code: exitUsage,
			args:   []string{"--url", "http://127.0.0.1:1", "--token", "x", "--debug-listen", "127.0.0.1:0", "--token-cache-size", "0"},
			stderr: []string{"--debug-listen, --token-cache-size set the in-process broker; with --url, set them on that broker"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string(nil), tiny...), tc.args...)
			if tc.dataDir {
				args = append(args, "--data-dir", t.TempDir())
			}
			r := runEpsctl(t, nil, args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
				}
			}
			for _, not := range tc.notStdout {
				if strings.Contains(r.stdout, not) {
					t.Errorf("stdout has %q:\n%s", not, r.stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
		})
	}
}

func TestLoadUsage(t *testing.T) {
	r := runEpsctl(t, nil, "load", "--help")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"Usage: epsctl load", "-debug-listen string", "loopback only", "-token-cache-size int", "(default 10000)", "with --url they are refused"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("usage lacks %q:\n%s", want, r.stderr)
		}
	}
}
