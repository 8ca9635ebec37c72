package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Notification is what the broker publishes on eps.notify.dispenser.<ODS>.<event>
// so that a dispensing system can react without polling. It carries no
// patient identifiers: the dispenser releases the prescription to see it.
type Notification struct {
	Event          string    `json:"event"` // e.g. prescription-ready
	PrescriptionID string    `json:"prescriptionId"`
	Status         rx.Status `json:"status"`
	Dispenser      string    `json:"dispenser"`
	Time           time.Time `json:"time"`
	EventSeq       uint64    `json:"eventSeq"`
	// Issue is the repeat dispensing issue it is about (current issue for
	// prescription-ready); absent for other prescriptions.
	Issue int `json:"issue,omitempty"`
}

// NotifyReady is the event of a prescription entering a dispenser's ready
// queue.
const NotifyReady = "prescription-ready"

// Notifier publishes the notifications of every event of the log: to the
// prescribing organisation and the dispenser concerned about each
// transition, and prescription-ready to a dispenser when an event puts a
// prescription into its ready queue (tracker.EnteredQueue). It consumes the
// log through the durable consumer eps-queue-projector (the name it had
// when it also kept the queues' stream, so existing deployments go on where
// it stopped), shared by every broker instance; an event is acknowledged
// once StreamNotify has stored its notifications, so each is stored at
// least once, and their message IDs keep a redelivered event's from being
// stored twice. It decides from the event alone (its type and the record
// after it, from the headers: the consumer is headers-only), never from
// the prescription's current state, so a redelivery, or a delivery to
// another instance, makes the same notifications.
//
// It has many events in hand at once: apply hands an event's
// notifications to a commit (notify.go) and returns ErrApplyPending; a
// commit stores the notifications of the events waiting as one atomic
// batch (one fsync), and the event is finished (acknowledged, or retried
// or put in the dead letter as any failed apply) once StreamNotify has
// stored them, at most NotifyInFlight events at once. Applied still passes
// an event only once its notifications are stored (the runner holds it at
// the first event not finished), and Stop waits for the events in flight.
// The notifications reach the stream in the order of their events, as
// they did one event at a time: the runner hands the events over in the
// log's order, and the batches and publishes go out in that order on one
// connection. As before, an event retried after a failure (or whose batch
// was refused, and published again each on its own) has its notifications
// stored after those of the events that followed it, including a later
// event about the same prescription; its eventSeq says which came first.
type Notifier struct {
	store   *Store
	metrics *Metrics
	log     *zap.Logger
	runner  *Runner[*service.Event]
	// slots holds one token per event whose notifications are in flight.
	slots chan struct{}
	// mu guards the events waiting for a commit, the commits running,
	// and the batching state (notify.go: commitLoop).
	mu       sync.Mutex
	pending  []notifyJob
	commits  int
	batching bool // StreamNotify takes atomic batches
	maxBatch int  // notifications in one atomic batch at most
	// publish is the async publish to StreamNotify (the store's
	// PublishMsgAsync; tests put a hand on it).
	publish func(*nats.Msg, ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
	// publishBatch publishes an atomic batch to StreamNotify and returns
	// once it is stored (jetstreamext.PublishMsgBatch).
	publishBatch func(context.Context, []*nats.Msg) error
}

// newNotifier is a notifier of store's event log, not yet consuming.
func newNotifier(store *Store, m *Metrics, log *zap.Logger) *Notifier {
	return &Notifier{store: store, metrics: m, log: log, slots: make(chan struct{}, NotifyInFlight), publish: store.js.PublishMsgAsync,
		maxBatch: NotifyMaxBatch,
		publishBatch: func(ctx context.Context, msgs []*nats.Msg) error {
			_, err := jetstreamext.PublishMsgBatch(ctx, store.js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
			return err
		}}
}

// StartNotifier creates (or resumes, updating its configuration in place)
// the durable consumer and starts publishing.
func StartNotifier(ctx context.Context, store *Store, m *Metrics, log *zap.Logger) (*Notifier, error) {
	return newNotifier(store, m, log).start(ctx)
}

// start starts p's consumer, committing in atomic batches when
// StreamNotify takes them.
func (p *Notifier) start(ctx context.Context) (*Notifier, error) {
	store := p.store
	ns, err := store.js.Stream(ctx, StreamNotify)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamNotify, err)
	}
	p.batching = batchingFor(ns.CachedInfo().Config)
	r, err := StartRunner(ctx, store.js, p.metrics, p.log, RunnerConfig[*service.Event]{
		Name:        ConsumerQueueProjector,
		Description: "publishes the notifications of each event (eps.notify.>) to EPS_NOTIFY",
		Stream:      StreamEvents,
		Durable:     true,
		HeadersOnly: true,
		Decode:      DecodeEvent,
		Apply:       p.apply,
		NoteFull:    store.NoteStorageFull,
	})
	if err != nil {
		return nil, err
	}
	p.runner = r
	return p, nil
}

