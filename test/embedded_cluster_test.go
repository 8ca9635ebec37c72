package test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/internal/natscluster"
)

// clusterNode is one broker of an embedded cluster: its settings (kept to
// start it again on the same data dir and route port) and, while it runs,
// the broker.
type clusterNode struct {
	cfg  config.Config
	b    *testBroker
	logs *observer.ObservedLogs // everything it logged, at every level
}

// freePorts picks n free loopback ports (natscluster.FreePorts) for the
// route listeners, which every node must know before any starts.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := natscluster.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// clusterConfigs are the settings of n brokers whose embedded servers form
// one cluster: each its own data dir, route port and server name, all the
// same routes (each node's own among them), pseudonym key and route
// authentication (auth sets it).
func clusterConfigs(t *testing.T, n int, auth func(*config.Config)) []config.Config {
	t.Helper()
	shared := t.TempDir()
	if _, err := broker.LoadOrCreatePseudonymKey(shared, ""); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	cfgs := make([]config.Config, n)
	for i := range n {
		c := config.Default()
		c.DataDir = t.TempDir()
		c.HTTPAddr = "127.0.0.1:0"
		c.PseudonymKey = broker.PseudonymKeyPath(shared)
		c.NATSClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[i])
		c.NATSRoutes = strings.Join(routes, ",")
		c.NATSServerName = fmt.Sprintf("eps-%c", 'a'+i)
		c.NATSClusterWait = 90 * time.Second
		auth(&c)
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		cfgs[i] = c
	}
	return cfgs
}

// secretAuth authenticates the routes with a shared secret file.
func secretAuth(t *testing.T) func(*config.Config) {
	file := filepath.Join(t.TempDir(), "route-secret")
	if err := os.WriteFile(file, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) { c.NATSClusterSecretFile = file }
}

// mtlsAuth authenticates the routes with mutual TLS: one certificate for
// 127.0.0.1, good for server and client, that is its own CA. A node takes
// a route only from a certificate with the route's host as a DNS name
// (nats-server's known-URL check compares DNS names only): the routes here
// are 127.0.0.1, so the certificate carries it as a DNS name too.
func mtlsAuth(t *testing.T) func(*config.Config) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "eps-route"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"127.0.0.1"}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cert, keyFile := filepath.Join(dir, "route.pem"), filepath.Join(dir, "route-key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return func(c *config.Config) {
		c.NATSClusterTLSCert, c.NATSClusterTLSKey, c.NATSClusterTLSCA = cert, keyFile, cert
	}
}

// startCluster starts the brokers of cfgs at once (app.New waits for the
// cluster's meta leader, which needs a majority of the nodes up).
func startCluster(t *testing.T, cfgs []config.Config) []*clusterNode {
	t.Helper()
	nodes := make([]*clusterNode, len(cfgs))
	for i, c := range cfgs {
		nodes[i] = &clusterNode{cfg: c}
	}
	startNodes(t, nodes...)
	return nodes
}

