package test

import (
	"bytes"
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
// stops or is cut off. The index reads the event log through its own
// consumer, an R1 consumer on one node; when that node stops, or is cut
// off from the others (its routes blackholed, the node still running),
// while the broker stays connected to another, nothing tells the client
// but the missing idle heartbeats (broker.ConsumeHeartbeat), after which
// the consumer is made again on a live node (broker's ordered consumer:
// each attempt bounded, under a new name). An order acknowledged after the
// loss is then found by a nominated release, which waits for the index at
// most service.CatchUpTimeout and answers 503 otherwise: the test waits
// for nothing but the release's own answer. The times (loss to order, loss
// to the index applying it) are logged as figures, not asserted.
//
// The cases: the node stopped, with the event log led by another node
// (orders are taken at once: the index alone is measured) and by the same
// node (the log elects a leader meanwhile); the node cut off while another
// node is the JetStream meta leader; and cut off while it is the meta
// leader itself: a consumer can be made only once the others have elected
// another (raft's election timeout, 4 to 9 s), so there the release is
// asked again after each 503, as a client does, until it hands the order
// over. Cut off with the meta leader elsewhere, a release may also be
// asked again, but only after a 503 of another cause than the ready
// queues catching up (a read of the store sent through the cut).
func TestTrackerIndexResumesAfterNodeStop(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	t.Run("log led elsewhere", func(t *testing.T) { trackerIndexAfterNodeLoss(t, lossStop, false) })
	t.Run("log led by the same node", func(t *testing.T) { trackerIndexAfterNodeLoss(t, lossStop, true) })
	t.Run("node cut off", func(t *testing.T) { trackerIndexAfterNodeLoss(t, lossCut, false) })
	t.Run("node cut off, the meta leader", func(t *testing.T) { trackerIndexAfterNodeLoss(t, lossCutMeta, false) })
}

// nodeLoss is how the node of the index's consumer is lost.
type nodeLoss int

const (
	lossStop    nodeLoss = iota // stopped
	lossCut                     // cut off (routes blackholed); another node is the meta leader
	lossCutMeta                 // cut off, and the meta leader
)

func (l nodeLoss) String() string {
	return [...]string{"stopped", "cut off", "cut off (the meta leader)"}[l]
}

// trackerIndexAfterNodeLoss loses the node of the index's consumer as
// loss says, with the event log led by that node (sameNode) or another.
func trackerIndexAfterNodeLoss(t *testing.T, loss nodeLoss, sameNode bool) {
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
	// indexConsumer is the index's consumer, as the broker names it,
	// once it has one with a leader.
	indexConsumer := func() *jetstream.ConsumerInfo {
		for {
			if name := b.App.Tracker.State().Consumer; name != "" {
				qctx, qcancel := rctx()
				cons, err := js.Consumer(qctx, broker.StreamEvents, name)
				qcancel()
				if err == nil && cons.CachedInfo().Cluster != nil && cons.CachedInfo().Cluster.Leader != "" {
					return cons.CachedInfo()
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("the index's consumer: none with a leader (%s)", b.App.Tracker.State())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	indexHost := func() int { return nodeOf(indexConsumer().Cluster.Leader) }
	streamLeader := func() int {
		qctx, qcancel := rctx()
		defer qcancel()
		st, err := js.Stream(qctx, broker.StreamEvents)
		if err != nil || st.CachedInfo().Cluster == nil {
			return -1
		}
		return nodeOf(st.CachedInfo().Cluster.Leader)
	}
	// metaLeader is the node that says it is the JetStream meta leader
	// (asked in process).
	metaLeader := func() int {
		for i := range c.names {
			if srv := c.cl.Server(i); srv != nil && srv.JetStreamIsLeader() {
				return i
			}
		}
		return -1
	}
	brokerNode := func() int { return nodeOf(b.App.NATS.Conn.ConnectedServerName()) }

	// The broker connected to another node than the one to lose (a client
	// picks its server at random: restart until it is so), so that its
	// connection survives; when the meta leader is to be lost, the broker
	// is on another node than the meta leader.
	if loss == lossCutMeta {
		c.waitMeta(ctx)
		for attempt := 0; brokerNode() == metaLeader(); attempt++ {
			if attempt == 12 {
				t.Fatalf("the broker is on the meta leader's node after %d restarts", attempt)
			}
			b.stop()
			b = start()
		}
	}
	// The index's consumer on a node that suits the case: not the
	// broker's; the meta leader or not (cut off). The broker makes its
	// consumer again, wherever the meta leader places it, when the
	// consumer is deleted: delete it until it is placed so.
	suits := func(host int) bool {
		switch loss {
		case lossCut:
			return host != brokerNode() && host != metaLeader()
		case lossCutMeta:
			return host == metaLeader()
		}
		return host != brokerNode()
	}
	// The event log led by another node than the index's consumer, or by
	// the same one: its leader is moved (a step down) until it is so.
	// Both are checked again after each change (a consumer made again for
	// any reason meanwhile is placed anew).
	placed := func(host int) bool {
		l := streamLeader()
		return l >= 0 && (l == host) == sameNode
	}
	var host int
	for attempt := 0; ; attempt++ {
		host = indexHost()
		if suits(host) && placed(host) {
			break
		}
		if attempt == 30 {
			t.Fatalf("the index's consumer is on node %d (broker on %d, meta leader %d, event log led by %d) after %d changes",
				host, brokerNode(), metaLeader(), streamLeader(), attempt)
		}
		if !suits(host) {
			old := indexConsumer().Name
			dctx, dcancel := rctx()
			if err := js.DeleteConsumer(dctx, broker.StreamEvents, old); err != nil {
				t.Fatal(err)
			}
			dcancel()
			for indexConsumer().Name == old {
				select {
				case <-ctx.Done():
					t.Fatalf("the index's consumer was not made again after %s was deleted", old)
				case <-time.After(50 * time.Millisecond):
				}
			}
			continue
		}
		if streamLeader() >= 0 {
			if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+broker.StreamEvents, nil, 5*time.Second); err != nil {
				t.Logf("step down: %v", err)
			}
		}
		waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	}
	t.Logf("broker on node %d, index consumer %s on node %d, event log led by node %d, meta leader node %d",
		brokerNode(), indexConsumer().Name, host, streamLeader(), metaLeader())

	lost := time.Now()
	if loss == lossStop {
		c.StopNode(host)
	} else {
		c.Partition(host, cutDrop)
	}
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	order := func(id string) (*fhirgen.Generated, uint64) {
		g, _ := tmpl.Order(fhirgen.Options{Performer: "FCG71"})
		tok := b.token(auth.RolePrescriber, "A83008")
		for {
			res := b.post(tok, g.Body, "X-Request-ID", id)
			if res.Status == 200 {
				return g, b.App.Store.LastWritten()
			}
			if res.Status != 503 || ctx.Err() != nil {
				t.Fatalf("order %s: %d %s", id, res.Status, res.Body)
			}
			time.Sleep(100 * time.Millisecond) // the client's retry after a 503
		}
	}
	g, seq := order("order-after-loss")
	ordered := time.Since(lost)
	// The figure: when the index applied the order, watched from now on
	// (a bound only for the figure's sake; the test's verdict is the
	// release below).
	type applied struct {
		after time.Duration
		err   error
	}
	indexed := make(chan applied, 1)
	go func() {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		err := b.App.Tracker.Index.WaitApplied(wctx, seq)
		indexed <- applied{time.Since(lost), err}
	}()

	// The release. When the node was stopped, its first answer is the
	// verdict. Cut off, a release is asked again after a 503 as a client
	// does (a read of the store sent through the cut may get no answer
	// until the routes are seen down), until the test's deadline; with the
	// meta leader elsewhere, none may answer that the ready queues are
	// catching up (the index resumed within the release's own wait); with
	// the meta leader cut off too, they may, until the others have
	// elected another and the index's consumer is made again.
	var res *response
	var unavailable []string
	for {
		res = b.release("FCG71", "")
		if res.Status != 503 || loss == lossStop || ctx.Err() != nil {
			break
		}
		catchingUp := bytes.Contains(res.Body, []byte("ready queues are catching up"))
		unavailable = append(unavailable, map[bool]string{true: "ready queues catching up", false: "other"}[catchingUp])
		if catchingUp && loss == lossCut {
			break
		}
	}
	releasedAt := time.Since(lost)
	var ids []string
	if res.Status == 200 {
		ids, _ = released(t, res)
	}
	ix := <-indexed
	t.Logf("FIGURES: node %d %v; order acknowledged after %v; index applied the order (event %d) after %v (%v); release answered %d after %v (503 before: %v)",
		host, loss, ordered.Round(time.Millisecond), seq, ix.after.Round(time.Millisecond), ix.err, res.Status, releasedAt.Round(time.Millisecond), unavailable)
	if res.Status != 200 || !slices.Contains(ids, g.ShortID) {
		t.Fatalf("the release after the node was %v: %d, released %v, want %s: %.300s", loss, res.Status, ids, g.ShortID, res.Body)
	}
	if loss == lossStop {
		return
	}

	// The notifier's shared durable consumer stores the order's
	// notifications while the node is cut off, and after it is let back
	// in; the index takes the next order after the heal too.
	if err := b.App.Notifier().WaitApplied(ctx, seq); err != nil {
		t.Fatalf("notifications of the order while node %d is cut off: %v", host, err)
	}
	t.Logf("FIGURES: notifications of the order stored after %v", time.Since(lost).Round(time.Millisecond))
	c.Heal(host)
	healed := time.Now()
	waitBrokerStreams(t, ctx, c.ClientURLs(), 3)
	g2, seq2 := order("order-after-heal")
	if err := b.App.Notifier().WaitApplied(ctx, seq2); err != nil {
		t.Fatalf("notifications of the order after the heal: %v", err)
	}
	// Asked again after a 503, as a client does: the healed node rejoins
	// the meta layer and may answer a read meanwhile that JetStream is
	// not available there.
	for res = b.release("FCG71", ""); res.Status == 503 && ctx.Err() == nil; res = b.release("FCG71", "") {
	}
	if res.Status != 200 {
		t.Fatalf("the release after the heal: %d %.300s", res.Status, res.Body)
	}
	if ids, _ = released(t, res); !slices.Contains(ids, g2.ShortID) {
		t.Fatalf("the release after the heal released %v, want %s", ids, g2.ShortID)
	}
	t.Logf("FIGURES: after the heal, streams current, order taken, notified and released after %v", time.Since(healed).Round(time.Millisecond))
}
