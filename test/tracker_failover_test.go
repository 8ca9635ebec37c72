package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The tracker index resumes soon after the NATS node holding its consumer
// stops. The index reads the event log through an ordered consumer, an R1
// consumer on one node; when that node stops while the broker stays
// connected to another, nothing tells the client but the missing idle
// heartbeats (broker.ConsumeHeartbeat), after which the consumer is made
// again on a live node. An order acknowledged after the stop is then
// found by a nominated release, which waits for the index at most
// service.CatchUpTimeout and answers 503 otherwise: the test waits for
// nothing but the release's own answer. The times (stop to order, stop to
// the index applying it) are logged as figures, not asserted. Twice: the
// event log led by another node (orders are taken at once: the index
// alone is measured), and led by the same node (the log elects a leader
// meanwhile).
func TestTrackerIndexResumesAfterNodeStop(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	t.Run("log led elsewhere", func(t *testing.T) { trackerIndexAfterNodeStop(t, false) })
	t.Run("log led by the same node", func(t *testing.T) { trackerIndexAfterNodeStop(t, true) })
}

func trackerIndexAfterNodeStop(t *testing.T, sameNode bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startNATSCluster(t, 3)
	dir := t.TempDir()
	start := func() *testBroker {
		return startBroker(t, dir, func(cfg *config.Config) {
			cfg.NATSURL = c.ClientURLs()
			cfg.Replicas = 3
		})
	}
	b := start()
	waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	nc, err := nats.Connect(c.ClientURLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	nodeOf := c.nodeOf
	rctx := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 5*time.Second) }
	// indexHost is the node holding the index's consumer: the newest
	// ordered (not durable) consumer of the event log.
	indexHost := func() int {
		qctx, qcancel := rctx()
		defer qcancel()
		st, err := js.Stream(qctx, broker.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		var newest *jetstream.ConsumerInfo
		for ci := range st.ListConsumers(qctx).Info() {
			if ci.Config.Durable == "" && (newest == nil || ci.Created.After(newest.Created)) {
				newest = ci
			}
		}
		if newest == nil || newest.Cluster == nil {
			t.Fatalf("no ordered consumer on %s", broker.StreamEvents)
		}
		return nodeOf(newest.Cluster.Leader)
	}
	streamLeader := func() int {
		qctx, qcancel := rctx()
		defer qcancel()
		st, err := js.Stream(qctx, broker.StreamEvents)
		if err != nil || st.CachedInfo().Cluster == nil {
			return -1
		}
		return nodeOf(st.CachedInfo().Cluster.Leader)
	}

	// The broker connected to another node than the index's consumer (a
	// client picks its server at random: restart until it is so), so that
	// its connection survives the stop.
	host := indexHost()
	for attempt := 0; host == nodeOf(b.App.NATS.Conn.ConnectedServerName()); attempt++ {
		if attempt == 8 {
			t.Fatalf("the broker is on the node of its index's consumer after %d restarts", attempt)
		}
		b.stop()
		b = start()
		host = indexHost()
	}
	// The event log led by another node than the index's consumer, or by
	// the same one.
	placed := func() bool {
		l := streamLeader()
		return l >= 0 && (l == host) == sameNode
	}
	for attempt := 0; !placed(); attempt++ {
		if attempt == 12 {
			t.Fatalf("the event log's leader is not where wanted (same node as the index's consumer, node %d: %v)", host, sameNode)
		}
		if streamLeader() >= 0 {
			if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+broker.StreamEvents, nil, 5*time.Second); err != nil {
				t.Logf("step down: %v", err)
			}
		}
		waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	}
	if h := indexHost(); h != host {
		t.Fatalf("the index's consumer moved from node %d to %d with the log's leader", host, h)
	}
	t.Logf("broker on node %d, index consumer on node %d, event log led by node %d",
		nodeOf(b.App.NATS.Conn.ConnectedServerName()), host, streamLeader())

	stopped := time.Now()
	c.StopNode(host)
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{Performer: "FCG71"})
	tok := b.token(auth.RolePrescriber, "A83008")
	for {
		res := b.post(tok, g.Body, "X-Request-ID", "order-after-stop")
		if res.Status == 200 {
			break
		}
		if res.Status != 503 || ctx.Err() != nil {
			t.Fatalf("order after the stop: %d %s", res.Status, res.Body)
		}
		time.Sleep(100 * time.Millisecond) // the client's retry after a 503
	}
	ordered := time.Since(stopped)
	seq := b.App.Store.LastWritten()

	res := b.release("FCG71", "")
	releasedAt := time.Since(stopped)
	var ids []string
	if res.Status == 200 {
		ids, _ = released(t, res)
	}
	// The figure: when the index applied the order (a bound only for the
	// figure's sake; the test's verdict is the release above).
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	werr := b.App.Tracker.Index.WaitApplied(wctx, seq)
	t.Logf("FIGURES: node %d stopped; order acknowledged after %v; release answered %d after %v; index applied the order (event %d) after %v (%v)",
		host, ordered.Round(time.Millisecond), res.Status, releasedAt.Round(time.Millisecond), seq, time.Since(stopped).Round(time.Millisecond), werr)
	if res.Status != 200 || !slices.Contains(ids, g.ShortID) {
		t.Fatalf("the release after the stop: %d, released %v, want %s: %.300s", res.Status, ids, g.ShortID, res.Body)
	}
}
