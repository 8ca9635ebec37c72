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
	// scanInactive is how long the server keeps a scan's consumer that
	// was not deleted (its reader gone).
	scanInactive = time.Minute
)

// scanStream is the adapter's one reader of a stream's messages for a
// request (the event log's events under an X-Request-ID, the audit trail's
// entries): it reads with an ephemeral consumer configured by cfg (where to
// start, which subjects, headers only), in stream order, in batches, until
// it has read every message that was pending when it started (and those
// stored meanwhile, up to the last one it saw pending), or until each
// returns false. what names the stream in errors. A batch that brings
// nothing while messages are pending is an error, never a short answer.
func (s *Store) scanStream(ctx context.Context, what, stream string, cfg jetstream.OrderedConsumerConfig,
	each func(m jetstream.Msg, md *jetstream.MsgMetadata) (more bool, err error)) error {
	return s.scanStreamUntil(ctx, what, stream, cfg, 0, each)
}

// scanStreamUntil is scanStream that also reads on until it has seen the
// stream up to sequence until at least (0: no such bound): a message at or
// after until, or, where cfg's subjects have none there, the consumer's
// replica past until with nothing pending.
//
// The consumer is an R1 consumer that the meta leader places on
// any replica of the stream, which may not have applied the latest
// messages yet: it counts as pending only what its replica holds, and
// would end there. A scan whose answer decides something passes the
// sequence it must reach, read from the stream leader before the scan
// began (leaderLastSeq, or the last message on a subject): everything
// acknowledged before then is read, or the scan fails (errNoProgress,
// which IsUnavailable counts as 503: a replica that does not catch up
// within scanWait, or within ctx, is an error, never a short answer).
func (s *Store) scanStreamUntil(ctx context.Context, what, stream string, cfg jetstream.OrderedConsumerConfig, until uint64,
	each func(m jetstream.Msg, md *jetstream.MsgMetadata) (more bool, err error)) error {
	// A plain ephemeral pull consumer, made with ctx and read with bounded
	// fetches: nats.go's ordered consumer makes its server consumer again
	// inside Fetch, which takes no context and retries without end (a
	// scan with a 3 s context still ran after 15 s while no consumer
	// could be made). A delivery missing in between (a fetch that ended
	// as the server sent it: nothing is acknowledged or sent again) fails
	// the scan as unavailable, never a short answer.
	cons, err := s.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     cfg.DeliverPolicy,
		OptStartSeq:       cfg.OptStartSeq,
		OptStartTime:      cfg.OptStartTime,
		FilterSubjects:    cfg.FilterSubjects,
		HeadersOnly:       cfg.HeadersOnly,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: scanInactive,
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	defer func() {
		// Deleted when read (bounded; else the server removes it after
		// scanInactive).
		name := cons.CachedInfo().Name
		go func() {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.js.DeleteConsumer(dctx, stream, name)
		}()
	}()
	ci := cons.CachedInfo()
	var delivered uint64 // the consumer sequence of the last delivery
	made, pause := time.Now(), 20*time.Millisecond
	// seen is the stream sequence the consumer has read up to: at the
	// start, the one before its first (what its replica holds before it).
	seen := ci.Delivered.Stream
	for pending := ci.NumPending; pending > 0 || seen < until; {
		wait := scanWait
		if dl, ok := ctx.Deadline(); ok {
			if wait = min(wait, time.Until(dl)); wait <= 0 {
				return fmt.Errorf("read %s: %w (read up to sequence %d of %d)", what, context.DeadlineExceeded, seen, until)
			}
		}
		n := pending
		if n == 0 {
			// Caught up with its replica, which is behind: wait for
			// what the replica applies next (until - seen at most).
			n = until - seen
		}
		batch, err := cons.Fetch(int(min(n, scanBatch)), jetstream.FetchMaxWait(wait))
		if notServedYet(err, delivered, made) {
			if err := pauseFor(ctx, &pause); err != nil {
				return fmt.Errorf("read %s: %w", what, err)
			}
			continue
		}
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
			if md.Sequence.Consumer != delivered+1 {
				return fmt.Errorf("read %s: %w: delivery %d after %d (one lost in between)", what, errNoProgress, md.Sequence.Consumer, delivered)
			}
			delivered = md.Sequence.Consumer
			more, err := each(m, md)
			if err != nil || !more {
				return err
			}
			pending, seen = md.NumPending, max(seen, md.Sequence.Stream)
			if pending == 0 && seen >= until {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			if got == 0 && notServedYet(err, delivered, made) {
				if err := pauseFor(ctx, &pause); err != nil {
					return fmt.Errorf("read %s: %w", what, err)
				}
				continue
			}
			return fmt.Errorf("read %s: %w", what, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w", what, err)
		}
		if got == 0 {
			if pending == 0 {
				return fmt.Errorf("read %s: %w: its replica delivered up to sequence %d, the stream leader had %d", what, errNoProgress, seen, until)
			}
			return fmt.Errorf("read %s: %w with %d pending", what, errNoProgress, pending)
		}
	}
	return nil
}

// notServedYet reports whether a pull's error is "no responders" before
// the scan's consumer delivered anything, within scanWait of its creation:
// a consumer made on a cluster is assigned before its node serves it, so
// its first pulls may find no responder (seen in CI: an R3 log's scan).
func notServedYet(err error, delivered uint64, made time.Time) bool {
	return errors.Is(err, nats.ErrNoResponders) && delivered == 0 && time.Since(made) < scanWait
}

// pauseFor waits *pause (doubled for the next time, up to half a second)
// or until ctx ends (its error).
func pauseFor(ctx context.Context, pause *time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(*pause):
	}
	*pause = min(2**pause, 500*time.Millisecond)
	return nil
}
