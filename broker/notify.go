package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// Notifications at least once (issue 12). Every notification the queue
// projector makes is published to JetStream on its per-organisation subject
// (eps.notify.dispenser.<ODS>.<event>, eps.notify.prescriber.<ODS>.<event>)
// and stored in StreamNotify before the event it is about is acknowledged.
// A publish to a stream's subject is also an ordinary NATS message, so core
// NATS subscribers of those subjects still get it at once (the fast path).
// A dispensing or prescribing system that must not miss one reads the stream
// with its own durable pull consumer (NotifyConsumerConfig), which the
// broker makes for each dispenser and prescriber NATS user of its embedded
// server (EnsureNotifyConsumers). On an external server (--nats-url) the
// users, their permissions and so their consumers are the operator's: the
// broker makes the stream and no user consumer, and removes none.
const (
	// StreamNotify keeps the notifications for the organisations' durable
	// consumers, for --notify-max-age.
	StreamNotify = "EPS_NOTIFY"
	// SubjectNotify is the prefix of every notification subject.
	SubjectNotify = "eps.notify."
	// NotifyDuplicates is how long StreamNotify remembers a notification's
	// message ID: a redelivered event's notification made again within it
	// is not stored twice (nor delivered twice to a durable consumer).
	NotifyDuplicates = time.Hour
	// HeaderNotifyKind is the notification header naming its audience and
	// event, e.g. dispenser.prescription-ready.
	HeaderNotifyKind = "Eps-Notify-Kind"
	// notifyUserMeta marks the consumers the broker made for a NATS user.
	notifyUserMeta = "eps-notify-user"
)

// DropsOldest reports whether a stream makes room by dropping its oldest
// messages (so that being at its limit is its normal state, not an alert).
func DropsOldest(stream string) bool { return stream == StreamNotify }

// openNotify creates or updates StreamNotify. A full stream drops its oldest
// notifications (discard old): refusing new ones would stop the queue
// projector (an event is acknowledged only once its notification is
// stored), and with it the dispensers' ready queues, for want of room for a
// message that only says what the queues and the tracker already show.
// Deletes of single messages are denied, as on the other streams; a purge
// stays possible for an operator who must empty it (the notifications carry
// no patient identifiers, and nothing is rebuilt from them).
func openNotify(ctx context.Context, js jetstream.JetStream, replicas int, maxAge time.Duration, limit int64) (jetstream.Stream, error) {
	if maxAge <= 0 {
		maxAge = 7 * 24 * time.Hour
	}
	return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamNotify,
		Description: "Notifications for dispensing and prescribing systems (eps.notify.<dispenser|prescriber>.<ODS>.<event>), kept for their durable consumers",
		Subjects:    []string{SubjectNotify + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      maxAge,
		MaxBytes:    natsLimit(limit),
		Discard:     jetstream.DiscardOld,
		Duplicates:  min(NotifyDuplicates, maxAge),
		DenyDelete:  true,
		// The notifier commits many events' notifications as one atomic
		// batch (one fsync under sync always; notify.go commitLoop).
		AllowAtomicPublish: true,
	})
}

// notifyMsgID is the message ID of a notification: the event's sequence,
// the audience and the event, so that the notifications of one event made
// again (a redelivered event) are stored once.
func notifyMsgID(seq uint64, audience, event string) string {
	return strconv.FormatUint(seq, 10) + ":" + audience + ":" + event
}

// pendingNotification is a notification to publish.
type pendingNotification struct {
	audience, subject string
	n                 Notification
}

