package natscluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestCluster: three nodes with a client login start ready (an R3 stream
// is created at once and its replicas become current); with a node
// stopped the cluster is ready again for two and the stream keeps taking
// writes; the node started again on its store dir and ports catches up;
// a stream of another replica count is named at once, not waited out; a
// wrong client password is refused.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := Options{Name: "t", SyncAlways: true, NoLog: true, ClientUser: "c", ClientPassword: Secret()}
	for i := range 3 {
		o.ServerNames, o.StoreDirs = append(o.ServerNames, fmt.Sprintf("n%d", i)), append(o.StoreDirs, t.TempDir())
	}
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	nc, err := nats.Connect(strings.Join(c.ClientURLs(), ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"}, Replicas: 3}); err != nil {
		t.Fatalf("an R3 stream on a ready cluster: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R1", Subjects: []string{"r1"}, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	if err := WaitStreamsCurrent(ctx, js, 3, "R3"); err != nil {
		t.Fatal(err)
	}
	if err := WaitStreamsCurrent(ctx, js, 2, "R3"); err != nil {
		t.Errorf("two current replicas of an R3 stream: %v", err)
	}
	if err := WaitStreamsCurrent(ctx, js, 3, "R1"); err == nil || !strings.Contains(err.Error(), "replicas 1, want 3 current") {
		t.Errorf("an R1 stream waited for as R3: %v", err)
	}

	port := c.Server(2).Addr().String()
	c.StopNode(2)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("two of three nodes: %v", err)
	}
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, "r3", []byte("x"))
		pcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("a write with a node stopped: %v", err)
		}
	}
	if err := c.StartNode(2); err != nil {
		t.Fatal(err)
	}
	if got := c.Server(2).Addr().String(); got != port {
		t.Errorf("node 2 came back on %s, was %s", got, port)
	}
	if err := WaitStreamsCurrent(ctx, js, 3, "R3"); err != nil {
		t.Fatalf("after the node came back: %v", err)
	}

	if bad, err := nats.Connect(strings.Replace(c.ClientURL(0), o.ClientPassword, "wrong", 1)); err == nil {
		bad.Close()
		t.Error("a wrong client password got in")
	}
}
