package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/nomination"
)

// NominationReports keeps every nomination change in memory for the
// reports: an ordered consumer over the registry bucket's stream (every
// revision is kept there, each with the change that produced it), from its
// first message on every start.
type NominationReports struct {
	js     jetstream.JetStream
	log    *zap.Logger
	runner *Runner[*nomination.Record]

	mu   sync.Mutex
	recs []nomination.Record
}

// streamNominations is the registry bucket's stream.
const streamNominations = "KV_" + BucketNominations

// StartNominationReports starts the projection of the nomination changes.
func StartNominationReports(ctx context.Context, store *Store, m *Metrics, log *zap.Logger) (*NominationReports, error) {
	r := &NominationReports{js: store.js, log: log}
	var err error
	r.runner, err = StartRunner(ctx, store.js, m, log, RunnerConfig[*nomination.Record]{
		Name:     ConsumerNominationReports,
		Stream:   streamNominations,
		Decode:   decodeNominationRevision,
		Apply:    r.apply,
		NoteFull: store.NoteStorageFull,
	})
	if err != nil {
		return nil, fmt.Errorf("nomination reports: %w", err)
	}
	return r, nil
}

// decodeNominationRevision reads one revision of the registry bucket: the
// change it records (nil for a revision without one, a delete or a purge).
func decodeNominationRevision(seq uint64, _ time.Time, subject string, h nats.Header, data []byte) (*nomination.Record, error) {
	if op := h.Get("KV-Operation"); op != "" || len(data) == 0 {
		return nil, nil
	}
	var p nomination.Patient
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("revision %d: %w", seq, err)
	}
	if p.Change == nil {
		return nil, nil
	}
	nhs := p.NHSNumber
	if k := strings.TrimPrefix(subject, subjectNominations); nhs == "" && !isPseudonym(k) {
		nhs = k // a key written before pseudonyms (the migration moves them)
	}
	return &nomination.Record{NHSNumber: nhs, Change: *p.Change}, nil
}

func (r *NominationReports) apply(_ context.Context, d *Delivery[*nomination.Record]) error {
	r.mu.Lock()
	if d.Value != nil {
		r.recs = append(r.recs, *d.Value)
	}
	r.mu.Unlock()
	return nil
}

// Changes returns every nomination change applied so far, in the order
// they were made.
func (r *NominationReports) Changes() []nomination.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The slice only grows: a capped view needs no copy.
	return r.recs[:len(r.recs):len(r.recs)]
}

// Applied is the registry stream sequence the projection has applied (an
// undecodable revision, put in the dead letter, counts as applied).
func (r *NominationReports) Applied() uint64 { return r.runner.Applied() }

// State is the projection's consumer state.
func (r *NominationReports) State() RunnerState { return r.runner.State() }

// Wait returns once the projection has applied everything in the registry
// stream when it was called (so a report after a change sees it), or with
// ctx's error.
func (r *NominationReports) Wait(ctx context.Context) error {
	st, err := r.js.Stream(ctx, streamNominations)
	if err != nil {
		return fmt.Errorf("nomination reports: %w", err)
	}
	return r.runner.WaitApplied(ctx, st.CachedInfo().State.LastSeq)
}

// Stop stops consuming.
func (r *NominationReports) Stop() {
	if r != nil && r.runner != nil {
		r.runner.Stop()
	}
}
