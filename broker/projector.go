package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
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

// QueueProjector keeps the dispensers' ready queues (StreamQueue) from the
// event log, and publishes a notification when a prescription enters a queue.
// It consumes the log through a durable consumer, so after a restart it goes
// on where it stopped; every step is idempotent, so a redelivered event does
// no harm.
type QueueProjector struct {
	store    *Store
	nc       *nats.Conn
	metrics  *Metrics
	log      *zap.Logger
	runner   *Runner[*service.Event]
	inflight sync.WaitGroup // enqueues not yet acknowledged by the queue stream
}

// StartQueueProjector creates (or resumes) the durable consumer and starts
// applying events.
func StartQueueProjector(ctx context.Context, store *Store, nc *nats.Conn, m *Metrics, log *zap.Logger) (*QueueProjector, error) {
	p := &QueueProjector{store: store, nc: nc, metrics: m, log: log}
	r, err := StartRunner(ctx, store.js, m, log, RunnerConfig[*service.Event]{
		Name:        ConsumerQueueProjector,
		Description: "keeps EPS_QUEUE (dispensers' ready queues) and publishes eps.notify.dispenser.*",
		Stream:      StreamEvents,
		Durable:     true,
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

// Running reports whether the projector is consuming.
func (p *QueueProjector) Running() bool { return p.runner.Running() }

// State is the projector's consumer state (its applied sequence).
func (p *QueueProjector) State() RunnerState { return p.runner.State() }

// WaitApplied returns once every event up to seq is in the queues.
func (p *QueueProjector) WaitApplied(ctx context.Context, seq uint64) error {
	return p.runner.WaitApplied(ctx, seq)
}

// Stop stops consuming and waits (at most 15 s) for the events in hand;
// events not yet acknowledged are redelivered later.
func (p *QueueProjector) Stop() { p.runner.Stop() }

// apply brings the queues in line with the prescription of event d.
func (p *QueueProjector) apply(ctx context.Context, d *Delivery[*service.Event]) error {
	ev := d.Value
	// Apply the prescription's current state, not this event's: events may
	// be handled out of order (a redelivery, or another broker instance
	// sharing this consumer), and the current state is what the queues must
	// show.
	cur, err := p.store.Current(ctx, ev.Record.ID)
	if err != nil {
		return err
	}
	if cur.Seq < ev.Seq {
		// Read from a replica that is behind: try again later.
		return fmt.Errorf("current state of %s is behind event %d", ev.Record.ID, ev.Seq)
	}
	// Every delivery stores the event's notifications (at least once: the
	// event is acknowledged only after); their message IDs keep a
	// redelivered event's notifications from being stored twice.
	if err := p.notifyTransition(ctx, ev); err != nil {
		return err
	}
	if cur.Seq > ev.Seq {
		p.metrics.Projected.WithLabelValues("queue", "superseded").Inc()
	}
	newIssue := ev.Event == rx.EventReady && d.Delivered == 1 && cur.Record.IssueNumber() > 1
	ev = cur
	if !ev.Record.Ready() {
		// Leaving the queues: wait for the enqueues in flight first, so that a
		// purge is never overtaken by an earlier event's enqueue.
		p.inflight.Wait()
		if err := p.purge(ctx, ev.Record.ID); err != nil {
			return err
		}
		p.metrics.Projected.WithLabelValues("queue", "applied").Inc()
		return nil
	}
	if newIssue {
		// A repeat dispensing issue has just become ready: an entry left by
		// an earlier issue (one that expired in a queue, or whose patient
		// has since nominated elsewhere) goes first, so that the new issue
		// takes its place at the back of its dispenser's queue and the
		// dispenser is told. Only on the first delivery: a redelivered event
		// must not remove the entry its first delivery made.
		p.inflight.Wait()
		if err := p.purge(ctx, ev.Record.ID); err != nil {
			return err
		}
	}
	if err := p.enqueue(ev, d.Finish); err != nil {
		return err
	}
	return ErrApplyPending
}

// enqueue puts a ready prescription in its dispenser's queue, without
// waiting: the event is finished (acknowledged), and the dispenser
// notified, once the queue stream has stored the entry. The entry's message
// ID makes a redelivered event's enqueue a no-op.
func (p *QueueProjector) enqueue(ev *service.Event, finish func(error)) error {
	rec := ev.Record
	data, _ := json.Marshal(queueMsg{PrescriptionID: rec.ID, EventSeq: ev.Seq, Issue: rec.Number})
	msg := &nats.Msg{Subject: QueueSubject(rec.Nominated, rec.ID), Data: data, Header: nats.Header{}}
	msg.Header.Set("Eps-Event-Seq", strconv.FormatUint(ev.Seq, 10))
	start := time.Now()
	// Only into an empty place: a prescription already queued keeps its
	// place (oldest first), whatever later events say about it.
	fut, err := p.store.js.PublishMsgAsync(msg, jetstream.WithMsgID(rec.ID+":"+strconv.FormatUint(ev.Seq, 10)),
		jetstream.WithExpectStream(StreamQueue), jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	p.inflight.Add(1)
	go func() {
		defer p.inflight.Done()
		select {
		case <-fut.Ok():
			p.metrics.JetStreamPublish.WithLabelValues(StreamQueue, "ok").Observe(time.Since(start).Seconds())
			// Also when the entry was stored by an earlier delivery of this
			// event (a duplicate): its notification may not have been.
			if err := p.notifyReady(ev); err != nil {
				finish(err)
				return
			}
			p.metrics.Projected.WithLabelValues("queue", "applied").Inc()
			finish(nil)
		case err := <-fut.Err():
			if isWrongLastSequence(err) {
				p.metrics.JetStreamPublish.WithLabelValues(StreamQueue, "queued_already").Observe(time.Since(start).Seconds())
				// Already in the queue, in its place. If this event put it
				// there (a redelivery after the queue's duplicate window),
				// its notification may not have been stored yet.
				if err := p.notifyQueuedAlready(ev); err != nil {
					finish(err)
					return
				}
				p.metrics.Projected.WithLabelValues("queue", "applied").Inc()
				finish(nil)
				return
			}
			p.metrics.JetStreamPublish.WithLabelValues(StreamQueue, "error").Observe(time.Since(start).Seconds())
			finish(fmt.Errorf("enqueue: %w", err))
		}
	}()
	return nil
}

// notifyReady tells the dispenser that a prescription has entered its
// ready queue (eps.notify.dispenser.<ODS>.prescription-ready), and returns
// once StreamNotify has stored it.
func (p *QueueProjector) notifyReady(ev *service.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.publishNotifications(ctx, []pendingNotification{readyNotification(ev)})
}

// notifyQueuedAlready stores the ready notification of an event whose
// enqueue found the prescription queued already, when the entry is this
// event's own: an earlier delivery of the event stored it and stopped
// before its notification was stored.
func (p *QueueProjector) notifyQueuedAlready(ev *service.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	raw, err := p.store.queue.GetLastMsgForSubject(ctx, QueueSubject(ev.Record.Nominated, ev.Record.ID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // dequeued since
	}
	if err != nil {
		return fmt.Errorf("read queue entry: %w", err)
	}
	var e queueMsg
	if json.Unmarshal(raw.Data, &e) != nil || e.EventSeq != ev.Seq {
		return nil // another event's entry: that event notified
	}
	return p.publishNotifications(ctx, []pendingNotification{readyNotification(ev)})
}

// readyNotification is the prescription-ready notification of ev, whose
// record is the prescription as it entered the queue.
func readyNotification(ev *service.Event) pendingNotification {
	rec := ev.Record
	n := Notification{Event: NotifyReady, PrescriptionID: rec.ID, Status: rec.Status, Dispenser: rec.Nominated, Time: ev.Time, EventSeq: ev.Seq,
		Issue: rec.Number}
	return pendingNotification{"dispenser", DispenserNotifySubject(rec.Nominated, NotifyReady), n}
}

// notifyTransition tells the prescribing organisation, and the dispenser
// concerned, about every event (transitionNotifications), and returns once
// StreamNotify has stored them; delivery is at least once.
func (p *QueueProjector) notifyTransition(ctx context.Context, ev *service.Event) error {
	ns := transitionNotifications(ev)
	if len(ns) == 0 {
		return nil
	}
	return p.publishNotifications(ctx, ns)
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

func (p *QueueProjector) purge(ctx context.Context, id string) error {
	return p.store.Dequeue(ctx, "*", id)
}