// The notifier's commits. Each event's notifications are handed to a
// commit (apply returns ErrApplyPending); a commit takes every event
// waiting, up to NotifyMaxBatch notifications, and publishes their
// notifications as one JetStream atomic batch, which the server stores with
// one fsync under sync always (a stream of one replica fsyncs every
// message published on its own, however many are in flight), then
// finishes each event: acknowledged once the batch is. While the commit
// runs, new events gather for the next. Fewer than
// notifyMinBatch notifications, or a stream that takes no atomic batch (a
// server older than 2.12), are published each on its own, all at once,
// and each event finishes when its own are acknowledged. A batch refused
// or unanswered (nothing of it stored, or its outcome unknown) is
// published again that way: each notification by its message ID, so one
// already stored is a duplicate, not a second copy; an event whose own
// notification is refused then is retried, and the others acknowledged.
const (
	// NotifyInFlight is how many events the notifier has in flight at
	// most: handed to a commit, their notifications not yet all stored.
	// The next event waits for one of them to finish.
	NotifyInFlight = 256
	// NotifyCommits is how many commits run at once: one, so that the
	// notifications go out in the order of their events (two commits
	// could send their batches the other way round); the events arriving
	// while it waits for its batch's acknowledgement gather for the next.
	NotifyCommits = 1
	// NotifyMaxBatch is the most notifications one atomic batch holds
	// (the server's max_batch_size is 1,000 by default; a server with a
	// lower one refuses a larger batch, and the notifier then halves it).
	NotifyMaxBatch = 512
	// notifyMinBatch is the fewest notifications committed as an atomic
	// batch (the server stages a batch in a store of its own, a fixed cost:
	// see MinCommitBatch).
	notifyMinBatch = 8
)

// notifyJob is an event handed to a commit, with its notifications.
type notifyJob struct {
	d  *Delivery[*service.Event]
	ns []pendingNotification
}

// commitLoop commits the events waiting, a batch at a time, until none is
// left.
func (p *Notifier) commitLoop() {
	for {
		p.mu.Lock()
		if len(p.pending) == 0 {
			p.commits--
			p.mu.Unlock()
			return
		}
		n, take := 0, 0
		for take < len(p.pending) && (take == 0 || n+len(p.pending[take].ns) <= p.maxBatch) {
			n += len(p.pending[take].ns)
			take++
		}
		jobs := p.pending[:take:take]
		p.pending = p.pending[take:]
		batching := p.batching && n >= notifyMinBatch
		p.mu.Unlock()
		if !batching || !p.commitBatch(jobs, n) {
			p.commitEach(jobs)
		}
	}
}

// finishJob finishes a job's event with err and makes room for the next.
func (p *Notifier) finishJob(j notifyJob, err error) {
	j.d.Finish(err)
	<-p.slots
}

