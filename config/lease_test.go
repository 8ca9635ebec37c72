package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

// --scheduler-lease defaults to 15s and takes 2s to 10m.
func TestSchedulerLeaseSetting(t *testing.T) {
	if c := Default(); c.SchedulerLease != 15*time.Second {
		t.Errorf("default %v, want 15s", c.SchedulerLease)
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2s", 2 * time.Second, true},
		{"30s", 30 * time.Second, true},
		{"10m", 10 * time.Minute, true},
		{"1s", 0, false},
		{"11m", 0, false},
		{"0", 0, false},
		{"soon", 0, false},
	} {
		c, err := Load([]string{"--scheduler-lease", tc.in}, env(nil), io.Discard)
		if tc.ok && (err != nil || c.SchedulerLease != tc.want) {
			t.Errorf("--scheduler-lease %s: %v, %v", tc.in, c.SchedulerLease, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "scheduler-lease")) {
			t.Errorf("--scheduler-lease %s accepted, or the error does not name it: %v", tc.in, err)
		}
	}
	c, err := Load(nil, env(map[string]string{"EPS_SCHEDULER_LEASE": "45s"}), io.Discard)
	if err != nil || c.SchedulerLease != 45*time.Second {
		t.Errorf("EPS_SCHEDULER_LEASE: %v, %v", c.SchedulerLease, err)
	}
}