// startNodes starts the given nodes concurrently and fails the test when one
// does not start.
func startNodes(t *testing.T, nodes ...*clusterNode) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() { n.b, n.logs, errs[i] = startClusterBrokerLogs(t, n.cfg) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// startClusterBroker is startBroker for a goroutine: it returns the error.
func startClusterBroker(t *testing.T, cfg config.Config) (*testBroker, error) {
	b, _, err := startClusterBrokerLogs(t, cfg)
	return b, err
}

// startClusterBrokerLogs is startClusterBroker that also returns what the
// broker logs (at every level, the embedded server's debug lines too): a
// start in the background (startInBackground) waited for.
func startClusterBrokerLogs(t *testing.T, cfg config.Config) (*testBroker, *observer.ObservedLogs, error) {
	n := startInBackground(t, cfg)
	if err := <-n.done; err != nil {
		return nil, nil, err
	}
	t.Cleanup(n.b.stop)
	return n.b, n.logs, nil
}

// brokerStreams are the streams (buckets by their streams) the broker
// writes, all replicated alike.
var brokerStreams = []string{broker.StreamEvents, broker.StreamAudit, broker.StreamNotify, broker.StreamDead,
	"KV_" + broker.BucketRequests, "KV_" + broker.BucketSessions, "KV_" + broker.BucketNominations}

// waitReplicated waits until every stream of the broker, configured with
// want replicas, has a leader and want-1 current followers, and the
// projector's durable consumer too.
func waitReplicated(t *testing.T, js jetstream.JetStream, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	waitStreamsCurrent(t, ctx, js, want, brokerStreams...)
	for _, name := range brokerStreams {
		if _, configured, why := natscluster.StreamCurrent(ctx, js, name); configured != want {
			t.Fatalf("stream %s: replicas %d, want %d (%s)", name, configured, want, why)
		}
	}
	for {
		c, err := js.Consumer(ctx, broker.StreamEvents, broker.ConsumerQueueProjector)
		if err == nil {
			ci := c.CachedInfo()
			if ci.Cluster != nil && ci.Cluster.Leader != "" && len(ci.Cluster.Replicas) == want-1 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer %s not replicated %d ways: %v", broker.ConsumerQueueProjector, want, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Three brokers, each with its own data dir and route port, their embedded
// servers routed with a shared secret, form one cluster with nothing else
// installed: the streams and buckets are R3 (replicas auto), and an order
// acknowledged by broker A is released by its dispenser through broker B
// and found by a tracker search on broker C.
func TestEmbeddedCluster(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	nodes := startCluster(t, clusterConfigs(t, 3, secretAuth(t)))
	a, b, c := nodes[0].b, nodes[1].b, nodes[2].b
	waitReplicated(t, a.App.Store.JetStream(), 3)

	g := a.order(t, "order on A")
	// C's tracker index holds the log as it is now (the notifications'
	// consumer is shared: another instance may have applied them).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.App.Tracker.Index.WaitApplied(ctx, a.App.Store.LastWritten()); err != nil {
		t.Fatalf("C's tracker index did not apply A's order: %v", err)
	}
	res := c.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, c.token(auth.RoleTracker, "X26"), nil)
	if ids, _, total := groups(t, res); total != 1 || len(ids) != 1 || ids[0] != g.ShortID {
		t.Errorf("tracker search on C for the order A acknowledged: %v (total %d) %s", ids, total, res.Body)
	}
	ids, _ := released(t, b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RoleDispenser, "FA565"), releaseBody(t, "FA565", "")))
	if !slices.Equal(ids, []string{g.ShortID}) {
		t.Fatalf("B released %v, want the order A acknowledged, %s", ids, g.ShortID)
	}
	// The route secret is in no log line, at any level.
	secret, err := os.ReadFile(nodes[0].cfg.NATSClusterSecretFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, e := range n.logs.All() {
			if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, strings.TrimSpace(string(secret))) {
				t.Errorf("%s logged the route secret: %s", n.cfg.NATSServerName, line)
			}
		}
	}
	if n := nodes[0].logs.FilterMessage("embedded NATS server is a cluster node").Len(); n != 1 {
		t.Errorf("the cluster node was logged %d times, want once", n)
	}
}

// Mutual TLS on the routes (each node verifies its peers' certificates
// against the CA) forms the cluster too, here with a JetStream domain.
func TestEmbeddedClusterMutualTLS(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	tls := mtlsAuth(t)
	nodes := startCluster(t, clusterConfigs(t, 3, func(c *config.Config) { tls(c); c.JetStreamDomain = "eps" }))
	waitReplicated(t, nodes[0].b.App.Store.JetStream(), 3)
	for _, n := range nodes {
		if r := n.b.App.NATS.Embedded.NumRoutes(); r < 2 {
			t.Errorf("%s has %d routes, want 2", n.cfg.NATSServerName, r)
		}
		if d := n.b.App.NATS.Embedded.JetStreamConfig().Domain; d != "eps" {
			t.Errorf("%s JetStream domain %q, want eps", n.cfg.NATSServerName, d)
		}
	}
}

// A cluster node whose routes would not authenticate does not start: the
// settings are refused with what to set, before anything is opened.
func TestClusterNodeWithoutRouteAuthRefused(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSClusterListen = "127.0.0.1:0"
	cfg.NATSServerName = "eps-a"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "routes must authenticate") {
		t.Fatalf("Validate = %v, want the routes' authentication asked for", err)
	}
	if _, err := app.New(context.Background(), cfg, zaptest.NewLogger(t), nil); err == nil || !strings.Contains(err.Error(), "routes must authenticate") {
		t.Fatalf("app.New = %v, want the routes' authentication asked for", err)
	}
}

// getStatus is a GET of path on b with a client bounded by bound: a request
// that hangs past it fails the test (it must be answered, not waited on).
func getStatus(t *testing.T, b *testBroker, path string, bound time.Duration) (int, string) {
	t.Helper()
	res, err := (&http.Client{Timeout: bound}).Get(b.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// waitReady polls b's /readyz until it answers want, within bound, and
// returns the body.
func waitReady(t *testing.T, b *testBroker, want int, bound time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		status, body := getStatus(t, b, "/readyz", 10*time.Second)
		if status == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after %v, want %d: %s", status, bound, want, body)
		}
		time.Sleep(200 * time.Millisecond) // polling /readyz, the condition itself
	}
}

