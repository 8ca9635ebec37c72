package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The consumer runner: every consumer of a stream (the notifier, the
// tracker index with the ready queues, the nomination reports) reads its
// stream through it, so that decoding, retries, the dead letter, the
// metrics and the applied sequence are written once. The notifier
// (projector.go) stores each event's notifications (notify.go) before the
// event is acknowledged. The tracker rebuild tool is no projection: it reads the event
// log once with ReadStream (below), decoding with the same DecodeEvent,
// skipping what that refuses and writing nothing, not even a dead letter.

// Names of the consumers (the durable consumer's name, or the label of an
// ordered one), used in metrics and in the dead letter's subjects.
const (
	ConsumerTrackerIndex      = "eps-tracker-index"
	ConsumerNominationReports = "eps-nomination-reports"
)

// Dead letter stream: a copy of every message a consumer could not apply,
// one per consumer and message, on its own subject:
//
//	eps.dead.<consumer>.<stream>.<stream sequence>
//
// e.g. eps.dead.eps-tracker-index.EPS_EVENTS.12 (DeadSubject). A dead
// letter is written only when its subject holds none (the publish expects
// the subject's last sequence to be 0), so a consumer that meets the same
// message again, however much later (the tracker index rebuilt from the
// start of the log, the nomination reports at every start, the notifier's
// consumer made again), finds it already there and writes no second copy.
// Dead letters written before this layout, on eps.dead.<consumer>, are
// moved to it when the broker opens the stream (migrateDeadLetters).
const (
	StreamDead  = "EPS_DEAD"
	SubjectDead = "eps.dead."
	// Headers a dead letter carries beside the original message's own.
	HeaderDeadReason   = "Eps-Dead-Reason"
	HeaderDeadStream   = "Eps-Dead-Stream"
	HeaderDeadSeq      = "Eps-Dead-Seq"
	HeaderDeadSubject  = "Eps-Dead-Subject"
	HeaderDeadConsumer = "Eps-Dead-Consumer"
	HeaderDeadDelivery = "Eps-Dead-Deliveries"
)

// RetryPolicy is how a durable consumer retries: a message whose apply
// fails with a transient error is redelivered after Base, doubling on every
// further delivery up to Max; after MaxDeliveries deliveries it goes to the
// dead letter.
type RetryPolicy struct {
	Base, Max     time.Duration
	MaxDeliveries uint64
}

// DefaultRetry is the policy of the broker's consumers.
var DefaultRetry = RetryPolicy{Base: RetryBase, Max: RetryMax, MaxDeliveries: MaxDeliveries}

// The default retry policy.
const (
	RetryBase     = 100 * time.Millisecond
	RetryMax      = 30 * time.Second
	MaxDeliveries = 20
)

// permanentError is an error that no retry can cure.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that no retry can cure: the runner puts the
// message in the dead letter at once. A decode error is always permanent.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// ErrApplyPending is returned by an apply func that finishes the delivery
// later, by calling Delivery.Finish once.
var ErrApplyPending = errors.New("apply finishes later")

// Verdict is what the runner does with a message after its apply.
type Verdict int

const (
	VerdictAck   Verdict = iota // applied
	VerdictRetry                // redeliver after a delay
	VerdictDead                 // copy to the dead letter, then terminate
)

// Decide says what to do after a message's delivery number delivered (1
// for the first) ended with err, and after what delay when it is retried.
func (p RetryPolicy) Decide(err error, delivered uint64) (Verdict, time.Duration) {
	switch {
	case err == nil:
		return VerdictAck, 0
	case IsPermanent(err), delivered >= p.MaxDeliveries:
		return VerdictDead, 0
	}
	return VerdictRetry, p.Backoff(delivered)
}

// Backoff is the delay before the redelivery that follows delivery number
// delivered: Base, doubled each time, at most Max.
func (p RetryPolicy) Backoff(delivered uint64) time.Duration {
	d := p.Base
	for i := uint64(1); i < delivered && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Delivery is one message handed to an apply func, decoded.
type Delivery[T any] struct {
	Seq       uint64 // stream sequence
	Delivered uint64 // delivery number, 1 for the first
	Time      time.Time
	Value     T
	msg       jetstream.Msg
	finish    func(error)
	finished  atomic.Bool
}

// Finish ends a delivery whose apply returned ErrApplyPending, with the
// apply's outcome (nil: applied).
func (d *Delivery[T]) Finish(err error) {
	if d.finished.CompareAndSwap(false, true) {
		d.finish(err)
	}
}

// RunnerConfig describes a consumer.
type RunnerConfig[T any] struct {
	// Name is the durable consumer's name (or an ordered consumer's label):
	// metrics and dead letter subjects carry it.
	Name        string
	Description string
	Stream      string
	Filter      string // subject filter; empty: the whole stream
	// Durable consumers acknowledge each message and retry; otherwise the
	// runner reads the stream in order with an ordered consumer from
	// StartSeq (an in-memory projection that cannot fail to apply).
	Durable  bool
	StartSeq uint64
	// HeadersOnly has the server deliver each message's headers without
	// its data (Decode gets empty data): for projections that read only
	// headers (the event log's Eps-Record and Eps-Event). A durable
	// consumer made without it is updated in place. A message given up on
	// is read in full for its dead letter.
	HeadersOnly bool
	// Retry is the durable consumer's retry policy (zero: DefaultRetry).
	Retry RetryPolicy
	// NoteFull, when not nil, is told of a dead letter refused for want
	// of space (Store.NoteStorageFull: /readyz and the storage metrics).
	NoteFull func(stream string)
	// Decode turns a stored message into T; an error puts it in the dead
	// letter.
	Decode func(seq uint64, t time.Time, subject string, h nats.Header, data []byte) (T, error)
	// Apply applies it; see Permanent and ErrApplyPending.
	Apply func(ctx context.Context, d *Delivery[T]) error
}

// Runner consumes one stream for one projection.
type Runner[T any] struct {
	cfg     RunnerConfig[T]
	js      jetstream.JetStream
	metrics *Metrics
	log     *zap.Logger
	cc      jetstream.ConsumeContext // the durable consumer's
	cons    jetstream.Consumer       // the durable consumer (nil for an ordered one)
	ord     orderedState             // the ordered consumer's (ordered.go)
	running atomic.Bool
	stopped chan struct{} // closed by Stop: ends the ack floor loop

	mu          sync.Mutex
	highest     uint64              // the highest stream sequence delivered
	outstanding map[uint64]struct{} // delivered, not yet acknowledged or dead
	redelivered map[uint64]struct{} // of those, waiting for a redelivery
	// floor is the durable consumer's ack floor as last read from the
	// server: every message up to it was acknowledged (applied) or
	// terminated (put in the dead letter), by this runner or by another
	// instance sharing the consumer.
	floor    uint64
	moved    chan struct{} // closed (and replaced) when Applied moves
	inflight sync.WaitGroup
}

// StartRunner creates (or resumes) the consumer and starts applying.
func StartRunner[T any](ctx context.Context, js jetstream.JetStream, m *Metrics, log *zap.Logger, cfg RunnerConfig[T]) (*Runner[T], error) {
	if cfg.Retry == (RetryPolicy{}) {
		cfg.Retry = DefaultRetry
	}
	r := &Runner[T]{cfg: cfg, js: js, metrics: m, log: log.With(zap.String("consumer", cfg.Name)),
		outstanding: map[uint64]struct{}{}, redelivered: map[uint64]struct{}{}, moved: make(chan struct{}), stopped: make(chan struct{})}
	if !cfg.Durable {
		if err := r.startOrdered(ctx); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", cfg.Name, err)
		}
		r.running.Store(true)
		return r, nil
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Name,
		Description:   cfg.Description,
		FilterSubject: cfg.Filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4096,
		// The runner counts deliveries itself (MaxDeliveries) so that
		// the last one goes to the dead letter, not silently nowhere.
		MaxDeliver:  -1,
		HeadersOnly: cfg.HeadersOnly,
	})
	if err == nil {
		var info *jetstream.ConsumerInfo
		if info, err = cons.Info(ctx); err == nil {
			r.highest, r.floor = info.AckFloor.Stream, info.AckFloor.Stream
			r.cons = cons
		}
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cfg.Name, err)
	}
	r.cc, err = cons.Consume(r.handle, jetstream.PullMaxMessages(512), jetstream.PullHeartbeat(ConsumeHeartbeat), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		switch {
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			r.running.Store(false)
			r.log.Error("consumer is gone; the broker is not ready until it restarts", zap.Error(err))
		case !errors.Is(err, jetstream.ErrNoHeartbeat):
			r.log.Warn("consume error", zap.Error(err))
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", cfg.Name, err)
	}
	r.running.Store(true)
	go r.floorLoop()
	return r, nil
}

