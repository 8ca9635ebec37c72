package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// startingNode is a cluster broker whose start-up (app.New, which waits
// for JetStream's meta leader) runs in the background, so that what it
// logs while it waits can be read.
type startingNode struct {
	cfg  config.Config
	logs *observer.ObservedLogs
	done chan error // app.New's error, or nil once the broker serves
	b    *testBroker
}

// startInBackground starts the broker of cfg without waiting for it: its
// start-up ends on done (bounded by cfg.NATSClusterWait).
func startInBackground(t *testing.T, cfg config.Config) *startingNode {
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core)).With(zap.String("node", cfg.NATSServerName))
	cfg.ShutdownDelay = 0
	n := &startingNode{cfg: cfg, logs: logs, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // a start-up still waiting when the test ends
	go func() {
		a, err := app.New(ctx, cfg, log, nil)
		if err == nil {
			err = a.Listen() // as startClusterBrokerLogs: the backend stays until the process ends
		}
		if err != nil {
			n.done <- fmt.Errorf("%s: %w", cfg.NATSServerName, err)
			return
		}
		served := make(chan error, 1)
		go func() { served <- a.Serve(ctx) }()
		b := &testBroker{t: t, App: a, URL: "http://" + a.Addr(), Dir: cfg.DataDir}
		var stopped bool
		b.stop = func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			if err := <-served; err != nil {
				t.Errorf("broker %s stopped with %v", cfg.NATSServerName, err)
			}
		}
		n.b = b
		n.done <- nil
	}()
	return n
}

// started waits, up to bound, for n's start-up to end and fails the test
// unless the broker serves.
func (n *startingNode) started(t *testing.T, bound time.Duration) *testBroker {
	t.Helper()
	select {
	case err := <-n.done:
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.b.stop)
		return n.b
	case <-time.After(bound):
		t.Fatalf("%s did not start in %v", n.cfg.NATSServerName, bound)
		return nil
	}
}

// waitingLine waits, up to bound, until n has logged that it waits for
// JetStream because of why, with the fields match accepts, and returns
// that line's fields. A start-up that ends meanwhile fails the test.
func (n *startingNode) waitingLine(t *testing.T, why string, match func(map[string]any) bool, bound time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(bound)
	for {
		for _, e := range n.logs.FilterMessage("waiting for JetStream: " + why).All() {
			if f := e.ContextMap(); match(f) {
				return f
			}
		}
		select {
		case err := <-n.done:
			t.Fatalf("%s: start-up ended (%v) while it should wait for JetStream: %s", n.cfg.NATSServerName, err, why)
		case <-deadline:
			var seen []string
			for _, e := range n.logs.FilterMessageSnippet("waiting for JetStream").All() {
				seen = append(seen, fmt.Sprint(e.Message, e.ContextMap()))
			}
			t.Fatalf("%s did not log %q with the fields asked in %v; it logged: %s", n.cfg.NATSServerName, why, bound, strings.Join(seen, "\n"))
		case <-time.After(100 * time.Millisecond): // polling the log, the condition itself
		}
	}
}

