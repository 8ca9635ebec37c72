package test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
)

// inProcess is the deployment of the in-process fault tests: three
// embedded NATS nodes (natsCluster) and two broker instances started with
// app.New in external mode against them, with R3 streams.
type inProcess struct {
	t    *testing.T
	nats *natsCluster
	dirs []string
	mu   sync.Mutex
	b    []*testBroker // nil while stopped
}

func newInProcess(t *testing.T, ctx context.Context) (*inProcess, ed25519.PrivateKey) {
	d := &inProcess{t: t, nats: startNATSCluster(t, 3), dirs: []string{t.TempDir(), t.TempDir()}}
	d.b = make([]*testBroker, len(d.dirs))
	key := sharedKeys(t, d.dirs...)
	for k := range d.dirs {
		d.startBroker(k)
	}
	d.waitCurrent(ctx)
	return d, key
}

func (d *inProcess) brokers() int { return len(d.dirs) }

func (d *inProcess) eventLog(ctx context.Context) *eventCounts {
	return logCounts(d.t, ctx, d.nats.ClientURLs())
}

func (d *inProcess) later(ctx context.Context) string {
	return startLaterBroker(d.t, ctx, d.nats, d.dirs[0]).URL
}

// startLaterBroker starts a broker instance in external mode on cluster c
// (R3), with the keys of data dir keys, whose clock is ahead of the NATS
// servers' by more than service.AbandonAfter, and waits until its ready
// queues hold the event log. It starts once the cluster has a meta leader,
// every stream and bucket the broker opens (its scheduler lease's too) a
// leader and current replicas, and every durable consumer of the event
// log a leader: the broker's start does not wait for them (after a heal,
// opening the lease bucket timed out; on reopened stores, creating the
// queue projector's consumer did).
func startLaterBroker(t *testing.T, ctx context.Context, c *natsCluster, keys string) *testBroker {
	t.Helper()
	c.waitMeta(ctx)
	urls := c.ClientURLs()
	waitStreamReplicas(t, ctx, urls, 3, append(slices.Clone(brokerStreams), "KV_"+broker.BucketLeases)...)
	waitConsumersLed(t, ctx, urls, broker.StreamEvents)
	dir := t.TempDir()
	sharedKeys(t, keys, dir)
	later := func() time.Time { return time.Now().Add(service.AbandonAfter + time.Minute) }
	b := startBrokerClock(t, dir, later, func(c *config.Config) {
		c.NATSURL = urls
		c.Replicas = 3
	})
	if err := b.App.Tracker.CatchUp(ctx); err != nil {
		t.Fatalf("later broker: %v (%s)", err, b.App.Tracker.State())
	}
	return b
}

// waitConsumersLed waits until every durable consumer of stream has a
// leader, each request bounded.
func waitConsumersLed(t *testing.T, ctx context.Context, urls, stream string) {
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
	for {
		why := func() string {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, err := js.Stream(rctx, stream)
			if err != nil {
				return err.Error()
			}
			l := s.ListConsumers(rctx)
			for ci := range l.Info() {
				if ci.Config.Durable != "" && (ci.Cluster == nil || ci.Cluster.Leader == "") {
					return "consumer " + ci.Name + ": no leader"
				}
			}
			if err := l.Err(); err != nil {
				return err.Error()
			}
			return ""
		}()
		if why == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s: %s", stream, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *inProcess) url(k int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.b[k] == nil {
		return ""
	}
	return d.b[k].URL
}

func (d *inProcess) stopNode(i int)                { d.nats.StopNode(i) }
func (d *inProcess) startNode(i int)               { d.nats.StartNode(i) }
func (d *inProcess) partition(i int, mode cutMode) { d.nats.Partition(i, mode) }
func (d *inProcess) heal(i int)                    { d.nats.Heal(i) }

func (d *inProcess) startBroker(k int) {
	b := startBroker(d.t, d.dirs[k], func(c *config.Config) {
		c.NATSURL = d.nats.ClientURLs()
		c.Replicas = 3
	})
	d.mu.Lock()
	d.b[k] = b
	d.mu.Unlock()
}