// A durable consumer is shared by every broker instance: a message this
// runner failed to apply (Nak) may be redelivered to another instance,
// which applies it, and never come back here. The runner would keep it in
// its books for good, and its applied sequence would stop there. So the
// consumer's ack floor, which the server keeps for all the instances, is
// read while the runner has messages waiting for a redelivery (every
// FloorEvery: one consumer info request) and while WaitApplied waits; a
// message at or under it is dropped from the books (applied by someone),
// and Applied is never below it. The ack floor is the only exact answer:
// a redelivery "overdue" by some time could still be in another instance's
// hands, or waiting out its backoff (up to RetryMax).
const FloorEvery = time.Second

// floorLoop reads the ack floor every FloorEvery while a message waits
// for a redelivery, until the runner stops.
func (r *Runner[T]) floorLoop() {
	t := time.NewTicker(FloorEvery)
	defer t.Stop()
	for {
		select {
		case <-r.stopped:
			return
		case <-t.C:
		}
		r.mu.Lock()
		waiting := len(r.redelivered) > 0
		r.mu.Unlock()
		if waiting {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = r.readFloor(ctx)
			cancel()
		}
	}
}

// readFloor reads the durable consumer's ack floor from the server and
// drops from the books every message at or under it.
func (r *Runner[T]) readFloor(ctx context.Context) error {
	info, err := r.cons.Info(ctx)
	if err != nil {
		return err
	}
	r.noteFloor(info.AckFloor.Stream)
	return nil
}

