package broker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker"
)

// SnapshotPath is where a broker keeps its tracker index snapshot.
func SnapshotPath(dataDir string) string { return filepath.Join(dataDir, "tracker", "index.gob") }

// TrackerProjector keeps the tracker's index from the event log. On start it
// loads the index snapshot from the data dir (if any) and catches up from the
// event after it; it saves a snapshot every minute when something changed
// and when it stops. Deleting the snapshot rebuilds the index from the whole
// log on the next start.
type TrackerProjector struct {
	Index    *tracker.Index
	store    *Store
	log      *zap.Logger
	metrics  *Metrics
	path     string
	runner   *Runner[*service.Event]
	caughtUp atomic.Bool // logged once: the index holds the log as it was at the start
	target   uint64      // the log's last sequence when the projector started
	stop     chan struct{}
	done     sync.WaitGroup
	saved    atomic.Uint64
}

// StartTrackerProjector loads the snapshot and starts consuming the log.
func StartTrackerProjector(ctx context.Context, store *Store, m *Metrics, log *zap.Logger, dataDir string) (*TrackerProjector, error) {
	p := &TrackerProjector{Index: tracker.NewIndex(), store: store, log: log, metrics: m, path: SnapshotPath(dataDir), stop: make(chan struct{})}
	info, err := store.events.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	p.target = info.State.LastSeq
	origin := LogOrigin(info)
	switch err := p.Index.LoadSnapshot(p.path); {
	case errors.Is(err, tracker.ErrNoSnapshot):
		log.Info("tracker index: no snapshot; building it from the event log", zap.Uint64("events", info.State.Msgs))
	case errors.Is(err, tracker.ErrSnapshotFormat):
		// E.g. a snapshot written before the ready queues were part of
		// the index: the queues are rebuilt with it.
		log.Warn("tracker index: the snapshot is of another format; rebuilding the index and the ready queues from the event log",
			zap.Error(err), zap.Uint64("events", info.State.Msgs))
		p.Index = tracker.NewIndex()
	case err != nil:
		log.Warn("tracker index: snapshot unreadable; rebuilding from the event log", zap.Error(err))
		p.Index = tracker.NewIndex()
	case p.Index.Origin() != origin || p.Index.Applied() > info.State.LastSeq:
		log.Warn("tracker index: the snapshot is of another event log (recreated or restored); rebuilding",
			zap.String("snapshot_origin", p.Index.Origin()), zap.String("log_origin", origin),
			zap.Uint64("snapshot", p.Index.Applied()), zap.Uint64("log", info.State.LastSeq))
		p.Index = tracker.NewIndex()
	default:
		log.Info("tracker index: snapshot loaded", zap.Int("prescriptions", p.Index.Len()), zap.Uint64("applied", p.Index.Applied()))
	}
	p.Index.SetOrigin(origin)
	p.saved.Store(p.Index.Applied())
	if p.Index.Applied() >= p.target {
		p.caughtUp.Store(true)
	}
	p.runner, err = StartRunner(ctx, store.js, m, log, RunnerConfig[*service.Event]{
		Name:     ConsumerTrackerIndex,
		Stream:   StreamEvents,
		StartSeq: p.Index.Applied() + 1,
		// The index and the queues read only the Eps-Record header.
		HeadersOnly: true,
		Decode:      p.decode,
		Apply:       p.apply,
		NoteFull:    store.NoteStorageFull,
	})
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	p.done.Add(1)
	go p.saveLoop()
	return p, nil
}

// decode is DecodeEvent; a message it refuses is skipped in the index (and
// goes to the dead letter).
func (p *TrackerProjector) decode(seq uint64, t time.Time, subject string, h nats.Header, data []byte) (*service.Event, error) {
	ev, err := DecodeEvent(seq, t, subject, h, data)
	if err != nil {
		p.metrics.Projected.WithLabelValues("tracker", "skipped").Inc()
		p.Index.Skip(seq)
		p.noteCaughtUp(seq)
	}
	return ev, err
}

func (p *TrackerProjector) apply(_ context.Context, d *Delivery[*service.Event]) error {
	p.Index.Apply(d.Seq, d.Value.Record)
	p.metrics.Projected.WithLabelValues("tracker", "applied").Inc()
	p.noteCaughtUp(d.Seq)
	return nil
}

func (p *TrackerProjector) noteCaughtUp(seq uint64) {
	if !p.caughtUp.Load() && seq >= p.target {
		p.caughtUp.Store(true)
		p.log.Info("tracker index caught up", zap.Int("prescriptions", p.Index.Len()), zap.Uint64("applied", seq))
	}
}

