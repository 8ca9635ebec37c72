package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"auto": 0, "AUTO": 0, "none": -1, "65536": 65536, "64KiB": 64 << 10, "500MiB": 500 << 20,
		"20GB": 20e9, "2 TiB": 2 << 40, "1MB": 1e6, "100000B": 100000,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "1KiB", "65535", "12XB", "1.5GB", "9999999999TiB", "unlimited"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestStorageSettings(t *testing.T) {
	c, err := Load([]string{"--events-max-bytes", "200GiB", "--storage-alert", "0.9"},
		func(k string) string {
			if k == "EPS_AUDIT_MAX_BYTES" {
				return "none"
			}
			return ""
		}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if c.EventsMaxBytes != 200<<30 || c.AuditMaxBytes != -1 || c.RequestsMaxBytes != 0 || c.StorageAlert != 0.9 {
		t.Errorf("got %+v", c)
	}
	if d := Default(); d.EventsMaxBytes != 0 || d.StorageAlert != 0.8 {
		t.Errorf("defaults: events %d, alert %v", d.EventsMaxBytes, d.StorageAlert)
	}
	for _, bad := range [][]string{{"--storage-alert", "1"}, {"--storage-alert", "0"}, {"--events-max-bytes", "10KiB"},
		{"--queue-max-bytes", "1GiB"}} { // removed with the ready queues' stream (issue 13)
		if _, err := Load(bad, func(string) string { return "" }, &strings.Builder{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