// postBounded posts an order to b with a client bounded by the broker's
// HTTP write timeout: the broker must answer within it, whatever NATS does.
func postBounded(t *testing.T, b *testBroker, token string, body []byte, headers ...string) *response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.URL+"/FHIR/R4/$process-message", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := (&http.Client{Timeout: b.App.Config().HTTPWriteTimeout}).Do(req)
	if err != nil {
		t.Fatalf("order not answered within the HTTP write timeout: %v", err)
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	return &response{Status: res.StatusCode, Header: res.Header, Body: rb}
}

// Without quorum the broker says so and answers, and acknowledges nothing:
// two of three nodes stopped, the third broker's /readyz is 503 naming a
// stream without a leader while /healthz stays 200 (restarting the process
// would not help), and an order is answered 503 with Retry-After within
// the HTTP write timeout (not a 500, not a hang). With the nodes back,
// /readyz is 200 again and the orders retried are each stored once.
func TestEmbeddedClusterWithoutQuorum(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	nodes := startCluster(t, clusterConfigs(t, 3, secretAuth(t)))
	a := nodes[0].b
	waitReplicated(t, a.App.Store.JetStream(), 3)
	presc := a.token(auth.RolePrescriber, "A83008")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	order := func() *fhirgen.Generated {
		g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	if res := a.post(presc, order().Body); res.Status != 200 {
		t.Fatalf("order with quorum: %d %s", res.Status, res.Body)
	}

	nodes[1].b.stop()
	nodes[2].b.stop()
	body := waitReady(t, a, http.StatusServiceUnavailable, 90*time.Second)
	if !strings.Contains(body, "stream EPS_") && !strings.Contains(body, "stream KV_EPS_") {
		t.Errorf("/readyz without quorum does not name a stream: %s", body)
	}
	if status, body := getStatus(t, a, "/healthz", 10*time.Second); status != 200 {
		t.Errorf("/healthz without quorum: %d %s, want 200 (the process is sound)", status, body)
	}
	withID, withoutID := order(), order()
	for _, tc := range []struct {
		g       *fhirgen.Generated
		headers []string
	}{{withID, []string{"X-Request-ID", "c1f6a7e2-quorum-test"}}, {withoutID, nil}} {
		res := postBounded(t, a, presc, tc.g.Body, tc.headers...)
		if res.Status != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
			t.Errorf("order %s without quorum (headers %v): %d Retry-After %q %s, want 503 with Retry-After",
				tc.g.ShortID, tc.headers, res.Status, res.Header.Get("Retry-After"), res.Body)
		}
	}

	startNodes(t, nodes[1], nodes[2])
	waitReady(t, a, http.StatusOK, 120*time.Second)
	// The X-Request-ID retried: its answer, or (when the reservation the
	// 503 could not confirm was stored after all) 409 "still being
	// processed" with Retry-After until service.AbandonAfter lets a retry
	// take it over; never a 500 or a second copy.
	res := postBounded(t, a, presc, withID.Body, "X-Request-ID", "c1f6a7e2-quorum-test")
	if res.Status != 200 && (res.Status != http.StatusConflict || res.Header.Get("Retry-After") == "") {
		t.Errorf("order %s retried under its X-Request-ID with quorum back: %d %s", withID.ShortID, res.Status, res.Body)
	}
	// Each order retried is accepted, and stored once.
	for _, g := range []*fhirgen.Generated{withID, withoutID} {
		if res := postBounded(t, a, presc, g.Body); res.Status != 200 {
			t.Errorf("order %s retried with quorum back: %d %s", g.ShortID, res.Status, res.Body)
		}
		if n := a.events(g.ShortID); n != 1 {
			t.Errorf("order %s stored %d times, want once", g.ShortID, n)
		}
	}
}

// A deployment whose streams and buckets were made R1 (--replicas 1) is
// moved to R3 by starting it with replicas auto: every stream and bucket is
// scaled (the nominations bucket, only opened once it exists, too), and the
// durable consumers follow their stream; what was stored stays.
func TestEmbeddedClusterScalesToR3(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	cfgs := clusterConfigs(t, 3, secretAuth(t))
	for i := range cfgs {
		cfgs[i].Replicas = 1
	}
	nodes := startCluster(t, cfgs)
	a := nodes[0].b
	waitReplicated(t, a.App.Store.JetStream(), 1)
	g := a.order(t, "order on R1")
	for _, n := range nodes {
		n.b.stop()
		n.cfg.Replicas = 0 // auto: 3 on a cluster
	}
	startNodes(t, nodes...)
	b := nodes[1].b
	waitReplicated(t, b.App.Store.JetStream(), 3)
	if n := b.events(g.ShortID); n != 1 {
		t.Errorf("order stored on R1 found %d times after the scale to R3, want once", n)
	}
}

