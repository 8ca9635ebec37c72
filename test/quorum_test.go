package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// quorumBroker starts a broker on the external cluster c (its three client
// URLs, R3) with the quorum grace given, on dir.
func quorumBroker(t *testing.T, c *natsCluster, dir string, grace time.Duration) *testBroker {
	t.Helper()
	return startBroker(t, dir, func(cfg *config.Config) {
		cfg.NATSURL = c.ClientURLs()
		cfg.Replicas = 3
		cfg.NATSQuorumGrace = grace
	})
}

// order takes a new order (orderMaker's) from the prescriber on b and
// fails the test (naming it what) unless it is answered 200.
func (b *testBroker) order(t *testing.T, what string) *fhirgen.Generated {
	t.Helper()
	g := orderMaker(t)()
	if res := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); res.Status != 200 {
		t.Fatalf("%s: %d %s", what, res.Status, res.Body)
	}
	return g
}

// orderMaker makes distinct orders from one prescriber.
func orderMaker(t *testing.T) func() *fhirgen.Generated {
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	return func() *fhirgen.Generated {
		g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
}

// streamLeader is the server name leading stream name, as a client of urls
// is told.
func streamLeader(t *testing.T, ctx context.Context, urls, name string) string {
	t.Helper()
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if cl := s.CachedInfo().Cluster; cl != nil && cl.Leader != "" {
		return cl.Leader
	}
	t.Fatalf("stream %s has no leader", name)
	return ""
}

// readySample is one /readyz answer that was not 200.
type readySample struct {
	broker int
	at     time.Time
	status int
	body   string
}

// sampleReady polls every broker's /readyz until stop is closed and
// returns the answers that were not 200 (no answer within 5 s counts as 0).
func sampleReady(brokers []*testBroker, stop <-chan struct{}) func() []readySample {
	var mu sync.Mutex
	var out []readySample
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for k, b := range brokers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond): // the sampling period
				}
				status, body := 0, ""
				if res, err := client.Get(b.URL + "/readyz"); err != nil {
					body = err.Error()
				} else {
					status = res.StatusCode
					rb, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
					body = string(rb)
					res.Body.Close()
				}
				if status != http.StatusOK {
					mu.Lock()
					out = append(out, readySample{k, time.Now(), status, body})
					mu.Unlock()
				}
			}
		})
	}
	return func() []readySample {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

// One NATS node of three lost is a leader election, not an outage: the
// node leading EPS_EVENTS is stopped under two brokers, and /readyz on
// both stays 200 through the election (a 503 only once the quorum grace
// has passed since the stop), and orders are accepted after it. Two nodes
// stopped is no quorum: an order answers 503 with Retry-After at once, and
// /readyz turns 503, naming a stream, once the grace has passed.
func TestReadinessThroughLeaderElection(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	// Generous: elections on this shared machine have taken up to about
	// 22 s (report17-faults); the production default is 15 s.
	const grace = 40 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := startNATSCluster(t, 3)
	dirs := []string{t.TempDir(), t.TempDir()}
	key := sharedKeys(t, dirs...)
	brokers := []*testBroker{quorumBroker(t, c, dirs[0], grace), quorumBroker(t, c, dirs[1], grace)}
	waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	tok, err := auth.Mint(key, auth.DefaultIssuer, auth.DefaultAudience,
		auth.Principal{Subject: "prescriber-user-A83008", ODS: "A83008", Role: auth.RolePrescriber}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	order := orderMaker(t)
	for k, b := range brokers {
		if res := b.post(tok, order().Body); res.Status != 200 {
			t.Fatalf("broker %d: order with every node up: %d %s", k, res.Status, res.Body)
		}
	}

	leader := streamLeader(t, ctx, c.ClientURLs(), broker.StreamEvents)
	lost := c.nodeOf(leader)
	if lost < 0 {
		t.Fatalf("EPS_EVENTS leader %q is none of the nodes", leader)
	}
	stop := make(chan struct{})
	samples := sampleReady(brokers, stop)
	stoppedAt := time.Now()
	c.StopNode(lost)
	// The election is over when EPS_EVENTS has a new leader and a current
	// follower, and an order is accepted on each broker.
	var others []string
	for i := range c.cl.Size() {
		if i != lost {
			others = append(others, c.clientURL(i))
		}
	}
	waitStreamReplicas(t, ctx, strings.Join(others, ","), 2, broker.StreamEvents)
	for k, b := range brokers {
		for {
			res := postBounded(t, b, tok, order().Body)
			if res.Status == 200 {
				break
			}
			if res.Status != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
				t.Fatalf("broker %d: order during the election: %d %s, want 200 or 503 with Retry-After", k, res.Status, res.Body)
			}
			if ctx.Err() != nil {
				t.Fatalf("broker %d: no order accepted after node %d stopped", k, lost)
			}
			time.Sleep(200 * time.Millisecond) // the client's retry, after its Retry-After
		}
	}
	waitBrokerStreams(t, ctx, strings.Join(others, ","), 2)
	close(stop)
	for _, s := range samples() {
		if s.at.Sub(stoppedAt) < grace {
			t.Errorf("broker %d: /readyz %d %v after one node of three stopped, within the %v grace: %s",
				s.broker, s.status, s.at.Sub(stoppedAt).Round(time.Millisecond), grace, s.body)
		}
	}

	// Two nodes of three stopped: no quorum.
	second := (lost + 1) % 3
	stoppedAt = time.Now()
	c.StopNode(second)
	b := brokers[0]
	res := postBounded(t, b, tok, order().Body)
	if res.Status != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("order without quorum: %d Retry-After %q %s, want 503 with Retry-After", res.Status, res.Header.Get("Retry-After"), res.Body)
	}
	body := waitReady(t, b, http.StatusServiceUnavailable, grace+90*time.Second)
	if since := time.Since(stoppedAt); since < grace {
		t.Errorf("/readyz 503 %v after the quorum was lost, before the %v grace: %s", since, grace, body)
	}
	if !strings.Contains(body, "stream ") && !strings.Contains(body, "NATS connection") {
		t.Errorf("/readyz without quorum names no stream: %s", body)
	}
}

