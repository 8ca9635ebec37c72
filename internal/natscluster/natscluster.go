// Package natscluster starts a cluster of embedded JetStream nats-server
// nodes on loopback and waits on what JetStream reports: a meta leader
// that every running node follows and that can place a stream on every
// running node, and streams whose replicas are current. It serves the
// tests (test/, the broker's benchmarks) and `epsctl load --cluster`, so it
// takes no testing.TB: every call is bounded by a context and returns an
// error. It imports nats-server and nats.go only.
package natscluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options says how to build the cluster's nodes.
type Options struct {
	// Name is the cluster's name ("natscluster" if empty).
	Name string
	// ServerNames names the nodes, one each; their number is the
	// cluster's size.
	ServerNames []string
	// StoreDirs are the nodes' JetStream store dirs, one each (a node
	// started on a dir a node of the same name used recovers its streams).
	StoreDirs []string
	// SyncAlways fsyncs every write; otherwise SyncInterval (0: the
	// server's default) is the fsync interval.
	SyncAlways   bool
	SyncInterval time.Duration
	// MaxPayload is the nodes' maximum message size (0: the server's).
	MaxPayload int32
	// ClientUser and ClientPassword, if set, are the only client login;
	// ClientURLs carry them.
	ClientUser, ClientPassword string
	// RoutePassword authorises the routes (user "route"); a random one if
	// empty.
	RoutePassword string
	// Routes, if set, gives the addresses (host:port) node i dials for its
	// routes, as a proxy between the nodes needs; Started then tells the
	// caller each node's route listener. Without it each node listens on a
	// free port picked before the first starts, and dials every node's.
	Routes func(i int) []string
	// Started, if set, is called with each node when it has started
	// (also on a restart).
	Started func(i int, srv *server.Server)
	// Configure, if set, adjusts node i's options last (advertise
	// addresses, ping intervals, logging).
	Configure func(i int, o *server.Options)
	// NoLog silences the servers.
	NoLog bool
}

// Cluster is the running nodes. A node keeps its client and route ports
// across StopNode and StartNode.
type Cluster struct {
	opts        Options
	routes      []string // nats-route URLs without proxies; nil with Options.Routes
	mu          sync.Mutex
	srvs        []*server.Server // nil while a node is stopped
	clientPorts []int
	routePorts  []int
}

// readyLimit bounds a node's start until it accepts connections.
const readyLimit = time.Minute