// CaughtUp reports whether the index, and so the ready queues, hold the
// event log as it was when the projector started (a snapshot loaded, or
// the index rebuilt from the log, up to that event): /readyz is 503 until
// then. It does not go back to false.
func (p *TrackerProjector) CaughtUp() bool { return p.caughtUp.Load() }

// StartTarget is the event log's last sequence when the projector started:
// what CaughtUp waits for.
func (p *TrackerProjector) StartTarget() uint64 { return p.target }

// Running reports whether the projector's consumer runs.
func (p *TrackerProjector) Running() bool { return p.runner.Running() }

// State is the projector's consumer state.
func (p *TrackerProjector) State() RunnerState { return p.runner.State() }

// MustReach is the event log sequence the index must have applied before it
// answers a search: everything in the log when the broker started, and
// everything this broker has written since.
func (p *TrackerProjector) MustReach() uint64 { return max(p.target, p.store.LastWritten()) }

// CatchUp returns once the index, and so the ready queues, hold every event
// the event log held when it was called: the stream's last sequence (one
// stream info request), or the last this broker wrote if that is later.
// An order acknowledged before the call, by this broker or another one
// sharing the log, is then in its dispenser's queue (service.ReadyQueues).
func (p *TrackerProjector) CatchUp(ctx context.Context) error {
	target := p.store.LastWritten()
	info, err := p.store.events.Info(ctx)
	if err != nil {
		return fmt.Errorf("event log's last sequence: %w", err)
	}
	target = max(target, info.State.LastSeq)
	if err := p.Index.WaitApplied(ctx, target); err != nil {
		return fmt.Errorf("ready queues at event %d of %d: %w", p.Index.Applied(), target, err)
	}
	return nil
}

// ReadyQueue lists up to limit entries of a dispenser's ready queue as the
// index holds it now, oldest first, from queue place from on
// (service.ReadyQueues).
func (p *TrackerProjector) ReadyQueue(ods string, from uint64, limit int) []service.QueueEntry {
	return toQueueEntries(p.Index.ReadyQueue(ods, from, limit))
}

func toQueueEntries(es []tracker.QueueEntry) []service.QueueEntry {
	out := make([]service.QueueEntry, len(es))
	for i, e := range es {
		out[i] = service.QueueEntry{PrescriptionID: e.ID, Issue: e.Issue, QueueSeq: e.Seq}
	}
	return out
}

func (p *TrackerProjector) saveLoop() {
	defer p.done.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.save()
		case <-p.stop:
			return
		}
	}
}

func (p *TrackerProjector) save() {
	applied := p.Index.Applied()
	if applied == p.saved.Load() {
		return
	}
	if err := p.Index.SaveSnapshot(p.path); err != nil {
		p.log.Warn("tracker index: snapshot not saved", zap.Error(err))
		return
	}
	p.saved.Store(applied)
}

// Stop stops consuming and saves a snapshot.
func (p *TrackerProjector) Stop() {
	p.runner.Stop()
	close(p.stop)
	p.done.Wait()
	p.save()
}

// LogOrigin identifies an event log: its name and creation time. A snapshot
// of another log (the stream recreated, or a backup restored) is not used.
func LogOrigin(info *jetstream.StreamInfo) string {
	return info.Config.Name + "@" + info.Created.UTC().Format(time.RFC3339Nano)
}

// RebuildTrackerIndex builds a tracker index from the whole event log of js
// and returns it, with the messages it skipped (not the broker's: the
// running projector puts them in the dead letter) and why; progress, when
// not nil, is told how many events of how many have been applied. It only
// reads: no stream is created or changed.
func RebuildTrackerIndex(ctx context.Context, js jetstream.JetStream, progress func(done, total uint64)) (*tracker.Index, []SkippedMessage, error) {
	ix := tracker.NewIndex()
	events, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		return nil, nil, fmt.Errorf("stream %s: %w", StreamEvents, err)
	}
	info, err := events.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	ix.SetOrigin(LogOrigin(info))
	var skipped []SkippedMessage
	_, err = ReadStream(ctx, js, StreamEvents, DecodeEvent,
		func(seq uint64, ev *service.Event) { ix.Apply(seq, ev.Record) },
		func(seq uint64, err error) {
			ix.Skip(seq) // as the running projector does
			skipped = append(skipped, SkippedMessage{Seq: seq, Reason: err.Error()})
		}, progress)
	if err != nil {
		return nil, nil, err
	}
	return ix, skipped, nil
}

// SkippedMessage is a message a reader could not decode.
type SkippedMessage struct {
	Seq    uint64
	Reason string
}
