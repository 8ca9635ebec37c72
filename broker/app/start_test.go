package app

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// On a cluster that is still forming, the start's steps (the streams, the
// lease bucket) are tried again while JetStream answers "unavailable" or
// not at all, until --nats-cluster-wait; a lease bucket whose first
// creation timed out no longer stops the broker (and with it its embedded
// node). Another error, or a single server of the broker's own, stops at
// once.
func TestUntilPlacedRetriesUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unavailable := []error{
		fmt.Errorf("bucket EPS_LEASES: %w", context.DeadlineExceeded),
		fmt.Errorf("bucket EPS_LEASES: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}),
	}
	calls := 0
	err := untilPlaced(ctx, true, time.Now().Add(time.Minute), zap.NewNop(), "waiting", 3, func() error {
		calls++
		if calls <= len(unavailable) {
			return unavailable[calls-1]
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("untilPlaced = %v after %d tries, want nil after 3 (two unavailable answers, then made)", err, calls)
	}

	refused := errors.New("bucket EPS_LEASES: refused")
	calls = 0
	if err := untilPlaced(ctx, true, time.Now().Add(time.Minute), zap.NewNop(), "waiting", 3, func() error { calls++; return refused }); !errors.Is(err, refused) || calls != 1 {
		t.Errorf("a refusal: untilPlaced = %v after %d tries, want it at once", err, calls)
	}
	calls = 0
	if err := untilPlaced(ctx, false, time.Now().Add(time.Minute), zap.NewNop(), "waiting", 1, func() error { calls++; return unavailable[0] }); err == nil || calls != 1 {
		t.Errorf("own single server: untilPlaced = %v after %d tries, want the error at once", err, calls)
	}
	calls = 0
	if err := untilPlaced(ctx, true, time.Now(), zap.NewNop(), "waiting", 3, func() error { calls++; return unavailable[1] }); err == nil || calls > 2 {
		t.Errorf("past --nats-cluster-wait: untilPlaced = %v after %d tries, want the error", err, calls)
	}
}
