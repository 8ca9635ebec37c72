package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The cluster settings: a node with a route secret or mutual TLS loads, by
// flag, environment variable or config file, with replicas auto.
func TestClusterSettings(t *testing.T) {
	c, err := Load([]string{"--nats-cluster-listen", "127.0.0.1:0", "--nats-server-name", "eps-a",
		"--nats-routes", "nats-route://127.0.0.1:6222, nats://127.0.0.1:6223", "--nats-cluster-secret-file", "/run/secret",
		"--jetstream-domain", "eps", "--nats-cluster-wait", "30s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Clustered() || c.NATSClusterName != "eps" || c.NATSServerName != "eps-a" || c.JetStreamDomain != "eps" ||
		c.NATSClusterWait != 30*time.Second || c.Replicas != 0 || c.NATSClusterSecretFile != "/run/secret" {
		t.Errorf("cluster settings wrong: %+v", c)
	}
	if Default().Clustered() || Default().NATSClusterWait != 2*time.Minute || Default().NATSClusterName != "eps" {
		t.Errorf("defaults wrong: %+v", Default())
	}
	c, err = Load(nil, env(map[string]string{"EPS_NATS_CLUSTER_LISTEN": "0.0.0.0:6222", "EPS_NATS_SERVER_NAME": "eps-b",
		"EPS_NATS_CLUSTER_TLS_CERT": "c.pem", "EPS_NATS_CLUSTER_TLS_KEY": "k.pem", "EPS_NATS_CLUSTER_TLS_CA": "ca.pem",
		"EPS_NATS_CLUSTER_NAME": "eps-prod", "EPS_REPLICAS": "5"}), io.Discard)
	if err != nil || c.NATSClusterTLSCA != "ca.pem" || c.NATSClusterName != "eps-prod" || c.Replicas != 5 {
		t.Errorf("env: %v %+v", err, c)
	}
	file := filepath.Join(t.TempDir(), "eps.json")
	os.WriteFile(file, []byte(`{"nats-cluster-listen":"127.0.0.1:6222","nats-server-name":"eps-c","nats-cluster-secret-file":"s","replicas":3}`), 0o600)
	if c, err = Load([]string{"--config", file}, env(nil), io.Discard); err != nil || c.NATSServerName != "eps-c" || c.Replicas != 3 {
		t.Errorf("file: %v %+v", err, c)
	}
}

// A cluster setting that cannot work is refused with what to do: above all
// a node whose routes would not authenticate.
func TestClusterSettingsRefused(t *testing.T) {
	node := []string{"--nats-cluster-listen", "127.0.0.1:6222", "--nats-server-name", "eps-a"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{node, "routes must authenticate"},
		{append(node[:2:2], "--nats-cluster-secret-file", "s"), "nats-server-name is required"},
		{append(node, "--nats-cluster-tls-cert", "c.pem", "--nats-cluster-tls-key", "k.pem"), "go together"},
		{append(node, "--nats-cluster-secret-file", "s", "--nats-routes", "127.0.0.1:6223"), "want nats-route://host:port"},
		{append(node, "--nats-cluster-secret-file", "s", "--nats-routes", "nats-route://u:p@127.0.0.1:6223"), "no credentials in route URLs"},
		{append(node, "--nats-cluster-secret-file", "s", "--nats-cluster-name", ""), "nats-cluster-name"},
		{append(node, "--nats-cluster-secret-file", "s", "--nats-cluster-wait", "0s"), "nats-cluster-wait"},
		{[]string{"--nats-routes", "nats-route://127.0.0.1:6223"}, "needs nats-cluster-listen"},
		{[]string{"--nats-url", "nats://x:4222", "--nats-cluster-listen", "127.0.0.1:6222"}, "cannot be used with nats-url"},
		{[]string{"--nats-url", "nats://x:4222", "--nats-server-name", "x"}, "cannot be used with nats-url"},
		{[]string{"--nats-cluster-listen", "nohost"}, "want host:port"},
		{[]string{"--nats-server-name", "a b"}, "no spaces"},
		{[]string{"--replicas", "6"}, "replicas"},
		{[]string{"--replicas", "many"}, "replicas"},
	} {
		_, err := Load(tc.args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%v) = %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
	// Replicas above 1 are allowed on a cluster node and with nats-url.
	for _, args := range [][]string{append(node, "--nats-cluster-secret-file", "s", "--replicas", "3"), {"--nats-url", "nats://x:4222", "--replicas", "3"}} {
		if _, err := Load(args, env(nil), io.Discard); err != nil {
			t.Errorf("Load(%v): %v", args, err)
		}
	}
}