// noteFloor records an ack floor: the messages at or under it were applied
// (or put in the dead letter) by some instance.
func (r *Runner[T]) noteFloor(floor uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if floor <= r.floor {
		return
	}
	r.floor = floor
	r.highest = max(r.highest, floor)
	for s := range r.outstanding {
		if s <= floor {
			// Still in hand here (redelivered elsewhere after AckWait) or
			// waiting for a redelivery that went to another instance:
			// either way another instance applied it.
			delete(r.outstanding, s)
			delete(r.redelivered, s)
		}
	}
	r.signal()
}

// ConsumeHeartbeat is the idle heartbeat the runner asks of the server
// while its pull request waits. Two missed in a row (2 s) and the client
// takes the consumer for lost: an ordered consumer is then made again from
// the next sequence, a durable one's pull request sent again. That is how
// a consumer whose server went away is noticed when the connection itself
// did not drop (the node holding an ordered consumer, an R1 consumer,
// stopped or cut off while the broker is connected to another node; a
// durable consumer's leader moved). nats.go's defaults are 5 s for an
// ordered consumer and 15 s for a durable one (half the pull's 30 s
// expiry), so the tracker index stood still for 10 s or more after such a
// failover, and releases answered 503 meanwhile (they wait at most
// service.CatchUpTimeout, 5 s, for the index). A heartbeat is sent only
// while the consumer has nothing to deliver: at most one small message a
// second per consumer and broker instance.
const ConsumeHeartbeat = time.Second

