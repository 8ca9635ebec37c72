package config

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzConfigFile reads fuzzed config files (--config) and one fuzzed EPS_*
// variable: Load refuses what it cannot use, and a configuration it accepts
// is valid, took every value the file gave (unless the variable overrode
// it), and loads the same from a file written from it.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte(`{"http-addr":"127.0.0.1:9090","max-body":2097152,"replicas":1,"log-level":"debug"}`), "EPS_LOG_LEVEL", "warn")
	f.Add([]byte(`{"jetstream-sync":"2m","idempotency-ttl":"1h","jwks":"/etc/jwks.json","nats-listen":"127.0.0.1:0"}`), "", "")
	f.Add([]byte(`{"replicas":1.5,"max-body":1e30}`), "EPS_MAX_BODY", "1e3")
	f.Add([]byte(`{"tls-cert":"c.pem"}`), "EPS_TLS_KEY", "k.pem")
	f.Add([]byte(`{"unknown":1,"http-addr":["x"]}`), "EPS_REPLICAS", "-1")
	f.Add([]byte(`[]`), "", "")
	dir := f.TempDir()
	path := filepath.Join(dir, "config.json")
	f.Fuzz(func(t *testing.T, file []byte, envName, envValue string) {
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		getenv := func(k string) string {
			if k == envName {
				return envValue
			}
			return ""
		}
		c, err := Load([]string{"--config", path}, getenv, io.Discard)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted an invalid configuration: %v", err)
		}
		var raw map[string]any
		if err := json.Unmarshal(file, &raw); err != nil {
			t.Fatalf("Load accepted a config file that is not a JSON object: %v", err)
		}
		values := settingValues(t, c)
		for _, s := range settings {
			v, ok := raw[s.name].(string)
			if !ok || envName == EnvName(s.name) && envValue != "" {
				continue
			}
			if probe := c; s.set(&probe, v) != nil || !reflect.DeepEqual(probe, c) {
				t.Fatalf("config file gave %s %q; Load made it %q", s.name, v, values[s.name])
			}
		}
		// The accepted configuration, written back as a config file,
		// loads as the same configuration (JSON strings cannot carry
		// invalid UTF-8, which an environment variable can).
		for _, v := range values {
			if !utf8.ValidString(v) {
				return
			}
		}
		out, _ := json.Marshal(values)
		path2 := filepath.Join(dir, "again.json")
		if err := os.WriteFile(path2, out, 0o600); err != nil {
			t.Fatal(err)
		}
		c2, err := Load([]string{"--config", path2}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatalf("the accepted configuration does not load again: %v\n%s", err, out)
		}
		c2.ConfigFile = c.ConfigFile
		if !reflect.DeepEqual(c2, c) {
			t.Fatalf("loaded again as %+v, want %+v", c2, c)
		}
	})
}

// settingValues gives each setting of c in the form a config file takes:
// of the string forms of c's fields, the one that the setting's parser
// turns into what c holds.
func settingValues(t *testing.T, c Config) map[string]string {
	t.Helper()
	// Size settings hold 0 for "auto" and -1 for "none", words no field
	// holds as text.
	cands := []string{"auto", "none"}
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		switch f := v.Field(i).Interface().(type) {
		case string:
			cands = append(cands, f)
		case time.Duration:
			cands = append(cands, f.String())
		case int:
			cands = append(cands, strconv.Itoa(f))
		case int64:
			cands = append(cands, strconv.FormatInt(f, 10))
		case float64:
			cands = append(cands, strconv.FormatFloat(f, 'g', -1, 64))
		default:
			cands = append(cands, fmt.Sprint(f))
		}
	}
	out := map[string]string{}
	for _, s := range settings {
		for _, cand := range cands {
			probe := c
			if err := s.set(&probe, cand); err == nil && reflect.DeepEqual(probe, c) {
				out[s.name] = cand
				break
			}
		}
		if _, ok := out[s.name]; !ok {
			t.Fatalf("no string form of setting %s found in %+v", s.name, c)
		}
	}
	return out
}
