package config

import (
	"testing"
	"time"
)

// --notify-max-age takes Go durations and whole days, at least a minute;
// its default is 7 days and --notify-max-bytes's is automatic.
func TestNotifySettings(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"7d", 7 * 24 * time.Hour, true},
		{"36h", 36 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1m", time.Minute, true},
		{"30s", 0, false},
		{"0d", 0, false},
		{"-1d", 0, false},
		{"d", 0, false},
		{"seven days", 0, false},
	} {
		got, err := ParseAge(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseAge(%q) = %v, %v", tc.in, got, err)
		}
	}
	c := Default()
	if c.NotifyMaxAge != 7*24*time.Hour || c.NotifyMaxBytes != 0 {
		t.Errorf("defaults: max age %v, max bytes %d", c.NotifyMaxAge, c.NotifyMaxBytes)
	}
}