// The first start of a new cluster with two of its three nodes up: the two
// brokers are routed to each other and yet elect no JetStream meta leader
// (nats-server elects one from empty meta logs only with every node's
// vote), and each says so while it waits: the reason, the meta group of 3,
// 2 nodes known, this node's meta log empty. They do not start. As soon as
// the third node starts, all three start, every stream is R3, and an order
// acknowledged by the first is found through the third.
func TestClusterFirstStartNeedsEveryNode(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	cfgs := clusterConfigs(t, 3, secretAuth(t))
	a, b := startInBackground(t, cfgs[0]), startInBackground(t, cfgs[1])
	for _, n := range []*startingNode{a, b} {
		f := n.waitingLine(t, broker.WaitEveryNode, func(f map[string]any) bool {
			return f["nodes_known"] == int64(2)
		}, 90*time.Second)
		if f["meta_group_size"] != int64(3) || f["quorum"] != int64(2) || f["meta_log_empty"] != true {
			t.Errorf("%s waits with %v, want meta_group_size 3, quorum 2, meta_log_empty true", n.cfg.NATSServerName, f)
		}
	}
	// Two of three routed and both still waiting (waitingLine fails the
	// test had either started): no meta leader without the third.
	c := startInBackground(t, cfgs[2])
	ba, bc := a.started(t, 3*time.Minute), c.started(t, 3*time.Minute)
	b.started(t, 3*time.Minute)
	waitReplicated(t, ba.App.Store.JetStream(), 3)

	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	if err != nil {
		t.Fatal(err)
	}
	if res := postBounded(t, ba, ba.token(auth.RolePrescriber, "A83008"), g.Body); res.Status != 200 {
		t.Fatalf("order on A: %d %s", res.Status, res.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := bc.App.Tracker.Index.WaitApplied(ctx, ba.App.Store.LastWritten()); err != nil {
		t.Fatalf("C's tracker index did not apply A's order: %v", err)
	}
	res := bc.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, bc.token(auth.RoleTracker, "X26"), nil)
	if ids, _, total := groups(t, res); total != 1 || len(ids) != 1 || ids[0] != g.ShortID {
		t.Errorf("tracker search on C for the order A acknowledged: %v (total %d) %s", ids, total, res.Body)
	}
	if n := bc.events(g.ShortID); n != 1 {
		t.Errorf("order stored %d times, want once", n)
	}
}

// A node of a new cluster whose other nodes never come gives up when
// --nats-cluster-wait runs out, and its error names the rule: every node
// of --nats-routes must be up for a new cluster's first meta leader.
func TestClusterFirstStartWaitRunsOut(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	cfg := clusterConfigs(t, 3, secretAuth(t))[0]
	cfg.NATSClusterWait = 5 * time.Second
	n := startInBackground(t, cfg)
	select {
	case err := <-n.done:
		if err == nil {
			t.Fatal("one node of three started a new cluster alone")
		}
		t.Logf("start-up error: %v", err)
		for _, want := range []string{"nats-cluster-wait", broker.WaitEveryNode, "meta group of 3 nodes"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("start-up error %q does not say %q", err, want)
			}
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("start-up did not end when --nats-cluster-wait ran out")
	}
	if n.logs.FilterMessage("waiting for JetStream: "+broker.WaitEveryNode).Len() == 0 {
		t.Error("the wait was not logged with its reason")
	}
}

// The same rule after a disk loss: a formed cluster stopped, one node's
// JetStream store wiped, and that node started again with only one other.
// The other holds the cluster's meta state, but the wiped node's vote does
// not count toward the majority (its log is empty), so there is no meta
// leader: each broker waits naming its own case (the wiped node: its log
// is empty, every node is needed; the other: a majority of the nodes that
// hold the state). With the third node up all start, and the wiped node's
// broker finds the order acknowledged before the wipe.
func TestClusterWipedNodeCountsOnlyWithEveryNode(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	nodes := startCluster(t, clusterConfigs(t, 3, secretAuth(t)))
	a := nodes[0].b
	waitReplicated(t, a.App.Store.JetStream(), 3)
	g := a.order(t, "order")
	waitReplicated(t, a.App.Store.JetStream(), 3)
	for _, n := range nodes {
		n.b.stop()
	}
	if err := os.RemoveAll(filepath.Join(nodes[1].cfg.DataDir, "jetstream")); err != nil {
		t.Fatal(err)
	}

	kept, wiped := startInBackground(t, nodes[0].cfg), startInBackground(t, nodes[1].cfg)
	routed := func(f map[string]any) bool { return f["nodes_known"] == int64(2) }
	f := wiped.waitingLine(t, broker.WaitEveryNode, routed, 90*time.Second)
	if f["meta_log_empty"] != true || f["meta_group_size"] != int64(3) {
		t.Errorf("the wiped node waits with %v, want meta_log_empty true, meta_group_size 3", f)
	}
	f = kept.waitingLine(t, broker.WaitMajority, routed, 90*time.Second)
	if f["meta_log_empty"] != false || f["meta_group_size"] != int64(3) || f["quorum"] != int64(2) {
		t.Errorf("the kept node waits with %v, want meta_log_empty false, meta_group_size 3, quorum 2", f)
	}

	third := startInBackground(t, nodes[2].cfg)
	third.started(t, 3*time.Minute)
	kept.started(t, 3*time.Minute)
	b := wiped.started(t, 3*time.Minute)
	waitReplicated(t, b.App.Store.JetStream(), 3)
	if n := b.events(g.ShortID); n != 1 {
		t.Errorf("the order acknowledged before the wipe: %d events through the wiped node's broker, want 1", n)
	}
}
