package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.DataDir != "./data" || c.NATSURL != "" || c.LogLevel != "info" {
		t.Errorf("contract defaults wrong: %+v", c)
	}
	if c.JetStreamSync != SyncAlways || c.MaxBodyBytes != 1<<20 || c.Replicas != 0 {
		t.Errorf("safety defaults wrong: %+v", c)
	}
	if _, always := c.SyncInterval(); !always {
		t.Error("default sync policy must sync every write")
	}
}

func TestPrecedenceFlagEnvFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "eps.json")
	if err := os.WriteFile(file, []byte(`{"http-addr":"127.0.0.1:1","data-dir":"/file","log-level":"warn","max-body":4096}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load([]string{"--config", file, "--http-addr", "127.0.0.1:3"},
		env(map[string]string{"EPS_HTTP_ADDR": "127.0.0.1:2", "EPS_DATA_DIR": "/env"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:3" || c.DataDir != "/env" || c.LogLevel != "warn" || c.MaxBodyBytes != 4096 {
		t.Errorf("precedence wrong: %+v", c)
	}
	// EPS_CONFIG names the file when --config is absent.
	c, err = Load(nil, env(map[string]string{"EPS_CONFIG": file}), io.Discard)
	if err != nil || c.DataDir != "/file" {
		t.Errorf("EPS_CONFIG not read: %v %+v", err, c)
	}
}

func TestInvalidSettingsSayWhat(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud"}, "log-level"},
		{[]string{"--jetstream-sync", "sometimes"}, "jetstream-sync"},
		{[]string{"--http-read-timeout", "soon"}, "http-read-timeout"},
		{[]string{"--tls-cert", "x.pem"}, "tls-cert and tls-key"},
		{[]string{"--http-addr", "nohost"}, "http-addr"},
		{[]string{"--replicas", "0"}, "replicas"},
		{[]string{"--replicas", "3"}, "embedded server is a single node"},
		{[]string{"--max-body", "1073741824"}, "max-body"},
		{[]string{"--nats-url", "nats://x:4222", "--nats-listen", "127.0.0.1:4222"}, "nats-listen"},
		{[]string{"stray"}, "unexpected arguments"},
	} {
		_, err := Load(tc.args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%v) = %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
	file := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(file, []byte(`{"http-adr":"x"}`), 0o600)
	if _, err := Load([]string{"--config", file}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "http-adr") {
		t.Errorf("unknown key in file not reported: %v", err)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), "-"+s.name) || !strings.Contains(out.String(), EnvName(s.name)) {
			t.Errorf("--help does not list %s / %s", s.name, EnvName(s.name))
		}
	}
}

func TestSyncInterval(t *testing.T) {
	c := Default()
	c.JetStreamSync = "2m"
	if d, always := c.SyncInterval(); always || d != 2*time.Minute {
		t.Errorf("SyncInterval = %v %v", d, always)
	}
}