// DecodeEvent is the one decoding of an event log message, for every
// consumer of the log: the record in its Eps-Record header, about the
// prescription its subject names. A message the broker did not write is
// refused.
func DecodeEvent(seq uint64, t time.Time, subject string, h nats.Header, data []byte) (*service.Event, error) {
	ev, err := decodeStored(seq, t, h, data)
	if err != nil {
		return nil, err
	}
	if ev.Record.ID == "" || subject != SubjectRx+ev.Record.ID {
		return nil, fmt.Errorf("event %d: the %s header is not about the prescription of subject %s", seq, HeaderRecord, subject)
	}
	return ev, nil
}

// Running reports whether the notifier is consuming.
func (p *Notifier) Running() bool { return p.runner.Running() }

// State is the notifier's consumer state (its applied sequence).
func (p *Notifier) State() RunnerState { return p.runner.State() }

// WaitApplied returns once the notifications of every event up to seq are
// stored.
func (p *Notifier) WaitApplied(ctx context.Context, seq uint64) error {
	return p.runner.WaitApplied(ctx, seq)
}

// Stop stops consuming and waits (at most 15 s) for the events in hand;
// events not yet acknowledged are redelivered later.
func (p *Notifier) Stop() { p.runner.Stop() }

// apply publishes the notifications of event d (transitionNotifications,
// and prescription-ready when it put the prescription into a queue) and
// returns ErrApplyPending: the event is finished, and acknowledged only if
// StreamNotify stored them all, once their acknowledgements are in. It
// waits first while NotifyInFlight events are in flight (at most until
// ctx ends: the event is then retried).
func (p *Notifier) apply(ctx context.Context, d *Delivery[*service.Event]) error {
	ev := d.Value
	ns := transitionNotifications(ev)
	if tracker.EnteredQueue(ev.Event, ev.Record) {
		ns = append(ns, readyNotification(ev))
	}
	if len(ns) == 0 {
		return nil
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("notifications of event %d: waiting for room among the events in flight: %w", d.Seq, ctx.Err())
	}
	p.mu.Lock()
	p.pending = append(p.pending, notifyJob{d, ns})
	start := p.commits < NotifyCommits
	if start {
		p.commits++
	}
	p.mu.Unlock()
	if start {
		go p.commitLoop()
	}
	return ErrApplyPending
}

// readyNotification is the prescription-ready notification of ev, whose
// record is the prescription as it entered the queue.
func readyNotification(ev *service.Event) pendingNotification {
	rec := ev.Record
	n := Notification{Event: NotifyReady, PrescriptionID: rec.ID, Status: rec.Status, Dispenser: rec.Nominated, Time: ev.Time, EventSeq: ev.Seq,
		Issue: rec.Number}
	return pendingNotification{"dispenser", DispenserNotifySubject(rec.Nominated, NotifyReady), n}
}

// transitionNotifications are the notifications of an event: to the
// prescribing organisation, eps.notify.prescriber.<ODS>.<event>, and to the
// dispenser concerned (the one that holds the prescription, or the one that
// just gave it up), eps.notify.dispenser.<ODS>.<event>.
func transitionNotifications(ev *service.Event) []pendingNotification {
	rec := ev.Record
	event := ev.Event
	if event == "" || event == rx.EventCancelKept || len(rec.History) == 0 {
		return nil
	}
	last := rec.History[len(rec.History)-1]
	if last.Issue != 0 {
		// A repeat dispensing event is about one issue: its status and
		// dispenser, which need not be the current issue's.
		if at, ok := rec.AtIssue(last.Issue); ok {
			rec = at
		}
	}
	n := Notification{Event: event, PrescriptionID: rec.ID, Status: rec.Status, Time: ev.Time, EventSeq: ev.Seq, Issue: rec.Number}
	ns := []pendingNotification{{"prescriber", PrescriberNotifySubject(rec.Prescriber, event), n}}
	dispenser := rec.Dispenser
	if dispenser == "" && last.Org != rec.Prescriber && last.Org != "" && last.Org != "EPS" {
		dispenser = last.Org // e.g. the dispenser that returned it
	}
	if dispenser != "" {
		n.Dispenser = dispenser
		ns = append(ns, pendingNotification{"dispenser", DispenserNotifySubject(dispenser, event), n})
	}
	return ns
}

// RemoveLegacyQueue deletes the stream EPS_QUEUE, which held the ready
// queues before they were kept in memory from the event log (the tracker
// index): nothing reads or writes it any more, and everything it held is
// in the event log. A broker that finds it removes it, and says so; with no
// such stream it costs one stream info request. A stream it cannot remove
// (credentials without the right, on an external server) is left, with a
// warning: it only takes room. Every broker instance sharing the log must
// run this version first: an earlier one still writes and reads the stream.
func RemoveLegacyQueue(ctx context.Context, s *Store, log *zap.Logger) {
	st, err := s.js.Stream(ctx, legacyStreamQueue)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	}
	if err == nil {
		info := st.CachedInfo()
		if err = s.js.DeleteStream(ctx, legacyStreamQueue); err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			log.Info("removed the stream "+legacyStreamQueue+": the ready queues are kept in memory from the event log now",
				zap.Uint64("entries", info.State.Msgs), zap.Uint64("bytes", info.State.Bytes))
			return
		}
	}
	log.Warn("the stream "+legacyStreamQueue+" is no longer used (the ready queues are kept in memory from the event log) but could not be removed; "+
		"remove it with: nats stream rm "+legacyStreamQueue, zap.Error(err))
}
