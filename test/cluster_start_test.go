package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
)

// A node of an R3 embedded cluster restarted with --replicas 1 (a
// mistake, or the default of the release before auto) does not scale the
// cluster's streams and buckets down: they stay R3 with current followers,
// the lease bucket too, and the node says so in a warning. Its stop went
// through lame duck mode, and once restarted its copies come current.
func TestEmbeddedClusterNodeWithLowerReplicasKeepsR3(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	nodes := startCluster(t, clusterConfigs(t, 3, secretAuth(t)))
	waitReplicated(t, nodes[0].b.App.Store.JetStream(), 3)

	n := nodes[0]
	n.b.stop()
	// Its NATS node stopped in lame duck mode (its leaders handed over).
	if n.logs.FilterMessageSnippet("lame duck").Len() == 0 {
		t.Error("the stopped cluster node did not go through lame duck mode")
	}
	n.cfg.Replicas = 1
	startNodes(t, n)
	js := nodes[1].b.App.Store.JetStream()
	waitReplicated(t, js, 3)
	if r := n.b.App.Store.Replicas(); r != 3 {
		t.Errorf("the node restarted with --replicas 1 works with %d replicas, want the streams' 3", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+broker.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("lease bucket: replicas %d after the restart with --replicas 1, want 3", r)
	}
	if n.logs.FilterMessageSnippet("never lowered").Len() == 0 {
		t.Error("the node restarted with --replicas 1 did not warn that the streams' replicas were kept")
	}
	// The restarted node's eps_nats_node_replicas_behind comes to 0 once
	// its copies of every stream are current: what an operator waits for
	// before stopping the next node.
	for {
		behind, err := gaugeValue(n.b, "eps_nats_node_replicas_behind")
		if err == nil && behind == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("eps_nats_node_replicas_behind of the restarted node: %v %v, want 0", behind, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// gaugeValue is the value of a broker's unlabelled gauge.
func gaugeValue(b *testBroker, name string) (float64, error) {
	mfs, err := b.App.Metrics.Registry.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no gauge %s", name)
}
