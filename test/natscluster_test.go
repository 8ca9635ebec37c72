package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/internal/natscluster"
)

// A NATS cluster for the fault tests: N JetStream nodes on loopback whose
// every route goes through a proxy of the test (routeMesh), so that a node
// can be cut off from the others and let back in. The nodes are embedded
// nats-server servers in the test process (natsCluster); the broker
// process cluster of process tests puts the same mesh between the
// processes' route ports.

// cutMode is how a cut link treats its route traffic.
type cutMode int

const (
	linkUp cutMode = iota
	// cutDrop blackholes the link: nothing is read or written either way
	// (TCP connections stay open, bytes wait in the kernel's buffers as on
	// a network that drops packets) and new connections are held unanswered;
	// a node notices only through its route pings.
	cutDrop
	// cutClose closes the link's connections both ways and refuses new
	// ones, as a peer that resets connections.
	cutClose
)

// routeProxy forwards TCP connections from its loopback listener to a
// target address, unless cut.
type routeProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	gate   *sync.Cond // broadcast when mode or closed changes
	target string     // host:port; empty until the target node listens
	mode   cutMode
	closed bool
	conns  map[net.Conn]struct{} // both ends of every forwarded connection
}

func newRouteProxy(t testing.TB) *routeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &routeProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.gate = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *routeProxy) addr() string { return p.ln.Addr().String() }