// Running reports whether the runner is consuming.
func (r *Runner[T]) Running() bool { return r.running.Load() }

// Stop stops consuming and waits (at most 15 s) for the messages in hand;
// those not yet acknowledged are redelivered later.
func (r *Runner[T]) Stop() {
	if !r.running.CompareAndSwap(true, false) {
		return
	}
	close(r.stopped)
	if !r.cfg.Durable {
		r.stopOrdered()
		return
	}
	r.cc.Drain()
	done := make(chan struct{})
	go func() {
		<-r.cc.Closed()
		r.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		r.log.Warn("stopped with messages in hand; they will be redelivered")
	}
}

// Applied is the stream sequence up to which every message of the
// consumer has been applied (or put in the dead letter): a message waiting
// for a redelivery, or whose apply has not finished, holds it back. For a
// durable consumer it is at least the consumer's ack floor as last read
// (exact across the instances sharing it); above that it speaks for the
// messages delivered to this runner. WaitApplied on a durable consumer
// waits for the ack floor itself.
func (r *Runner[T]) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.appliedLocked()
}

func (r *Runner[T]) appliedLocked() uint64 {
	a := r.highest
	for s := range r.outstanding {
		a = min(a, s-1)
	}
	return a
}

// RunnerState is what a runner has done, for tests and diagnostics.
type RunnerState struct {
	Name string
	// Consumer is the server's name of the consumer now read: the
	// durable's, or the ordered consumer's (a new one each time it is
	// made again; "" while it is being made).
	Consumer     string
	Applied      uint64
	Highest      uint64 // the highest sequence delivered here, or under the ack floor
	InHand       int    // delivered, not finished
	Redelivering int    // of those, waiting for a redelivery after a failure
}

func (s RunnerState) String() string {
	return fmt.Sprintf("%s: applied %d, delivered up to %d, in hand %d, waiting for redelivery %d",
		s.Name, s.Applied, s.Highest, s.InHand, s.Redelivering)
}

// State reports the runner's state.
func (r *Runner[T]) State() RunnerState {
	consumer := r.cfg.Name
	if !r.cfg.Durable {
		consumer, _ = r.ord.current.Load().(string)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return RunnerState{Name: r.cfg.Name, Consumer: consumer, Applied: r.appliedLocked(), Highest: r.highest, InHand: len(r.outstanding), Redelivering: len(r.redelivered)}
}

// WaitApplied returns once every message up to seq has been applied (or
// put in the dead letter), or with ctx's error. For an ordered consumer,
// that is Applied reaching seq. For a durable consumer, which other broker
// instances may share, it is the consumer's ack floor on the server
// reaching seq, whichever instance applied the messages: read once this
// runner's own Applied is there (its acknowledgements sent), and every
// floorPoll meanwhile, since the messages may all go to another instance.
func (r *Runner[T]) WaitApplied(ctx context.Context, seq uint64) error {
	next := time.Now() // the next read of the ack floor: at once
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		r.mu.Lock()
		applied, floor, moved := r.appliedLocked(), r.floor, r.moved
		r.mu.Unlock()
		if r.cons == nil && applied >= seq || r.cons != nil && floor >= seq {
			return nil
		}
		var tick <-chan time.Time
		if r.cons != nil {
			if applied >= seq {
				// Applied here: the acknowledgements are on their way.
				if soon := time.Now().Add(floorPoll / 10); soon.Before(next) {
					next = soon
				}
			}
			t.Reset(time.Until(next))
			tick = t.C
		}
		select {
		case <-moved:
		case <-tick:
			// Each read bounded: one sent to a consumer leader that was
			// just cut off gets no answer, and the next read goes to the
			// leader elected meanwhile.
			rctx, cancel := context.WithTimeout(ctx, floorReadTimeout)
			_ = r.readFloor(rctx)
			cancel()
			next = time.Now().Add(floorPoll)
		case <-ctx.Done():
			return fmt.Errorf("%s applied %d of %d (ack floor %d): %w", r.cfg.Name, applied, seq, floor, ctx.Err())
		}
	}
}