// A broker on a NATS node cut off from the majority moves to the
// majority: its connection to that node stays healthy, but its streams
// have no leader there; once that has lasted longer than the quorum grace,
// it reconnects to another server of its list and serves orders again.
func TestBrokerLeavesMinorityNode(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	const grace = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startNATSCluster(t, 3)
	b := quorumBroker(t, c, t.TempDir(), grace)
	waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	tok := b.token(auth.RolePrescriber, "A83008")
	order := orderMaker(t)
	if res := b.post(tok, order().Body); res.Status != 200 {
		t.Fatalf("order with every node up: %d %s", res.Status, res.Body)
	}
	on := b.App.NATS.Conn.ConnectedServerName()
	cut := c.nodeOf(on)
	var others []string
	for i := range c.cl.Size() {
		if i != cut {
			others = append(others, c.clientURL(i))
		}
	}
	if cut < 0 {
		t.Fatalf("broker on server %q, none of the nodes", on)
	}
	c.Partition(cut, cutDrop)
	defer c.Heal(cut)

	// Orders are retried as a client would, after 503 + Retry-After,
	// until one is accepted; it must be through another node.
	var unavailable int
	for {
		g := order()
		res := postBounded(t, b, tok, g.Body)
		if res.Status == 200 {
			if now := b.App.NATS.Conn.ConnectedServerName(); now == on {
				t.Fatalf("order %s accepted through the cut-off node %s", g.ShortID, on)
			}
			break
		}
		if res.Status != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Fatalf("order during the partition: %d %s, want 200 or 503 with Retry-After", res.Status, res.Body)
		}
		unavailable++
		if ctx.Err() != nil {
			t.Fatalf("broker still on node %d (%s) after the partition, %d orders answered 503, %d reconnects forced",
				cut, b.App.NATS.Conn.ConnectedServerName(), unavailable, b.App.Quorum.Forced())
		}
		time.Sleep(200 * time.Millisecond) // the client's retry, after its Retry-After
	}
	if b.App.Quorum.Forced() == 0 {
		t.Errorf("the broker moved off node %d without a forced reconnect", cut)
	}
	waitReady(t, b, http.StatusOK, 60*time.Second)
	t.Logf("moved from %s to %s after %d orders answered 503; %d reconnects forced",
		on, b.App.NATS.Conn.ConnectedServerName(), unavailable, b.App.Quorum.Forced())

	c.Heal(cut)
	waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	if res := b.post(tok, order().Body); res.Status != 200 {
		t.Errorf("order after the heal: %d %s", res.Status, res.Body)
	}
}

