package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/internal/natscluster"
)

// clusterNodes is the size of the cluster --cluster starts.
const clusterNodes = 3

// clusterReadyLimit is the longest a new cluster may take to elect its
// JetStream meta leader with every node a current peer (generous: the
// machine may be shared).
const clusterReadyLimit = 2 * time.Minute

// loadCluster is a three-node NATS cluster in this process
// (internal/natscluster): each node its own nats-server with JetStream on
// its own store dir, routes on loopback with route credentials, clients on
// loopback with a user and password.
type loadCluster struct {
	cl *natscluster.Cluster
	// URLs are the nodes' client URLs with the client credentials, as
	// the broker's --nats-url takes them (comma-separated).
	URLs []string
}

// startLoadCluster starts the cluster under dir (dir/n1, dir/n2, dir/n3)
// with the given sync policy (as the embedded single node: "always" or
// an interval) and maximum payload, and waits until JetStream has a meta
// leader that sees every node as a current peer and can place an R3
// stream.
func startLoadCluster(ctx context.Context, dir, syncPolicy string, maxPayload int32) (*loadCluster, error) {
	interval, always := (config.Config{JetStreamSync: syncPolicy}).SyncInterval()
	o := natscluster.Options{Name: "epsload", SyncAlways: always, SyncInterval: interval, MaxPayload: maxPayload,
		ClientUser: "broker", ClientPassword: natscluster.Secret()}
	for i := 0; i < clusterNodes; i++ {
		store := filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(store, 0o700); err != nil {
			return nil, err
		}
		o.ServerNames, o.StoreDirs = append(o.ServerNames, fmt.Sprintf("load-n%d", i+1)), append(o.StoreDirs, store)
	}
	rctx, cancel := context.WithTimeout(ctx, clusterReadyLimit)
	defer cancel()
	cl, err := natscluster.Start(rctx, o)
	if err != nil {
		return nil, err
	}
	return &loadCluster{cl: cl, URLs: cl.ClientURLs()}, nil
}

// stop shuts every node down and waits for each.
func (c *loadCluster) stop() { c.cl.Shutdown() }

// streamPlacement is where one stream's replicas are, as JetStream says.
type streamPlacement struct {
	Stream   string   `json:"stream"`
	Replicas int      `json:"replicas"`
	Leader   string   `json:"leader"`
	Peers    []string `json:"peers"`   // the followers
	Current  int      `json:"current"` // followers current with the leader
}

// streamPlacements lists every stream of js (the broker's streams and its
// buckets' streams) with its replicas and their placement.
func streamPlacements(ctx context.Context, js jetstream.JetStream) ([]streamPlacement, error) {
	var out []streamPlacement
	l := js.ListStreams(ctx)
	for si := range l.Info() {
		p := streamPlacement{Stream: si.Config.Name, Replicas: si.Config.Replicas}
		if ci := si.Cluster; ci != nil {
			p.Leader = ci.Leader
			for _, r := range ci.Replicas {
				p.Peers = append(p.Peers, r.Name)
				if r.Current {
					p.Current++
				}
			}
			sort.Strings(p.Peers)
		}
		out = append(out, p)
	}
	if err := l.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out, nil
}
