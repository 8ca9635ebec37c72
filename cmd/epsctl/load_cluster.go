package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/config"
)

// clusterNodes is the size of the cluster --cluster starts.
const clusterNodes = 3

// clusterReadyLimit is the longest a new cluster may take to elect its
// JetStream meta leader with every node a current peer (generous: the
// machine may be shared).
const clusterReadyLimit = 2 * time.Minute

// loadCluster is a three-node NATS cluster in this process: each node its
// own nats-server with JetStream on its own store dir, routes on loopback
// with route credentials, clients on loopback with a user and password.
type loadCluster struct {
	servers []*server.Server
	// URLs are the nodes' client URLs with the client credentials, as
	// the broker's --nats-url takes them (comma-separated).
	URLs []string
}

// startLoadCluster starts the cluster under dir (dir/n1, dir/n2, dir/n3)
// with the given sync policy (as the embedded single node: "always" or
// an interval) and maximum payload, and waits until JetStream has a meta
// leader that sees every node as a current peer.
func startLoadCluster(ctx context.Context, dir, syncPolicy string, maxPayload int32) (*loadCluster, error) {
	// The cluster ports are picked free first: every node's routes name
	// every node (its own route is ignored), so all three must be known
	// before the first starts.
	ports, err := freePorts(clusterNodes)
	if err != nil {
		return nil, err
	}
	routeUser, routePass, clientPass := "route", secret(), secret()
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://%s:%s@127.0.0.1:%d", routeUser, routePass, p))
	}
	interval, always := (config.Config{JetStreamSync: syncPolicy}).SyncInterval()
	c := &loadCluster{}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()
	for i := 0; i < clusterNodes; i++ {
		store := filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(store, 0o700); err != nil {
			return nil, err
		}
		so := &server.Options{
			ServerName: fmt.Sprintf("load-n%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			Username:   "broker",
			Password:   clientPass,
			JetStream:  true,
			StoreDir:   store,
			NoSigs:     true,
			MaxPayload: maxPayload,
			SyncAlways: always,
			Cluster: server.ClusterOpts{
				Name:     "epsload",
				Host:     "127.0.0.1",
				Port:     ports[i],
				Username: routeUser,
				Password: routePass,
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		if !always {
			so.SyncInterval = interval
		}
		srv, err := server.NewServer(so)
		if err != nil {
			return nil, fmt.Errorf("cluster node %d: %w", i+1, err)
		}
		go srv.Start()
		c.servers = append(c.servers, srv)
	}
	for i, srv := range c.servers {
		if !srv.ReadyForConnections(clusterReadyLimit) {
			return nil, fmt.Errorf("cluster node %d did not accept connections in %s", i+1, clusterReadyLimit)
		}
		u, err := url.Parse(srv.ClientURL())
		if err != nil {
			return nil, err
		}
		u.User = url.UserPassword("broker", clientPass)
		c.URLs = append(c.URLs, u.String())
	}
	if err := c.waitReady(ctx, clusterReadyLimit); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// waitReady waits until one node is the JetStream meta leader, sees every
// node as a peer, every node's meta state is current, and a stream with a
// replica on every node can be placed.
func (c *loadCluster) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		leader, current := "", 0
		for _, srv := range c.servers {
			if srv.JetStreamIsLeader() && len(srv.JetStreamClusterPeers()) == len(c.servers) {
				leader = srv.Name()
			}
			if srv.JetStreamIsCurrent() {
				current++
			}
		}
		if leader != "" && current == len(c.servers) && c.placeable(ctx) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %d-node cluster had no JetStream meta leader with every node current after %s", len(c.servers), limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// placeable says whether an R3 stream can be placed now: the meta
// leader has heard every node's configuration and statistics (which its
// peer list alone does not show). It creates a small memory stream with
// a replica on every node and deletes it.
func (c *loadCluster) placeable(ctx context.Context) bool {
	nc, err := nats.Connect(strings.Join(c.URLs, ","), nats.Timeout(5*time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	const probe = "LOAD_CLUSTER_READY"
	if _, err := js.CreateStream(pctx, jetstream.StreamConfig{Name: probe, Subjects: []string{"load.cluster.ready"},
		Storage: jetstream.MemoryStorage, Replicas: len(c.servers)}); err != nil {
		return false
	}
	return js.DeleteStream(pctx, probe) == nil
}

// stop shuts every node down and waits for each.
func (c *loadCluster) stop() {
	for _, srv := range c.servers {
		srv.Shutdown()
	}
	for _, srv := range c.servers {
		srv.WaitForShutdown()
	}
}

// freePorts picks n free TCP ports on loopback.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// secret is a random password for the cluster's routes and clients.
func secret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

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