// stopBroker stops broker k as SIGTERM does: the Serve context is
// cancelled, requests in flight are answered, then it closes.
func (d *inProcess) stopBroker(k int) {
	d.mu.Lock()
	b := d.b[k]
	d.b[k] = nil
	d.mu.Unlock()
	b.stop()
}

func (d *inProcess) waitCurrent(ctx context.Context) {
	waitBrokerStreams(d.t, ctx, d.nats.ClientURLs(), 3)
}

// waitCaughtUp waits for broker k's ready queues to hold the event log's
// last sequence (what a release waits for). Not the notifier's applied
// sequence: the notification consumer is shared, and a message this
// instance failed to apply may be redelivered to the other, which leaves
// this instance's applied sequence behind for good.
func (d *inProcess) waitCaughtUp(ctx context.Context, k int) {
	d.mu.Lock()
	b := d.b[k]
	d.mu.Unlock()
	if err := b.App.Tracker.CatchUp(ctx); err != nil {
		d.t.Fatalf("broker %d: %v (%s)", k, err, b.App.Tracker.State())
	}
}

// node is the index of the NATS node broker k is connected to (-1: none).
func (d *inProcess) node(k int) int {
	d.mu.Lock()
	b := d.b[k]
	d.mu.Unlock()
	name := b.App.NATS.Conn.ConnectedServerName()
	return d.nats.nodeOf(name)
}

// waitBrokerStreams waits until every stream of the broker (its buckets'
// too) has a leader and replicas current replicas.
func waitBrokerStreams(t testing.TB, ctx context.Context, urls string, replicas int) {
	t.Helper()
	waitStreamReplicas(t, ctx, urls, replicas, brokerStreams...)
}

// The fault scenario on embedded NATS nodes in the test process:
// under a steady load of orders and nominated releases on two broker
// instances (R3 streams on three nodes), stop a NATS node, then the other
// broker instance, bring both back; then cut one node off (its routes
// blackholed) and heal it. Every acknowledged order is in the event log
// exactly once, nothing is handed out twice, and every answer was correct
// or a 5xx (runScenario's checks).
func TestClusterFaults(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, key := newInProcess(t, ctx)
	// The node to cut off is the one broker 0 uses, so that its requests
	// meet the partition, while broker 1 uses another: a broker started
	// on the same node as broker 0 is restarted until it is not (a NATS
	// client picks a server of its list at random).
	cut := -1
	steps := []step{
		{"stop NATS node 0", func(context.Context) { d.stopNode(0) }},
		{"stop broker 1", func(context.Context) { d.stopBroker(1) }},
		{"start NATS node 0 and broker 1", func(ctx context.Context) {
			d.startNode(0)
			d.waitCurrent(ctx)
			d.startBroker(1)
			for try := 0; d.node(1) == d.node(0) && try < 10; try++ {
				d.stopBroker(1)
				d.startBroker(1)
			}
		}},
		{"cut a NATS node off (routes blackholed)", func(context.Context) {
			cut = d.node(0)
			t.Logf("brokers on nodes %d and %d: cutting node %d off", d.node(0), d.node(1), cut)
			d.partition(cut, cutDrop)
		}},
		{"heal the cut node", func(ctx context.Context) {
			d.heal(cut)
			d.waitCurrent(ctx)
		}},
	}
	runScenario(t, ctx, d, key, steps)
}

// Rolling restart under load: the three NATS nodes restarted one at a
// time, then the two broker instances (stopped as SIGTERM does: requests
// in flight answered), each brought back before the next goes: nothing
// answered wrong, no acknowledged order lost, nothing handed out twice.
func TestClusterRollingRestart(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, key := newInProcess(t, ctx)
	var steps []step
	for i := range 3 {
		steps = append(steps, step{fmt.Sprintf("restart NATS node %d", i), func(ctx context.Context) {
			d.stopNode(i)
			d.startNode(i)
			d.waitCurrent(ctx)
		}})
	}
	for k := range d.brokers() {
		steps = append(steps, step{fmt.Sprintf("restart broker %d", k), func(ctx context.Context) {
			d.stopBroker(k)
			d.startBroker(k)
		}})
	}
	runScenario(t, ctx, d, key, steps)
}