// Start starts every node and waits (bounded by ctx) until the cluster is
// ready as WaitReady says. On an error the nodes started are shut down.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	n := len(o.ServerNames)
	if n == 0 || len(o.StoreDirs) != n {
		return nil, fmt.Errorf("natscluster: %d server names and %d store dirs", n, len(o.StoreDirs))
	}
	if o.Name == "" {
		o.Name = "natscluster"
	}
	if o.RoutePassword == "" {
		o.RoutePassword = Secret()
	}
	// Every port is picked before the first node starts: every node's
	// routes name every node's route port (its own is ignored), and a node
	// restarted keeps its ports, which the kernel could otherwise have
	// handed to a connection meanwhile.
	ports, err := FreePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: o, srvs: make([]*server.Server, n), clientPorts: ports[:n], routePorts: ports[n:]}
	if o.Routes == nil {
		for _, p := range c.routePorts {
			c.routes = append(c.routes, fmt.Sprintf("127.0.0.1:%d", p))
		}
	}
	for i := range n {
		if err := c.StartNode(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// Size is the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.srvs) }

// Server is node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srvs[i]
}

func (c *Cluster) options(i int) *server.Options {
	o := c.opts
	route := c.routes
	if o.Routes != nil {
		route = o.Routes(i)
	}
	var routes []string
	for _, a := range route {
		routes = append(routes, "nats-route://route:"+o.RoutePassword+"@"+a)
	}
	so := &server.Options{
		ServerName: o.ServerNames[i], Host: "127.0.0.1", Port: c.clientPorts[i],
		Username: o.ClientUser, Password: o.ClientPassword,
		JetStream: true, StoreDir: o.StoreDirs[i], MaxPayload: o.MaxPayload,
		SyncAlways: o.SyncAlways, NoSigs: true, NoLog: o.NoLog,
		Cluster: server.ClusterOpts{
			Name: o.Name, Host: "127.0.0.1", Port: c.routePorts[i],
			Username: "route", Password: o.RoutePassword,
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
	if !o.SyncAlways {
		so.SyncInterval = o.SyncInterval
	}
	if o.Configure != nil {
		o.Configure(i, so)
	}
	return so
}

// StartNode starts node i on its store dir, name and ports (those of its
// first start) and waits until it accepts connections.
func (c *Cluster) StartNode(i int) error {
	if c.Server(i) != nil {
		return fmt.Errorf("natscluster: node %d is running", i)
	}
	srv, err := server.NewServer(c.options(i))
	if err != nil {
		return fmt.Errorf("natscluster: node %d: %w", i, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyLimit) {
		srv.Shutdown()
		return fmt.Errorf("natscluster: node %d did not accept connections in %s", i, readyLimit)
	}
	c.mu.Lock()
	c.srvs[i] = srv
	c.clientPorts[i] = srv.Addr().(*net.TCPAddr).Port
	c.routePorts[i] = srv.ClusterAddr().Port
	c.mu.Unlock()
	if c.opts.Started != nil {
		c.opts.Started(i, srv)
	}
	return nil
}

// StopNode shuts node i down and waits for it (its store dir stays).
func (c *Cluster) StopNode(i int) {
	c.mu.Lock()
	srv := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Shutdown stops every running node.
func (c *Cluster) Shutdown() {
	for i := range c.srvs {
		c.StopNode(i)
	}
}

// ClientURL is node i's client URL, with the client login if any.
func (c *Cluster) ClientURL(i int) string {
	c.mu.Lock()
	port := c.clientPorts[i]
	c.mu.Unlock()
	u := url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	if c.opts.ClientUser != "" {
		u.User = url.UserPassword(c.opts.ClientUser, c.opts.ClientPassword)
	}
	return u.String()
}

// ClientURLs is every node's client URL, running or not.
func (c *Cluster) ClientURLs() []string {
	var out []string
	for i := range c.srvs {
		out = append(out, c.ClientURL(i))
	}
	return out
}

// WaitReady waits until a running node is the JetStream meta leader and
// has the statistics of every running node, every running node is current
// with it, and a stream with a replica on every running node can be placed
// (a probe created and deleted: the meta leader's peer list alone does not
// show that it can place one, and a stream created too early fails with
// "no suitable peers ... peer offline").
func (c *Cluster) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var why string
	for {
		running, leader, current := 0, false, true
		c.mu.Lock()
		srvs := append([]*server.Server(nil), c.srvs...)
		c.mu.Unlock()
		for _, srv := range srvs {
			if srv == nil {
				continue
			}
			running++
			current = current && srv.JetStreamIsCurrent()
		}
		for _, srv := range srvs {
			if srv != nil && srv.JetStreamIsLeader() && len(srv.JetStreamClusterPeers()) >= running {
				leader = true
			}
		}
		switch {
		case !leader:
			why = "no JetStream meta leader with every running node's statistics"
		case !current:
			why = "a running node is not current with the meta leader"
		default:
			err := c.probe(ctx, running)
			if err == nil {
				return nil
			}
			why = "an R" + fmt.Sprint(running) + " stream cannot be placed: " + err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natscluster: the cluster is not ready: %s (%w)", why, ctx.Err())
		case <-tick.C:
		}
	}
}

// probe creates and deletes a small memory stream with replicas replicas,
// each request bounded.
func (c *Cluster) probe(ctx context.Context, replicas int) error {
	nc, err := nats.Connect(strings.Join(c.ClientURLs(), ","), nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	const probe = "NATSCLUSTER_READY"
	if _, err := js.CreateStream(pctx, jetstream.StreamConfig{Name: probe, Subjects: []string{"natscluster.ready"},
		Storage: jetstream.MemoryStorage, Replicas: replicas}); err != nil {
		return err
	}
	return js.DeleteStream(pctx, probe)
}

// WaitStreamsCurrent waits until each stream named has a leader and at
// least replicas current replicas (the leader and its current, online
// followers), as its stream info says (two of an R3 stream with a node
// down); a stream configured with fewer replicas is an error at once. Each info request is bounded on
// its own (a request into a partition gets no answer: it is asked again),
// and the whole wait by ctx; the error says what the last info showed.
func WaitStreamsCurrent(ctx context.Context, js jetstream.JetStream, replicas int, names ...string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for _, name := range names {
		for {
			n, configured, why := StreamCurrent(ctx, js, name)
			if configured != 0 && configured < replicas {
				return fmt.Errorf("stream %s: replicas %d, want %d current", name, configured, replicas)
			}
			if n >= replicas {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("stream %s: not %d current replicas: %s (%w)", name, replicas, why, ctx.Err())
			case <-tick.C:
			}
		}
	}
	return nil
}

// StreamCurrent counts a stream's current replicas (its leader included)
// from one stream info request bounded to two seconds, with its configured
// replicas (0: no stream info) and what the info said.
func StreamCurrent(ctx context.Context, js jetstream.JetStream, name string) (current, configured int, why string) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ictx, name)
	if err != nil {
		return 0, 0, err.Error()
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return 0, info.Config.Replicas, "no leader"
	}
	n := 1
	var peers []string
	for _, r := range info.Cluster.Replicas {
		if r.Current && !r.Offline {
			n++
		}
		peers = append(peers, fmt.Sprintf("%s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag))
	}
	return n, info.Config.Replicas, fmt.Sprintf("leader %s, replicas [%s]", info.Cluster.Leader, strings.Join(peers, "; "))
}

// FreePorts picks n free TCP ports on loopback for listeners that must be
// known before they start (routes every node names) or kept across a
// restart. They are taken below the kernel's ephemeral range (from
// /proc/sys/net/ipv4/ip_local_port_range; 32768 if unknown), where neither
// an outgoing connection's local port nor another listener on :0 can take
// one between the pick and the server's listen (seen: a node of a test
// cluster never listened, its route port taken meanwhile), never one this
// process picked before, and each is checked free by listening on it.
func FreePorts(n int) ([]int, error) {
	lo, hi := freePortsFloor, ephemeralLow()
	if hi-lo < 1000 {
		return listenPorts(n)
	}
	picked.Lock()
	defer picked.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("natscluster: no %d free ports in [%d, %d)", n, lo, hi)
		}
		p := lo + mrand.IntN(hi-lo)
		if picked.ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		picked.ports[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

// freePortsFloor is the lowest port FreePorts picks (above the well-known
// and most registered services' ports).
const freePortsFloor = 20000

// picked are the ports FreePorts has handed out in this process.
var picked = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

// listenPorts picks n ports the kernel hands out (listeners on :0, all
// open at once so the ports differ, then closed): where no range below the
// ephemeral one is left.
func listenPorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Secret is a random password (hex of 16 random bytes).
func Secret() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.New("natscluster: no randomness: " + err.Error()))
	}
	return hex.EncodeToString(b[:])
}
