package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// scanBatch is the most messages one fetch of scanStream asks for, and
// scanWait how long it waits for them.
const (
	scanBatch = 1000
	scanWait  = 5 * time.Second
)

// scanStream is the adapter's one reader of a stream's messages for a
// request (the event log's events under an X-Request-ID, the audit trail's
// entries): it reads with an ordered consumer configured by cfg (where to
// start, which subjects, headers only), in stream order, in batches, until
// it has read every message that was pending when it started (and those
// stored meanwhile, up to the last one it saw pending), or until each
// returns false. what names the stream in errors. A batch that brings
// nothing while messages are pending is an error, never a short answer.
func (s *Store) scanStream(ctx context.Context, what, stream string, cfg jetstream.OrderedConsumerConfig,
	each func(m jetstream.Msg, md *jetstream.MsgMetadata) (more bool, err error)) error {
	cons, err := s.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	for pending := ci.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, scanBatch)), jetstream.FetchMaxWait(scanWait))
		if err != nil {
			return fmt.Errorf("read %s: %w", what, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read %s: %w", what, err)
			}
			more, err := each(m, md)
			if err != nil || !more {
				return err
			}
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read %s: %w", what, err)
		}
		if got == 0 {
			return fmt.Errorf("read %s: %w with %d pending", what, errNoProgress, pending)
		}
	}
	return nil
}
