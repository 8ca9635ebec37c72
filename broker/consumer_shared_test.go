package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// Two runners share one durable consumer, as two broker instances share
// the notifier's: a message runner A fails to apply is redelivered to
// runner B, which applies it. A's books then drop it (the consumer's ack
// floor passed it) and A's applied sequence reaches the last message:
// every message up to there was applied, if not by A.
func TestRunnerSharedDurableConsumer(t *testing.T) {
	js, ctx := runnerJS(t)
	const total, failing = 20, 7
	var (
		mu        sync.Mutex
		appliedBy = map[uint64]string{}
		failedOnA = make(chan struct{})
		failOnce  sync.Once
	)
	decode := func(_ uint64, _ time.Time, _ string, _ nats.Header, data []byte) (string, error) {
		return string(data), nil
	}
	apply := func(name string) func(context.Context, *Delivery[string]) error {
		return func(_ context.Context, d *Delivery[string]) error {
			if name == "A" && d.Seq == failing {
				// A cannot apply it (e.g. a notification publish during a
				// failover): it is redelivered until B gets it.
				failOnce.Do(func() { close(failedOnA) })
				return errors.New("not now")
			}
			mu.Lock()
			appliedBy[d.Seq] = name
			mu.Unlock()
			return nil
		}
	}
	start := func(name string) *Runner[string] {
		r, err := StartRunner(ctx, js, NewMetrics(), zap.NewNop(), RunnerConfig[string]{
			Name: "shared", Stream: "T", Durable: true,
			Retry:  RetryPolicy{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond, MaxDeliveries: 1000},
			Decode: decode, Apply: apply(name),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
		return r
	}
	a := start("A")
	for i := 0; i < total; i++ {
		if _, err := js.Publish(ctx, "t.x", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-failedOnA:
	case <-ctx.Done():
		t.Fatalf("A never got message %d: %s", failing, a.State())
	}
	b := start("B")
	bctx, bcancel := context.WithTimeout(ctx, 20*time.Second)
	defer bcancel()
	// B was delivered only message 7: its applied sequence too is the
	// consumer's.
	if err := b.WaitApplied(bctx, total); err != nil {
		t.Errorf("B: %v: %s", err, b.State())
	}
	mu.Lock()
	if appliedBy[failing] != "B" || len(appliedBy) != total {
		t.Errorf("message %d applied by %q, %d of %d applied", failing, appliedBy[failing], len(appliedBy), total)
	}
	mu.Unlock()

	// A: every message up to the last was applied (the one it failed, by
	// B), and its books hold nothing.
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := a.WaitApplied(wctx, total); err != nil {
		t.Fatalf("A: %v: %s", err, a.State())
	}
	if got := a.Applied(); got != total {
		t.Errorf("A applied %d, want %d", got, total)
	}
	if st := a.State(); st.InHand != 0 || st.Redelivering != 0 {
		t.Errorf("A's books keep messages another instance applied: %s", st)
	}
}