// countingProxy forwards loopback TCP connections to target and counts
// those it accepted.
type countingProxy struct {
	ln       net.Listener
	accepted atomic.Int64
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { in.Close(); out.Close() })
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

// --nats-cluster-advertise is the route address the other nodes dial: node
// C advertises a proxy in front of its route listener, and node A, which
// knows C only from the cluster's gossip (its one configured route is B),
// reaches C through the proxy. A advertises a closed port, so that the
// route between A and C can only be A's dial.
func TestClusterAdvertise(t *testing.T) {
	// Not parallel: beside other clusters its three-node start lost quorum
	// in a CI dry run (2 cores).
	cfgs := clusterConfigs(t, 3, secretAuth(t))
	route := func(i int) string { return "nats-route://" + cfgs[i].NATSClusterListen }
	proxy := newCountingProxy(t, cfgs[2].NATSClusterListen)
	cfgs[0].NATSRoutes, cfgs[0].NATSClusterAdvertise = route(1), "127.0.0.1:1"
	cfgs[1].NATSRoutes = route(0) + "," + route(2)
	cfgs[2].NATSRoutes, cfgs[2].NATSClusterAdvertise = route(1), proxy.ln.Addr().String()
	for i := range cfgs {
		if err := cfgs[i].Validate(); err != nil {
			t.Fatal(err)
		}
	}
	// B tells the routes it has of a route that joins it (nats-server's
	// gossip goes one way): A hears of C, and dials C's advertised
	// address, only if A was routed to B before C was. Were C first, B
	// would tell C of A instead, and C cannot reach A's advertised
	// address (as meant): so C starts once A and B are routed (seen: the
	// other order left A and C unrouted, at random).
	starting := []*startingNode{startInBackground(t, cfgs[0]), startInBackground(t, cfgs[1])}
	for _, n := range starting {
		waitLogged(t, n, "Route connection created", 90*time.Second)
	}
	starting = append(starting, startInBackground(t, cfgs[2]))
	var brokers []*testBroker
	for _, n := range starting {
		brokers = append(brokers, n.started(t, 2*time.Minute))
	}
	a := brokers[0].App.NATS.Embedded
	deadline := time.Now().Add(90 * time.Second)
	for {
		rz, err := a.Routez(&server.RoutezOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var toC bool
		var seen []string
		for _, r := range rz.Routes {
			toC = toC || r.RemoteName == cfgs[2].NATSServerName
			seen = append(seen, fmt.Sprintf("%s %s:%d solicited=%v", r.RemoteName, r.IP, r.Port, r.DidSolicit))
		}
		if toC && proxy.accepted.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no route from A to C through C's advertised address (proxy accepted %d); A's routes: %v",
				proxy.accepted.Load(), seen)
		}
		time.Sleep(100 * time.Millisecond) // polling Routez, the condition itself
	}
	waitReplicated(t, brokers[0].App.Store.JetStream(), 3)
}

// waitLogged waits, up to bound, until n (starting) has logged a line
// containing snippet (its embedded server's lines among them).
func waitLogged(t *testing.T, n *startingNode, snippet string, bound time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(bound); n.logs.FilterMessageSnippet(snippet).Len() == 0; {
		select {
		case err := <-n.done:
			t.Fatalf("%s ended its start-up before logging %q: %v", n.cfg.NATSServerName, snippet, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no %q in %s", n.cfg.NATSServerName, snippet, bound)
		}
		time.Sleep(20 * time.Millisecond) // polling the recorded log, the condition itself
	}
}
