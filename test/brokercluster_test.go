package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// procCluster is the deployment of the process fault test: three epsbroker
// processes whose embedded NATS servers form the cluster (R3), each
// process's routes to the others through the test's routeMesh. A node and
// its broker are one process: stopping the node is stopping the process.
type procCluster struct {
	t     *testing.T
	mesh  *routeMesh
	dirs  []string
	args  [][]string
	names []string
	nc    *natsCluster // the test's nodes on the processes' stores, once they are stopped
	mu    sync.Mutex
	p     []*brokerProcess // nil while stopped
}

func newProcCluster(t *testing.T) *procCluster {
	const n = 3
	c := &procCluster{t: t, mesh: newRouteMesh(t, n), p: make([]*brokerProcess, n)}
	secret := make([]byte, 32)
	rand.Read(secret)
	secretFile := filepath.Join(t.TempDir(), "route-secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, n)
	for i := range n {
		c.dirs = append(c.dirs, t.TempDir())
		c.names = append(c.names, fmt.Sprintf("p%d", i))
		listen := fmt.Sprintf("127.0.0.1:%d", ports[i])
		c.mesh.setRoutePort(i, listen)
		var routes []string
		for _, a := range c.mesh.routes(i) {
			routes = append(routes, "nats-route://"+a)
		}
		c.args = append(c.args, []string{"--nats-cluster-listen", listen, "--nats-routes", strings.Join(routes, ","),
			"--nats-cluster-name", "eps-faults", "--nats-server-name", c.names[i],
			"--nats-cluster-secret-file", secretFile, "--nats-cluster-wait", "90s",
			// Gossip tells the others this advertised route address: a
			// closed port, so that only the configured routes, through the
			// proxies, connect (as natsCluster's nodes do).
			"--nats-cluster-advertise", "127.0.0.1:1"})
	}
	return c
}

// start starts every process at once (each waits for the cluster's
// JetStream, which needs a majority of them).
func (c *procCluster) start() {
	var wg sync.WaitGroup
	for i := range c.dirs {
		wg.Add(1)
		go func() { defer wg.Done(); c.startNode(i) }()
	}
	wg.Wait()
	if c.t.Failed() {
		c.t.FailNow()
	}
}

func (c *procCluster) brokers() int { return len(c.dirs) }

func (c *procCluster) url(k int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p[k] == nil {
		return ""
	}
	return c.p[k].URL
}

func (c *procCluster) startNode(i int) {
	p := startProcess(c.t, c.dirs[i], c.args[i]...)
	c.mu.Lock()
	c.p[i] = p
	c.mu.Unlock()
}

// stop ends process i with sig and waits for it to exit.
func (c *procCluster) stop(i int, sig syscall.Signal) {
	c.mu.Lock()
	p := c.p[i]
	c.p[i] = nil
	c.mu.Unlock()
	p.cmd.Process.Signal(sig)
	<-p.gone
}

func (c *procCluster) stopNode(i int)                { c.stop(i, syscall.SIGKILL) }
func (c *procCluster) stopBroker(k int)              { c.stop(k, syscall.SIGTERM) }
func (c *procCluster) startBroker(k int)             { c.startNode(k) }
func (c *procCluster) partition(i int, mode cutMode) { c.mesh.cut(i, mode) }
func (c *procCluster) heal(i int)                    { c.mesh.cut(i, linkUp) }

// waitCurrent waits until every process answers /readyz 200: each checks
// that all the broker's streams and buckets have a leader (and its tracker
// index has caught up), on its own node.
func (c *procCluster) waitCurrent(ctx context.Context) {
	for k := range c.dirs {
		c.waitCaughtUp(ctx, k)
	}
}

func (c *procCluster) waitCaughtUp(ctx context.Context, k int) {
	c.t.Helper()
	for {
		u := c.url(k)
		if u != "" {
			if status, body := httpGet(ctx, u+"/readyz"); status == 200 {
				return
			} else if ctx.Err() != nil {
				c.t.Fatalf("broker process %d not ready: %d %s", k, status, body)
			}
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("broker process %d not running", k)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// openStores stops the processes (SIGTERM) and opens their JetStream
// stores with embedded nodes of the test under the same server names: no
// NATS user of the broker may read the event log, or connect a broker in
// external mode to the processes' cluster.
func (c *procCluster) openStores(ctx context.Context) *natsCluster {
	if c.nc != nil {
		return c.nc
	}
	for i := range c.dirs {
		if c.url(i) != "" {
			c.stop(i, syscall.SIGTERM)
		}
	}
	var stores []string
	for _, d := range c.dirs {
		stores = append(stores, filepath.Join(d, "jetstream"))
	}
	c.nc = startNATSClusterOn(c.t, "eps-faults", c.names, stores)
	waitStreamReplicas(c.t, ctx, c.nc.ClientURLs(), 3, brokerStreams...)
	return c.nc
}

// eventLog reads EPS_EVENTS from the processes' stores (openStores).
func (c *procCluster) eventLog(ctx context.Context) *eventCounts {
	return logCounts(c.t, ctx, c.openStores(ctx).ClientURLs())
}

// later starts the later broker in external mode on the processes'
// stores (openStores): the processes are stopped by then.
func (c *procCluster) later(ctx context.Context) string {
	return startLaterBroker(c.t, ctx, c.openStores(ctx), c.dirs[0]).URL
}

// The fault scenario on a cluster formed by three broker
// processes' embedded servers: under a steady load of orders and
// nominated releases on the three, kill one process (SIGKILL) and start
// it again on its data dir, stop another (SIGTERM) and start it again,
// then cut the third off (its routes blackholed) and heal it.
func TestBrokerProcessCluster(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newProcCluster(t)
	key := sharedKeys(t, c.dirs...)
	c.start()
	c.waitCurrent(ctx)
	// A cut isolates a node only if its routes go through the proxies:
	// a route a node learnt by gossip dials the peer's route port itself.
	for j := range 2 {
		if !c.mesh.carries(2, j) {
			t.Errorf("FINDING: the route between processes 2 and %d does not go through the test's proxies (a gossiped route to the listen address; the broker has no route advertise setting), so cutting process 2 off cannot isolate it", j)
		}
	}
	steps := []step{
		{"kill process 0 (SIGKILL)", func(context.Context) { c.stopNode(0) }},
		{"start process 0 again", func(ctx context.Context) {
			c.startNode(0)
			c.waitCurrent(ctx)
		}},
		{"stop process 1 (SIGTERM)", func(context.Context) { c.stopBroker(1) }},
		{"start process 1 again", func(ctx context.Context) {
			c.startBroker(1)
			c.waitCurrent(ctx)
		}},
		{"cut process 2 off (routes blackholed)", func(context.Context) { c.partition(2, cutDrop) }},
		{"heal process 2", func(ctx context.Context) {
			c.heal(2)
			c.waitCurrent(ctx)
		}},
	}
	runScenario(t, ctx, c, key, steps)
}
