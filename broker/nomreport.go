package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/nomination"
)

// NominationReports keeps every nomination change in memory for the
// reports: an ordered consumer over the registry bucket's stream (every
// revision is kept there, each with the change that produced it), from its
// first message on every start.
type NominationReports struct {
	js  jetstream.JetStream
	log *zap.Logger
	cc  jetstream.ConsumeContext

	mu      sync.Mutex
	recs    []nomination.Record
	applied uint64        // the stream sequence applied up to
	moved   chan struct{} // closed (and replaced) whenever applied moves
}

// streamNominations is the registry bucket's stream.
const streamNominations = "KV_" + BucketNominations

// StartNominationReports starts the projection of the nomination changes.
func StartNominationReports(ctx context.Context, store *Store, log *zap.Logger) (*NominationReports, error) {
	r := &NominationReports{js: store.js, log: log, moved: make(chan struct{})}
	cons, err := store.js.OrderedConsumer(ctx, streamNominations, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("nomination reports consumer: %w", err)
	}
	if r.cc, err = cons.Consume(r.handle, jetstream.PullMaxMessages(1024)); err != nil {
		return nil, fmt.Errorf("nomination reports consume: %w", err)
	}
	return r, nil
}

func (r *NominationReports) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	var rec *nomination.Record
	if op := m.Headers().Get("KV-Operation"); op == "" && len(m.Data()) > 0 {
		var p nomination.Patient
		if err := json.Unmarshal(m.Data(), &p); err != nil {
			r.log.Error("nomination reports: undecodable revision", zap.Uint64("seq", md.Sequence.Stream), zap.Error(err))
		} else if p.Change != nil {
			nhs := p.NHSNumber
			if k := strings.TrimPrefix(m.Subject(), subjectNominations); nhs == "" && !isPseudonym(k) {
				nhs = k // a key written before pseudonyms (the migration moves them)
			}
			rec = &nomination.Record{NHSNumber: nhs, Change: *p.Change}
		}
	}
	r.mu.Lock()
	if rec != nil {
		r.recs = append(r.recs, *rec)
	}
	if md.Sequence.Stream > r.applied {
		r.applied = md.Sequence.Stream
		close(r.moved)
		r.moved = make(chan struct{})
	}
	r.mu.Unlock()
}

// Changes returns every nomination change applied so far, in the order
// they were made.
func (r *NominationReports) Changes() []nomination.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The slice only grows: a capped view needs no copy.
	return r.recs[:len(r.recs):len(r.recs)]
}

// Applied is the registry stream sequence the projection has applied.
func (r *NominationReports) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

// Wait returns once the projection has applied everything in the registry
// stream when it was called (so a report after a change sees it), or with
// ctx's error.
func (r *NominationReports) Wait(ctx context.Context) error {
	st, err := r.js.Stream(ctx, streamNominations)
	if err != nil {
		return fmt.Errorf("nomination reports: %w", err)
	}
	target := st.CachedInfo().State.LastSeq
	for {
		r.mu.Lock()
		applied, moved := r.applied, r.moved
		r.mu.Unlock()
		if applied >= target {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("nomination reports at %d of %d: %w", applied, target, ctx.Err())
		}
	}
}

// Stop stops consuming.
func (r *NominationReports) Stop() {
	if r != nil && r.cc != nil {
		r.cc.Stop()
	}
}