// commitBatch publishes the notifications of jobs (n in all) as one atomic
// batch and, when the stream stored it, finishes every job: it reports
// false, having finished none, when the batch was refused or unanswered.
func (p *Notifier) commitBatch(jobs []notifyJob, n int) bool {
	msgs := make([]*nats.Msg, 0, n)
	for _, j := range jobs {
		for _, pn := range j.ns {
			msgs = append(msgs, notificationMsg(pn))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifyAckWait)
	defer cancel()
	start := time.Now()
	// No flow control: the messages go out back to back on one
	// connection, and the batch's acknowledgement covers them all.
	err := p.publishBatch(ctx, msgs)
	took := time.Since(start).Seconds()
	if err != nil {
		p.metrics.JetStreamPublish.WithLabelValues(StreamNotify, "batch_error").Observe(took)
		var apiErr *jetstream.APIError
		switch {
		case errors.Is(err, jetstreamext.ErrInvalidBatchAck),
			errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishNotEnabled:
			p.mu.Lock()
			p.batching = false
			p.mu.Unlock()
			p.log.Warn("the notification stream takes no atomic batch: each notification is published on its own", zap.Error(err))
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishExceedsLimit:
			p.mu.Lock()
			p.maxBatch = max(notifyMinBatch, min(p.maxBatch, n)/2)
			p.mu.Unlock()
			p.log.Warn("a notification batch was larger than the server allows: batches halved", zap.Int("notifications", n), zap.Error(err))
		default:
			p.log.Debug("notification batch not stored; published each on its own", zap.Int("notifications", n), zap.Error(err))
		}
		return false
	}
	for _, j := range jobs {
		for _, pn := range j.ns {
			p.metrics.Notifications.WithLabelValues(pn.audience, pn.n.Event).Inc()
			p.metrics.JetStreamPublish.WithLabelValues(StreamNotify, "ok").Observe(took)
		}
	}
	for _, j := range jobs {
		p.finishJob(j, nil)
	}
	return true
}

// commitEach publishes the notifications of jobs each on its own, all at
// once, and returns: each job finishes once its own are acknowledged,
// while the commit goes on with the events waiting.
func (p *Notifier) commitEach(jobs []notifyJob) {
	for _, j := range jobs {
		sent, err := p.publishNotifications(j.ns)
		if len(sent) == 0 {
			p.finishJob(j, err)
			continue
		}
		go func() { p.finishJob(j, errors.Join(err, p.awaitStored(sent))) }()
	}
}

// notifyAckWait bounds a commit: how long the notifier waits for an atomic
// batch's acknowledgement, or a notification's, before it publishes the
// batch again each on its own or retries the event. It is under the
// consumer's AckWait, so that the server does not deliver an event again
// while it is in flight.
const notifyAckWait = 10 * time.Second

// notificationMsg is the message of a notification: its JSON, its kind
// header and its message ID.
func notificationMsg(pn pendingNotification) *nats.Msg {
	body, _ := json.Marshal(pn.n)
	msg := &nats.Msg{Subject: pn.subject, Data: body, Header: nats.Header{}}
	msg.Header.Set(HeaderNotifyKind, pn.audience+"."+pn.n.Event)
	msg.Header.Set(jetstream.MsgIDHeader, notifyMsgID(pn.n.EventSeq, pn.audience, pn.n.Event))
	msg.Header.Set(jetstream.ExpectedStreamHeader, StreamNotify)
	return msg
}

// sentNotification is a notification published, its acknowledgement
// awaited.
type sentNotification struct {
	pn    pendingNotification
	fut   jetstream.PubAckFuture
	start time.Time
}

// publishNotifications publishes the notifications of an event to
// StreamNotify without waiting for them to be stored, each with its message
// ID, and returns those it published; err is the first publish refused at
// once (the rest are then not published).
func (p *Notifier) publishNotifications(ns []pendingNotification) ([]sentNotification, error) {
	sent := make([]sentNotification, 0, len(ns))
	for _, pn := range ns {
		start := time.Now()
		fut, err := p.publish(notificationMsg(pn))
		if err != nil {
			p.metrics.JetStreamPublish.WithLabelValues(StreamNotify, "error").Observe(time.Since(start).Seconds())
			return sent, fmt.Errorf("notification %s: %w", pn.subject, err)
		}
		sent = append(sent, sentNotification{pn, fut, start})
	}
	return sent, nil
}

// awaitStored waits for the acknowledgement of every notification sent and
// returns nil once StreamNotify has stored them all (or already had: a
// duplicate), or the errors of those it did not store.
func (p *Notifier) awaitStored(sent []sentNotification) error {
	timeout := time.NewTimer(notifyAckWait)
	defer timeout.Stop()
	var errs []error
	for _, s := range sent {
		select {
		case ack := <-s.fut.Ok():
			outcome := "ok"
			if ack.Duplicate {
				outcome = "duplicate"
			} else {
				p.metrics.Notifications.WithLabelValues(s.pn.audience, s.pn.n.Event).Inc()
			}
			p.metrics.JetStreamPublish.WithLabelValues(StreamNotify, outcome).Observe(time.Since(s.start).Seconds())
		case err := <-s.fut.Err():
			p.metrics.JetStreamPublish.WithLabelValues(StreamNotify, "error").Observe(time.Since(s.start).Seconds())
			errs = append(errs, fmt.Errorf("notification %s: %w", s.pn.subject, err))
		case <-timeout.C:
			p.metrics.JetStreamPublish.WithLabelValues(StreamNotify, "error").Observe(time.Since(s.start).Seconds())
			errs = append(errs, fmt.Errorf("notification %s: no acknowledgement within %s", s.pn.subject, notifyAckWait))
		}
	}
	return errors.Join(errs...)
}

// NotifyConsumerName is the durable consumer of StreamNotify the broker
// makes for a dispenser or prescriber NATS user: the user's name.
func NotifyConsumerName(u NATSUser) string { return u.Name }

// NotifyFilter is the subjects a dispenser or prescriber NATS user may read:
// its own organisation's notifications.
func NotifyFilter(u NATSUser) string {
	switch u.Role {
	case NATSRoleDispenser:
		return SubjectNotifyDispenser + SubjectToken(u.ODS) + ".>"
	case NATSRolePrescriber:
		return SubjectNotifyPrescriber + SubjectToken(u.ODS) + ".>"
	}
	return ""
}

// NotifyInboxPrefix is the reply subject prefix a dispenser or prescriber
// NATS user's client must use (nats.go: nats.CustomInboxPrefix; nats CLI:
// --inbox-prefix). The messages its consumer delivers come to that inbox,
// which only this user may subscribe to.
func NotifyInboxPrefix(u NATSUser) string { return "_INBOX_" + u.Name }

// NotifyConsumerConfig is the durable pull consumer of StreamNotify for a
// dispenser or prescriber NATS user: named after the user, filtered to its
// own organisation's subjects, from the first notification the stream
// holds, explicit acknowledgement, acknowledgement wait 30 s, redelivered
// until acknowledged, at most 1,000 unacknowledged. The broker makes it on
// its embedded server (EnsureNotifyConsumers); on an external server the
// operator makes the same, with the README's nats consumer add, whose
// configuration (the description too: "notifications of <role> <ODS>";
// the consumer's name is the user's) TestExternalNATSNotifyConsumers holds
// equal to this one.
func NotifyConsumerConfig(u NATSUser) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       NotifyConsumerName(u),
		Description:   fmt.Sprintf("notifications of %s %s", u.Role, u.ODS),
		FilterSubject: NotifyFilter(u),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	}
}

