package config

import (
	"io"
	"strings"
	"testing"
)

// The debug listener's settings: off by default, set by flag, env or the
// config file, and nonsense refused naming the setting.
func TestDebugListenSettings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		listen  string
		any     bool
		wantErr string // in the error; "" for none
	}{
		{name: "default off", listen: "", any: false},
		{name: "flag", args: []string{"--debug-listen", "127.0.0.1:6060"}, listen: "127.0.0.1:6060"},
		{name: "env", env: map[string]string{"EPS_DEBUG_LISTEN": "localhost:6060"}, listen: "localhost:6060"},
		{name: "flag over env", args: []string{"--debug-listen", "[::1]:6060"}, env: map[string]string{"EPS_DEBUG_LISTEN": "127.0.0.1:1"}, listen: "[::1]:6060"},
		{name: "any by flag", args: []string{"--debug-listen", "0.0.0.0:6060", "--debug-listen-any=true"}, listen: "0.0.0.0:6060", any: true},
		{name: "any by env", env: map[string]string{"EPS_DEBUG_LISTEN": ":6060", "EPS_DEBUG_LISTEN_ANY": "1"}, listen: ":6060", any: true},
		{name: "any false", args: []string{"--debug-listen-any", "false"}, any: false},
		{name: "no port", args: []string{"--debug-listen", "6060"}, wantErr: "debug-listen (from --debug-listen): want host:port"},
		{name: "host only", env: map[string]string{"EPS_DEBUG_LISTEN": "127.0.0.1"}, wantErr: "debug-listen (from EPS_DEBUG_LISTEN): want host:port"},
		{name: "any not a bool", args: []string{"--debug-listen-any", "yes"}, wantErr: "debug-listen-any (from --debug-listen-any): want true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, env(tc.env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.DebugListen != tc.listen || c.DebugListenAny != tc.any {
				t.Errorf("got debug-listen %q any %v, want %q %v", c.DebugListen, c.DebugListenAny, tc.listen, tc.any)
			}
		})
	}
	if d := Default(); d.DebugListen != "" || d.DebugListenAny {
		t.Errorf("Default: debug listener on: %q %v", d.DebugListen, d.DebugListenAny)
	}
}