// floorPoll is how often WaitApplied on a durable consumer reads the ack
// floor while this runner has not applied up to the sequence waited for;
// each read waits at most floorReadTimeout.
const (
	floorPoll        = 200 * time.Millisecond
	floorReadTimeout = 2 * time.Second
)

func (r *Runner[T]) signal() {
	close(r.moved)
	r.moved = make(chan struct{})
}

func (r *Runner[T]) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		r.log.Error("message without metadata", zap.Error(err))
		_ = m.Term()
		return
	}
	seq := md.Sequence.Stream
	r.metrics.ConsumerPending.WithLabelValues(r.cfg.Name).Set(float64(md.NumPending))
	r.mu.Lock()
	if seq > r.floor { // else already applied by another instance: a late delivery
		r.outstanding[seq] = struct{}{}
	}
	delete(r.redelivered, seq)
	if seq > r.highest {
		r.highest = seq
	}
	r.mu.Unlock()
	r.inflight.Add(1)
	d := &Delivery[T]{Seq: seq, Delivered: md.NumDelivered, Time: md.Timestamp, msg: m}
	d.finish = func(err error) { r.finish(d, err) }
	v, err := r.cfg.Decode(seq, md.Timestamp, m.Subject(), m.Headers(), m.Data())
	if err != nil {
		d.Finish(Permanent(fmt.Errorf("undecodable: %w", err)))
		return
	}
	d.Value = v
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.cfg.Apply(ctx, d); !errors.Is(err, ErrApplyPending) {
		d.Finish(err)
	}
}

// finish acts on a delivery's outcome.
func (r *Runner[T]) finish(d *Delivery[T], err error) {
	defer r.inflight.Done()
	m := d.msg
	verdict, delay := r.cfg.Retry.Decide(err, d.Delivered)
	if !r.cfg.Durable && verdict == VerdictRetry {
		verdict = VerdictDead // an ordered consumer does not redeliver
	}
	outcome := "applied"
	switch verdict {
	case VerdictAck:
		if r.cfg.Durable {
			if aerr := m.Ack(); aerr != nil {
				r.log.Warn("ack failed; the message will be applied again", zap.Uint64("seq", d.Seq), zap.Error(aerr))
			}
		}
	case VerdictRetry:
		outcome = "retried"
		r.log.Warn("apply failed; will retry", zap.Uint64("seq", d.Seq), zap.Uint64("delivery", d.Delivered),
			zap.Duration("delay", delay), zap.Error(err))
		_ = m.NakWithDelay(delay)
	case VerdictDead:
		outcome = "dead"
		stored, derr := r.deadLetter(m, d, err)
		if derr != nil {
			if IsStorageFull(derr) && r.cfg.NoteFull != nil {
				r.cfg.NoteFull(StreamDead)
			}
			if r.cfg.Durable {
				// Not lost: tried again until the dead letter takes it.
				outcome = "retried"
				r.log.Error("dead letter not written; will retry", zap.Uint64("seq", d.Seq), zap.Error(derr))
				_ = m.NakWithDelay(r.cfg.Retry.Max)
				break
			}
			r.log.Error("dead letter not written; message skipped", zap.Uint64("seq", d.Seq), zap.Error(derr))
		} else if stored {
			r.log.Error("message put in the dead letter", zap.Uint64("seq", d.Seq), zap.String("dead_subject", DeadSubject(r.cfg.Name, r.cfg.Stream, d.Seq)), zap.Error(err))
		} else {
			// Met again (a projection rereading its stream): the dead
			// letter already holds it.
			outcome = "dead_again"
			r.log.Info("message already in the dead letter; skipped", zap.Uint64("seq", d.Seq), zap.String("dead_subject", DeadSubject(r.cfg.Name, r.cfg.Stream, d.Seq)), zap.Error(err))
		}
		if r.cfg.Durable && outcome != "retried" {
			_ = m.Term()
		}
	}
	r.metrics.ConsumerMessages.WithLabelValues(r.cfg.Name, outcome).Inc()
	r.mu.Lock()
	if outcome == "retried" && d.Seq > r.floor {
		r.redelivered[d.Seq] = struct{}{}
	} else {
		delete(r.outstanding, d.Seq)
		delete(r.redelivered, d.Seq)
		r.signal()
	}
	r.mu.Unlock()
}

