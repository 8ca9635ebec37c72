package test

import (
	"context"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
)

// A node of an R3 embedded cluster restarted with --replicas 1 (a
// mistake, or the default of the release before auto) does not scale the
// cluster's streams and buckets down: they stay R3 with current followers,
// the lease bucket too, and the node says so in a warning.
func TestEmbeddedClusterNodeWithLowerReplicasKeepsR3(t *testing.T) {
	nodes := startCluster(t, clusterConfigs(t, 3, secretAuth(t)))
	waitReplicated(t, nodes[0].b.App.Store.JetStream(), 3)

	n := nodes[0]
	n.b.stop()
	n.cfg.Replicas = 1
	startNodes(t, n)
	js := nodes[1].b.App.Store.JetStream()
	waitReplicated(t, js, 3)
	if r := n.b.App.Store.Replicas(); r != 3 {
		t.Errorf("the node restarted with --replicas 1 works with %d replicas, want the streams' 3", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
}
