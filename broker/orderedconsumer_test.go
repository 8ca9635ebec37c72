package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// An ordered runner whose consumer is lost (deleted on the server, as a
// node's loss does to an R1 consumer) makes it again under a new name and
// goes on from the message after the last one applied: every message is
// applied once, in order, across several losses (three deletions, then a
// reconnect of the runner's connection), each after some messages were
// applied; and the consumer it leaves behind when stopped is the only one,
// with the server's inactive threshold set.
func TestRunnerOrderedConsumerMadeAgain(t *testing.T) {
	js, ctx := embeddedJS(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		applied []uint64
	)
	r, err := StartRunner(ctx, js, NewMetrics(), zap.NewNop(), RunnerConfig[string]{
		Name: "ordered-test", Stream: "T",
		Decode: func(_ uint64, _ time.Time, _ string, _ nats.Header, data []byte) (string, error) {
			return string(data), nil
		},
		Apply: func(_ context.Context, d *Delivery[string]) error {
			mu.Lock()
			applied = append(applied, d.Seq)
			mu.Unlock()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	// consumer is the runner's consumer on the server once it has one
	// other than old.
	consumer := func(old string) *jetstream.ConsumerInfo {
		t.Helper()
		for {
			st, err := js.Stream(ctx, "T")
			if err != nil {
				t.Fatal(err)
			}
			var found []*jetstream.ConsumerInfo
			for ci := range st.ListConsumers(ctx).Info() {
				found = append(found, ci)
			}
			if len(found) == 1 && found[0].Name != old {
				return found[0]
			}
			select {
			case <-ctx.Done():
				t.Fatalf("the runner's consumer (not %q): found %d", old, len(found))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	var seq uint64
	publish := func(n int) {
		for range n {
			ack, err := js.Publish(ctx, "t.x", []byte(fmt.Sprint(seq+1)))
			if err != nil {
				t.Fatal(err)
			}
			seq = ack.Sequence
		}
		if err := r.WaitApplied(ctx, seq); err != nil {
			t.Fatalf("%v: %s", err, r.State())
		}
	}
	publish(5)
	names := []string{consumer("").Name}
	for loss := range 4 {
		if loss < 3 {
			if err := js.DeleteConsumer(ctx, "T", names[len(names)-1]); err != nil {
				t.Fatal(err)
			}
		} else if err := js.Conn().ForceReconnect(); err != nil {
			// The last loss is the connection's: what the server sent
			// while it was down is lost to a consumer that acknowledges
			// nothing, so the consumer is made again once reconnected
			// (and the old one deleted).
			t.Fatal(err)
		}
		ci := consumer(names[len(names)-1])
		if ci.Config.OptStartSeq != seq+1 || ci.Config.InactiveThreshold != OrderedInactive || ci.Config.Replicas > 1 {
			t.Errorf("loss %d: consumer %s from %d (want %d), inactive threshold %v, replicas %d",
				loss, ci.Name, ci.Config.OptStartSeq, seq+1, ci.Config.InactiveThreshold, ci.Config.Replicas)
		}
		names = append(names, ci.Name)
		publish(4)
	}
	mu.Lock()
	defer mu.Unlock()
	want := make([]uint64, seq)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
		t.Errorf("a consumer name was asked for twice: %v", names)
	}
}