// deadLetter copies m, with its headers and the reason, into the dead
// letter stream, and waits for the stream to store it; stored is false when
// the dead letter already held it.
// A headers-only consumer's message is read in full (one direct get) first,
// so that the dead letter holds the original's data too.
func (r *Runner[T]) deadLetter(m jetstream.Msg, d *Delivery[T], reason error) (stored bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, data := m.Headers(), m.Data()
	if r.cfg.HeadersOnly {
		st, err := r.js.Stream(ctx, r.cfg.Stream)
		if err != nil {
			return false, fmt.Errorf("read message %d in full for its dead letter: %w", d.Seq, err)
		}
		raw, err := st.GetMsg(ctx, d.Seq)
		if err != nil {
			return false, fmt.Errorf("read message %d in full for its dead letter: %w", d.Seq, err)
		}
		h, data = raw.Header, raw.Data
	}
	return WriteDeadLetter(ctx, r.js, r.cfg.Name, r.cfg.Stream, d.Seq, d.Delivered, m.Subject(), h, data, reason)
}

// createDeadStream creates (or updates) the dead letter stream: file
// storage, limits retention and, as every stream of the broker, discard
// new: a full dead letter refuses the next one (the consumer keeps the
// message and retries) rather than dropping an earlier one. Its
// configuration is the same as before the per-event subjects (one dead
// letter per subject is kept by the writers, not by a per-subject limit,
// which NATS would enforce on an existing stream by dropping all but the
// last message of each earlier subject); dead letters of the earlier
// layout are then moved to theirs.
func createDeadStream(ctx context.Context, js jetstream.JetStream, replicas int, maxBytes int64) error {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamDead,
		Description: "Dead letter: a copy of each message a consumer could not apply, once (eps.dead.<consumer>.<stream>.<sequence>; headers Eps-Dead-*)",
		Subjects:    []string{SubjectDead + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Duplicates:  2 * time.Minute,
		MaxBytes:    natsLimit(maxBytes),
	})
	if err != nil {
		return err
	}
	return migrateDeadLetters(ctx, js, st)
}

// DeadSubject is the subject of the dead letter of message seq of stream,
// given up by consumer: eps.dead.<consumer>.<stream>.<seq>.
func DeadSubject(consumer, stream string, seq uint64) string {
	return SubjectDead + consumer + "." + stream + "." + strconv.FormatUint(seq, 10)
}

// WriteDeadLetter stores a copy of a message a consumer could not apply on
// DeadSubject(consumer, stream, seq), with its original headers and the
// Eps-Dead-* ones, unless that subject already holds one: stored is then
// false. The publish expects the subject to be empty (its last sequence 0),
// which the stream checks atomically, so two writers of the same dead letter
// (two broker instances' tracker indexes) store it once between them.
func WriteDeadLetter(ctx context.Context, js jetstream.JetStream, consumer, stream string, seq, delivered uint64,
	subject string, h nats.Header, data []byte, reason error) (stored bool, err error) {
	out := &nats.Msg{Subject: DeadSubject(consumer, stream, seq), Data: data, Header: deadHeaders(h)}
	out.Header.Set(HeaderDeadReason, reason.Error())
	out.Header.Set(HeaderDeadStream, stream)
	out.Header.Set(HeaderDeadSeq, strconv.FormatUint(seq, 10))
	out.Header.Set(HeaderDeadSubject, subject)
	out.Header.Set(HeaderDeadConsumer, consumer)
	out.Header.Set(HeaderDeadDelivery, strconv.FormatUint(delivered, 10))
	return publishDeadOnce(ctx, js, out)
}

