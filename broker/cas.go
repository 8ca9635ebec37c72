package broker

import (
	"context"
	"errors"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// Every write of a prescription to the event log goes through
// service.UpdateEvents (the one compare-and-set loop,
// service.CompareAndSet): it reads the prescription's current state and
// the sequence of its subject's last message (Store.current), asks a pure
// decision what to write, and publishes it with that sequence as the
// expected last subject sequence (appendEvent). Another writer in between
// makes the publish fail with "wrong last sequence": the loop reads and
// decides again, at most service.MaxAttempts times. A decided write is
// completed even when the client's context ends meanwhile.
//
// The expected sequence is the subject's real last one, not the current
// state's: a message on the subject that is not the broker's (a foreign
// one, published by a plain NATS client) is skipped by the read, and the
// next decided write supersedes it, so one such message never blocks a
// prescription.

// Update is the compare-and-set write of prescription id (see
// service.Prescriptions.Update).
func (s *Store) Update(ctx context.Context, id string, decide service.Decide) (*service.Event, error) {
	return service.UpdateEvents(ctx, id, false, decide, s.current, s.writeEvent)
}

// Create is Update deciding first from "nothing stored", without a read
// (see service.Prescriptions.Create).
func (s *Store) Create(ctx context.Context, id string, decide service.Decide) (*service.Event, error) {
	return service.UpdateEvents(ctx, id, true, decide, s.current, s.writeEvent)
}

// writeEvent appends a decided write if its subject's last message is
// still expect, counting the compare-and-sets lost.
func (s *Store) writeEvent(ctx context.Context, w *service.Write, expect uint64) (*service.Event, error) {
	seq, err := s.appendEvent(ctx, w.Event, w.MessageID, w.Record, w.Body, expect)
	if errors.Is(err, service.ErrConflict) {
		s.metrics.Projected.WithLabelValues("lifecycle", "cas_retry").Inc()
	}
	if err != nil {
		return nil, err
	}
	return &service.Event{Seq: seq, Event: w.Event, MessageID: w.MessageID, Record: w.Record, Body: w.Body}, nil
}