// startExternalCluster starts a three-node NATS cluster (plain servers, as
// an operator runs them: internal/natscluster) and returns it and its
// client URLs.
func startExternalCluster(t *testing.T) (*natscluster.Cluster, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := natscluster.Options{Name: "ext", SyncAlways: true, NoLog: true}
	for i := range 3 {
		o.ServerNames, o.StoreDirs = append(o.ServerNames, fmt.Sprintf("ext-%d", i)), append(o.StoreDirs, t.TempDir())
	}
	cl, err := natscluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Shutdown)
	return cl, cl.ClientURLs()
}

// With --nats-url listing the nodes of an external cluster, replicas auto
// is 3 (the server's INFO names its cluster); when the node the broker is
// connected to goes, the broker reconnects to another, /readyz comes back
// to 200 once the streams have their leaders again, and orders are taken.
func TestExternalClusterReplicasAndFailover(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	cl, urls := startExternalCluster(t)
	b := startBroker(t, "", func(c *config.Config) { c.NATSURL = strings.Join(urls, ","); c.NATSClusterWait = 90 * time.Second })
	js := b.App.Store.JetStream()
	waitReplicated(t, js, 3)
	presc := b.token(auth.RolePrescriber, "A83008")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	if err != nil {
		t.Fatal(err)
	}
	if res := b.post(presc, g.Body); res.Status != 200 {
		t.Fatalf("order: %d %s", res.Status, res.Body)
	}
	connected := b.App.NATS.Conn.ConnectedServerName()
	for i := range cl.Size() {
		if cl.Server(i).Name() == connected {
			cl.StopNode(i)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if now := b.App.NATS.Conn.ConnectedServerName(); now != connected && now != "" && b.App.NATS.Conn.IsConnected() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reconnected to another node in 30s after %s went (status %s)", connected, b.App.NATS.Conn.Status())
		}
		time.Sleep(50 * time.Millisecond) // polling the connection's state, the condition itself
	}
	waitReady(t, b, http.StatusOK, 90*time.Second)
	g2, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	if err != nil {
		t.Fatal(err)
	}
	if res := postBounded(t, b, presc, g2.Body); res.Status != 200 {
		t.Fatalf("order after the fail-over: %d %s", res.Status, res.Body)
	}
	if n := b.events(g.ShortID) + b.events(g2.ShortID); n != 2 {
		t.Errorf("orders stored %d times, want 2", n)
	}
}

// A single-node broker's data dir is not turned into a cluster node: the
// cluster would delete its streams as orphans (they are in none of its
// assignments), every acknowledged prescription with them. The broker
// refuses to start so, saying why, and the data dir still starts as the
// single node it was, its order there; a cluster node's data dir is
// refused as a single node likewise.
func TestSingleNodeDataDirNotTurnedIntoClusterNode(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	cfgs := clusterConfigs(t, 3, secretAuth(t))
	single := func(c *config.Config) { c.PseudonymKey = cfgs[0].PseudonymKey }
	b := startBroker(t, cfgs[0].DataDir, single)
	g := b.order(t, "order on the single node")
	b.stop()
	if _, err := startClusterBroker(t, cfgs[0]); !errors.Is(err, broker.ErrStoreKind) || !strings.Contains(err.Error(), "orphans") {
		t.Fatalf("a single node's data dir started as a cluster node: %v", err)
	}
	b = startBroker(t, cfgs[0].DataDir, single)
	if n := b.events(g.ShortID); n != 1 {
		t.Fatalf("the single node's order: %d events, want 1", n)
	}
	b.stop()

	nodes := startCluster(t, clusterConfigs(t, 3, secretAuth(t)))
	for _, n := range nodes {
		n.b.stop()
	}
	_, err := startClusterBroker(t, func() config.Config {
		c := config.Default()
		c.DataDir, c.HTTPAddr, c.PseudonymKey = nodes[0].cfg.DataDir, "127.0.0.1:0", nodes[0].cfg.PseudonymKey
		return c
	}())
	if !errors.Is(err, broker.ErrStoreKind) {
		t.Fatalf("a cluster node's data dir started as a single node: %v", err)
	}
}
