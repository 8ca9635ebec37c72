package config

import (
	"io"
	"strings"
	"testing"
)

// The HTTP limits: generous defaults, settable by flag and env, and
// nonsense refused naming the setting.
func TestHTTPLimitSettings(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPMaxConns != 1024 || c.RateLimit != 5000 || c.RateBurst != 10000 || c.RateLimitIP != 100 || c.RateBurstIP != 200 ||
		c.SessionsPerUser != 5 || c.MetricsListen != "" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = Load([]string{"--http-max-connections", "0", "--rate-limit", "0.5", "--metrics-listen", "127.0.0.1:9090"},
		env(map[string]string{"EPS_RATE_BURST_IP": "7", "EPS_TRACKER_SESSIONS_PER_USER": "2"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPMaxConns != 0 || c.RateLimit != 0.5 || c.RateBurstIP != 7 || c.SessionsPerUser != 2 || c.MetricsListen != "127.0.0.1:9090" {
		t.Errorf("set: %+v", c)
	}
	for _, tc := range [][]string{
		{"--http-max-connections", "-1"}, {"--rate-limit", "-1"}, {"--rate-limit", "fast"}, {"--rate-limit-ip", "Inf"},
		{"--rate-burst", "0"}, {"--tracker-sessions-per-user", "0"}, {"--metrics-listen", "9090"},
	} {
		_, err := Load(tc, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(tc[0], "--")) {
			t.Errorf("%v: %v", tc, err)
		}
	}
}