func (p *routeProxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// setMode cuts the link (cutDrop, cutClose) or heals it (linkUp). Healing
// closes the connections accepted while the link was down: their dialers
// gave up on them long ago.
func (p *routeProxy) setMode(m cutMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	if m == cutClose {
		for c := range p.conns {
			c.Close()
		}
	}
	p.gate.Broadcast()
}

func (p *routeProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.gate.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
}

// passing waits while the link drops traffic; it says whether the
// connection may go on (false once the link closes connections, the proxy
// is closed or the connection was).
func (p *routeProxy) passing(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.mode == cutDrop && !p.closed {
		p.gate.Wait()
	}
	_, open := p.conns[c]
	return open && p.mode == linkUp && !p.closed
}

func (p *routeProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == cutClose {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *routeProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
	p.gate.Broadcast()
}

func (p *routeProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(in)
	}
}

func (p *routeProxy) forward(in net.Conn) {
	if !p.track(in) {
		in.Close()
		return
	}
	// A connection made while the link drops traffic is held, unanswered,
	// until the link heals; then it is closed.
	if !p.passing(in) {
		p.untrack(in)
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target == "" {
		p.untrack(in)
		return
	}
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		p.untrack(in)
		return
	}
	if !p.track(out) {
		out.Close()
		p.untrack(in)
		return
	}
	done := make(chan struct{}, 2)
	go p.pipe(out, in, done)
	go p.pipe(in, out, done)
	<-done
	p.untrack(in, out)
	<-done
}

// pipe copies src to dst, holding every read and write while the link
// drops traffic.
func (p *routeProxy) pipe(dst, src net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	buf := make([]byte, 32<<10)
	for p.passing(src) {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.passing(dst) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// routeMesh is a proxy for every ordered pair of N nodes: node i reaches
// node j's route port only through links[i][j].
type routeMesh struct {
	links [][]*routeProxy
}

func newRouteMesh(t testing.TB, n int) *routeMesh {
	m := &routeMesh{links: make([][]*routeProxy, n)}
	for i := range n {
		m.links[i] = make([]*routeProxy, n)
		for j := range n {
			if i != j {
				m.links[i][j] = newRouteProxy(t)
			}
		}
	}
	return m
}

// setRoutePort points every link to node j at its route listener.
func (m *routeMesh) setRoutePort(j int, addr string) {
	for i := range m.links {
		if i != j {
			m.links[i][j].setTarget(addr)
		}
	}
}

// routes lists node i's route addresses (host:port), one proxy per other node.
func (m *routeMesh) routes(i int) []string {
	var out []string
	for j, p := range m.links[i] {
		if j != i {
			out = append(out, p.addr())
		}
	}
	return out
}

// carries says whether a connection between nodes i and j goes through
// the mesh now.
func (m *routeMesh) carries(i, j int) bool {
	for _, p := range []*routeProxy{m.links[i][j], m.links[j][i]} {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// cut sets every link to and from node i to mode (linkUp heals them).
func (m *routeMesh) cut(i int, mode cutMode) {
	for j := range m.links {
		if j != i {
			m.links[i][j].setMode(mode)
			m.links[j][i].setMode(mode)
		}
	}
}

// natsCluster is N embedded JetStream nodes in the test process
// (internal/natscluster), clustered through a routeMesh.
type natsCluster struct {
	t     testing.TB
	names []string // the nodes' server names
	mesh  *routeMesh
	cl    *natscluster.Cluster
}

// startNATSCluster starts n nodes and waits until JetStream has a meta
// leader that every node follows and that can place an R(n) stream.
func startNATSCluster(t testing.TB, n int) *natsCluster {
	t.Helper()
	var names, stores []string
	for i := range n {
		names, stores = append(names, fmt.Sprintf("n%d", i)), append(stores, t.TempDir())
	}
	return startNATSClusterOn(t, "eps-faults", names, stores)
}

// startNATSClusterOn starts a node of cluster name for each of the server
// names, on its store dir (where a node of that name may have been
// before: JetStream recovers its streams), and waits for the meta leader.
func startNATSClusterOn(t testing.TB, name string, names, stores []string) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, names: names, mesh: newRouteMesh(t, len(names))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := natscluster.Start(ctx, natscluster.Options{
		Name: name, ServerNames: names, StoreDirs: stores, SyncAlways: true, NoLog: true,
		// Every route goes through the mesh's proxy for its pair of nodes.
		Routes:  c.mesh.routes,
		Started: func(i int, srv *server.Server) { c.mesh.setRoutePort(i, srv.ClusterAddr().String()) },
		Configure: func(_ int, o *server.Options) {
			// Gossip would tell a node the others' route ports, and it
			// would dial them past the proxies: every node advertises a
			// closed port (1, privileged, never a test's), so a gossiped
			// route fails at once and is not retried; only the
			// configured routes, through the proxies, connect.
			o.Cluster.Advertise = "127.0.0.1:1"
			// A blackholed route is noticed within seconds.
			o.Cluster.PingInterval, o.Cluster.MaxPingsOut = time.Second, 3
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.cl = cl
	t.Cleanup(cl.Shutdown)
	return c
}

// StartNode starts node i on its store dir, name and ports (those of its
// first start).
func (c *natsCluster) StartNode(i int) {
	c.t.Helper()
	if err := c.cl.StartNode(i); err != nil {
		c.t.Fatal(err)
	}
}

// StopNode shuts node i down (its store dir stays).
func (c *natsCluster) StopNode(i int) {
	c.t.Helper()
	if c.cl.Server(i) == nil {
		c.t.Fatalf("node %d is not running", i)
	}
	c.cl.StopNode(i)
}

// Partition blackholes node i's route traffic both ways (cutDrop), or
// closes it (cutClose); Heal lets it through again.
func (c *natsCluster) Partition(i int, mode cutMode) { c.mesh.cut(i, mode) }
func (c *natsCluster) Heal(i int)                    { c.mesh.cut(i, linkUp) }

// ClientURLs is every node's client URL, comma-separated (as --nats-url
// takes them), running or not.
func (c *natsCluster) ClientURLs() string { return strings.Join(c.cl.ClientURLs(), ",") }

// clientURL is node i's client URL.
func (c *natsCluster) clientURL(i int) string { return c.cl.ClientURL(i) }

// nodeOf is the index of the node named name (-1: none).
func (c *natsCluster) nodeOf(name string) int {
	for i, n := range c.names {
		if n == name {
			return i
		}
	}
	return -1
}

// waitMeta waits until a running node is the JetStream meta leader, every
// running node is current with it, and it can place a stream on every
// running node.
func (c *natsCluster) waitMeta(ctx context.Context) {
	c.t.Helper()
	if err := c.cl.WaitReady(ctx); err != nil {
		c.t.Fatal(err)
	}
}

// waitStreamReplicas waits until each stream named has a leader and
// replicas current replicas (the leader and its current followers), as its
// stream info tells a client of urls.
func waitStreamReplicas(t testing.TB, ctx context.Context, urls string, replicas int, streams ...string) {
	t.Helper()
	nc, err := nats.Connect(urls, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitStreamsCurrent(t, ctx, js, replicas, streams...)
}

// waitStreamsCurrent waits until each stream named, configured with at
// least replicas replicas, has a leader and replicas current replicas, as
// its stream info tells js (natscluster.WaitStreamsCurrent: each request
// bounded, as one sent into a partition gets no answer).
func waitStreamsCurrent(t testing.TB, ctx context.Context, js jetstream.JetStream, replicas int, streams ...string) {
	t.Helper()
	if err := natscluster.WaitStreamsCurrent(ctx, js, replicas, streams...); err != nil {
		t.Fatal(err)
	}
}

// TestNATSClusterHelper checks the helper itself: an R3 stream stays
// writable through a node in the majority with a node stopped, then with a
// node cut off (blackholed, then closed), and every node is current again
// after StartNode and Heal; a cut node has no route left. After the last
// heal, once every node follows one stream leader and holds what it holds,
// every acknowledged message is read back by its sequence: an acknowledged
// write lost by the cluster fails the test.
func TestNATSClusterHelper(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	c := startNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	acked := map[uint64]string{} // stream sequence -> data acknowledged there
	// publish stores one message through node via, retrying until the
	// stream has a leader that node reaches.
	publish := func(step string, via int) {
		t.Helper()
		nc, err := nats.Connect(c.clientURL(via))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if len(acked) == 0 {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HELPER", Subjects: []string{"helper.>"}, Replicas: 3}); err != nil {
				t.Fatal(err)
			}
		}
		for {
			// An attempt whose request went to a leader it cannot reach
			// gets no answer: it times out, and is tried again (the
			// message ID makes a retry of a stored message a duplicate,
			// acknowledged with the first one's sequence).
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ack, err := js.Publish(actx, "helper.x", []byte(step), jetstream.WithMsgID(step))
			cancel()
			if err == nil {
				if prev, ok := acked[ack.Sequence]; ok {
					t.Fatalf("%s acknowledged at sequence %d, where %q was acknowledged", step, ack.Sequence, prev)
				}
				acked[ack.Sequence] = step
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: %v", step, err)
			}
		}
	}
	publish("all up", 0)
	waitStreamReplicas(t, ctx, c.ClientURLs(), 3, "HELPER")
	c.StopNode(0)
	publish("node 0 stopped", 1)
	c.StartNode(0)
	waitStreamReplicas(t, ctx, c.ClientURLs(), 3, "HELPER")
	for _, mode := range []cutMode{cutDrop, cutClose} {
		c.Partition(1, mode)
		// Cut off, node 1 loses every route (a route past the proxies
		// would stay), and the majority goes on.
		for c.cl.Server(1).NumRoutes() > 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("node 1 still has %d routes, cut off (%d)", c.cl.Server(1).NumRoutes(), mode)
			case <-time.After(50 * time.Millisecond):
			}
		}
		publish(fmt.Sprintf("node 1 cut (%d)", mode), 2)
		c.Heal(1)
		waitStreamReplicas(t, ctx, c.ClientURLs(), 3, "HELPER")
	}
	// A stream info request is answered by the stream leader, but also by a
	// member that sees no leader, from its own store: node 1, just healed,
	// may answer first with what it held when it was cut off. So the count
	// is read only once every node, asked in process, names the same
	// leader, the leader says it leads, and every node holds the leader's
	// last sequence.
	if first, leader, err := firstStreamAnswer(ctx, c.ClientURLs(), "HELPER"); err == nil && first != uint64(len(acked)) {
		// Not a failure: the first answer through the cluster may be such a
		// member's (leader ""); logged to tell it from a loss below.
		t.Logf("first stream info after the heal: %d messages (%d acknowledged), leader %q", first, len(acked), leader)
	}
	leader := c.waitStreamAgreed(ctx, "HELPER")
	nc, err := nats.Connect(c.clientURL(leader))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, "HELPER")
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader != c.names[leader] {
		t.Fatalf("stream info after the heal answered by leader %v, every node follows %s", info.Cluster, c.names[leader])
	}
	if got := info.State.Msgs; got != uint64(len(acked)) {
		t.Errorf("the stream holds %d messages, %d were acknowledged (leader %s, sequences %d..%d)", got, len(acked), info.Cluster.Leader, info.State.FirstSeq, info.State.LastSeq)
	}
	for seq, step := range acked {
		// A message not found fails at once; an answer of no answer
		// (a 503 while the meta layer re-elects after the heal, a timeout)
		// is asked again until the test's deadline.
		var m *jetstream.RawStreamMsg
		for {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			m, err = s.GetMsg(gctx, seq)
			cancel()
			if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err != nil {
			t.Errorf("acknowledged %q at sequence %d: %v", step, seq, err)
			continue
		}
		if string(m.Data) != step {
			t.Errorf("acknowledged %q at sequence %d, the stream holds %q there", step, seq, m.Data)
		}
	}
}

// firstStreamAnswer is the first stream info answer a client of urls
// gets: message count and the leader named.
func firstStreamAnswer(ctx context.Context, urls, name string) (uint64, string, error) {
	nc, err := nats.Connect(urls)
	if err != nil {
		return 0, "", err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ictx, name)
	if err != nil {
		return 0, "", err
	}
	info := s.CachedInfo()
	var leader string
	if info.Cluster != nil {
		leader = info.Cluster.Leader
	}
	return info.State.Msgs, leader, nil
}

// streamView is what one node holds of a stream, asked in process (no
// request through the cluster): its own store's state and the leader it
// follows.
type streamView struct {
	running bool
	found   bool
	leader  string // the stream leader this node knows of ("" none)
	leads   bool   // this node is the stream leader
	state   server.StreamState
}

func (c *natsCluster) streamView(i int, name string) streamView {
	srv := c.cl.Server(i)
	if srv == nil {
		return streamView{}
	}
	v := streamView{running: true, leads: srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, name)}
	jsz, err := srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return v
	}
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if sd.Name == name {
				v.found, v.state = true, sd.State
				if sd.Cluster != nil {
					v.leader = sd.Cluster.Leader
				}
			}
		}
	}
	return v
}

// waitStreamAgreed waits until every node runs, holds stream name, names
// the same leader, that leader alone says it leads, and every node's store
// ends at the leader's last sequence with the leader's message count; it
// returns the leader's index.
func (c *natsCluster) waitStreamAgreed(ctx context.Context, name string) int {
	c.t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		views := make([]streamView, len(c.names))
		for i := range c.names {
			views[i] = c.streamView(i, name)
		}
		if i, ok := agreed(c.names, views); ok {
			return i
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for i, v := range views {
				fmt.Fprintf(&b, "\n  node %d (%s): running %v, found %v, leader %q, leads %v, msgs %d, seqs %d..%d", i, c.names[i], v.running, v.found, v.leader, v.leads, v.state.Msgs, v.state.FirstSeq, v.state.LastSeq)
			}
			c.t.Fatalf("stream %s: the nodes never agreed on a leader and its state:%s", name, b.String())
		case <-tick.C:
		}
	}
}

func agreed(names []string, views []streamView) (int, bool) {
	leader := -1
	for i, v := range views {
		if !v.running || !v.found || v.leader == "" || v.leader != views[0].leader {
			return -1, false
		}
		if v.leads {
			if leader >= 0 || names[i] != v.leader {
				return -1, false
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1, false
	}
	for _, v := range views {
		if v.state.LastSeq != views[leader].state.LastSeq || v.state.Msgs != views[leader].state.Msgs {
			return -1, false
		}
	}
	return leader, true
}