// deadHeaders copies the headers of a message for its dead letter, without
// the Nats-* ones (its message ID, expectations), which the dead letter
// stream would read as its own. Both writers of dead letters (WriteDeadLetter
// and migrateDeadLetters) copy through it.
func deadHeaders(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if len(k) > 5 && strings.EqualFold(k[:5], "Nats-") {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

// publishDeadOnce stores m in the dead letter stream unless its subject
// already holds a message (stored false).
func publishDeadOnce(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (stored bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithExpectStream(StreamDead))
	switch {
	case err == nil:
		return true, nil
	case isWrongLastSequence(err):
		return false, nil
	}
	return false, err
}

// migrateDeadLetters moves the dead letters written before the per-event
// subjects, on eps.dead.<consumer> (several, and the same message more than
// once, on one subject), to DeadSubject of the consumer, stream and
// sequence their headers name: each is copied (once: a copy whose subject
// already holds one is not made again), then deleted. A message on such a
// subject without those headers (not a dead letter of the broker's) stays
// where it is. Run at every start; with nothing of the earlier layout left
// it costs one stream info request. Several brokers doing it at once copy
// each dead letter once between them.
func migrateDeadLetters(ctx context.Context, js jetstream.JetStream, st jetstream.Stream) error {
	oldLayout := SubjectDead + "*"
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(oldLayout))
	if err != nil {
		return fmt.Errorf("dead letters of the earlier layout: %w", err)
	}
	if len(info.State.Subjects) == 0 {
		return nil
	}
	last := info.State.LastSeq
	for next := uint64(1); next <= last; {
		m, err := st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(oldLayout))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("dead letters of the earlier layout: read from %d: %w", next, err)
		}
		next = m.Sequence + 1
		if m.Sequence > last {
			break
		}
		consumer, stream := m.Header.Get(HeaderDeadConsumer), m.Header.Get(HeaderDeadStream)
		seq, perr := strconv.ParseUint(m.Header.Get(HeaderDeadSeq), 10, 64)
		if perr != nil || !validToken(consumer) || !validToken(stream) || m.Subject != SubjectDead+consumer {
			continue // not a dead letter of the broker's
		}
		out := &nats.Msg{Subject: DeadSubject(consumer, stream, seq), Data: m.Data, Header: deadHeaders(m.Header)}
		if _, err := publishDeadOnce(ctx, js, out); err != nil {
			return fmt.Errorf("dead letters of the earlier layout: copy %d to %s: %w", m.Sequence, out.Subject, err)
		}
		if err := st.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("dead letters of the earlier layout: delete %d once copied to %s: %w", m.Sequence, out.Subject, err)
		}
	}
	return nil
}

// validToken reports whether s can stand as one token of a subject.
func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// ReadStream reads a stream from its first message to its last (as of the
// call) with an ordered consumer, decoding each message with decode and
// handing it to apply; a message decode refuses goes to skip with the
// reason. It only reads: nothing is acknowledged or written. progress, when
// not nil, is told how many messages of how many have been read.
func ReadStream[T any](ctx context.Context, js jetstream.JetStream, stream string,
	decode func(seq uint64, t time.Time, subject string, h nats.Header, data []byte) (T, error),
	apply func(seq uint64, v T), skip func(seq uint64, err error), progress func(done, total uint64)) (last uint64, err error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	last = info.State.LastSeq
	if info.State.Msgs == 0 {
		return last, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2048))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	var n, seq uint64
	for seq < last {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return 0, err
		}
		seq = md.Sequence.Stream
		if v, err := decode(seq, md.Timestamp, m.Subject(), m.Headers(), m.Data()); err != nil {
			skip(seq, err)
		} else {
			apply(seq, v)
		}
		n++
		if progress != nil && (n%1000 == 0 || seq >= last) {
			progress(n, info.State.Msgs)
		}
	}
	return last, nil
}
