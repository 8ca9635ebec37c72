package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

// The route advertise address and the quorum grace: set by flag or
// environment; the grace defaults to 15s; what cannot work is refused.
func TestQuorumSettings(t *testing.T) {
	c, err := Load([]string{"--nats-cluster-listen", "0.0.0.0:6222", "--nats-server-name", "eps-a",
		"--nats-cluster-secret-file", "/run/secret", "--nats-cluster-advertise", "eps-a.example.org:16222",
		"--nats-quorum-grace", "20s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSClusterAdvertise != "eps-a.example.org:16222" || c.NATSQuorumGrace != 20*time.Second {
		t.Errorf("flags: advertise %q grace %v", c.NATSClusterAdvertise, c.NATSQuorumGrace)
	}
	if d := Default(); d.NATSQuorumGrace != 15*time.Second || d.NATSClusterAdvertise != "" {
		t.Errorf("defaults: advertise %q grace %v", d.NATSClusterAdvertise, d.NATSQuorumGrace)
	}
	c, err = Load(nil, env(map[string]string{"EPS_NATS_URL": "nats://a:4222,nats://b:4222", "EPS_NATS_QUORUM_GRACE": "30s"}), io.Discard)
	if err != nil || c.NATSQuorumGrace != 30*time.Second {
		t.Errorf("env: %v grace %v", err, c.NATSQuorumGrace)
	}

	node := []string{"--nats-cluster-listen", "127.0.0.1:6222", "--nats-server-name", "eps-a", "--nats-cluster-secret-file", "s"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(node, "--nats-cluster-advertise", "nohost"), "want host:port"},
		{append(node, "--nats-cluster-advertise", "eps-a:0"), "not 0"},
		{[]string{"--nats-cluster-advertise", "eps-a:6222"}, "needs nats-cluster-listen"},
		{[]string{"--nats-url", "nats://x:4222", "--nats-cluster-advertise", "eps-a:6222"}, "nats-cluster-advertise is for an embedded cluster node"},
		{[]string{"--nats-quorum-grace", "0s"}, "nats-quorum-grace must be positive"},
	} {
		_, err := Load(tc.args, env(nil), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