// EnsureNotifyConsumers makes (or updates) a durable pull consumer of
// StreamNotify for every dispenser and prescriber user, filtered to its own
// organisation's subjects, and removes the ones it made for users since
// removed. Users may read their consumer but not make one: a consumer's
// configuration could deliver messages to any subject, so only the broker
// makes them. The consumer starts at the first notification the stream
// holds.
func EnsureNotifyConsumers(ctx context.Context, s *Store, users []NATSUser, log *zap.Logger) error {
	want := map[string]bool{}
	for _, u := range users {
		if !u.Role.NeedsODS() {
			continue
		}
		name := NotifyConsumerName(u)
		want[name] = true
		cfg := NotifyConsumerConfig(u)
		cfg.Metadata = map[string]string{notifyUserMeta: u.Name}
		if _, err := s.js.CreateOrUpdateConsumer(ctx, StreamNotify, cfg); err != nil {
			return fmt.Errorf("notification consumer of NATS user %s: %w", u.Name, err)
		}
	}
	st, err := s.js.Stream(ctx, StreamNotify)
	if err != nil {
		return fmt.Errorf("stream %s: %w", StreamNotify, err)
	}
	list := st.ListConsumers(ctx)
	var stale []string
	for ci := range list.Info() {
		if owner, ok := ci.Config.Metadata[notifyUserMeta]; ok && !want[ci.Name] && owner != "" {
			stale = append(stale, ci.Name)
		}
	}
	if err := list.Err(); err != nil {
		return fmt.Errorf("consumers of %s: %w", StreamNotify, err)
	}
	for _, name := range stale {
		if err := st.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("remove the notification consumer of a removed NATS user %s: %w", name, err)
		}
		log.Info("removed the notification consumer of a removed NATS user", zap.String("consumer", name))
	}
	return nil
}
