package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The runner's ordered consumer: how an in-memory projection (the tracker
// index with the ready queues, the nomination reports) reads its stream in
// order. Each broker instance has its own: an ephemeral consumer of one
// replica, in memory, acknowledging nothing, read from the sequence after
// the last one applied. Its node (any of the stream's peers, chosen by the
// meta leader) may stop or be cut off from the others while the broker
// stays connected to another node; nothing tells the client but the idle
// heartbeats that stop (ConsumeHeartbeat). The consumer is then made again,
// under a new name, from the next sequence.
//
// nats.go's ordered consumer does the same, but each attempt waits up to
// 10 s and, above all, every attempt of one reset asks for the same
// consumer name. When the node was cut off (not stopped: the meta leader
// does not take it for offline) the first attempt may be answered by
// nobody (its request went to the cut node, the meta leader until the
// others elect another, or the consumer was placed on it: the meta leader
// still counted it among the live peers), and every attempt after it finds
// the name already assigned to the cut node and waits there again: the
// tracker index stood still until the node came back (watched for up to
// 65 s in tests: TestTrackerIndexResumesAfterNodeStop), and releases
// answered 503 meanwhile. Here
// an attempt waits at most OrderedCreateTimeout (longer after each failure,
// up to orderedCreateMax) and every attempt asks for a new name, so the
// meta leader places each anew: once it has noticed the cut node lagging
// (a few seconds) it prefers the peers that follow it. A consumer made
// after its request timed out receives nothing (no pull request is sent
// to it) and is removed by the server after OrderedInactive.
type orderedState struct {
	mu     sync.Mutex
	prefix string // consumer names: <prefix>_<serial>
	serial uint64 // of the current consumer; deliveries of older ones are ignored
	name   string // the current consumer's name ("" none)
	// current is name, read without mu (Runner.State).
	current atomic.Value
	cc      jetstream.ConsumeContext
	dseq    uint64           // the current consumer's last delivery sequence
	next    uint64           // the next stream sequence to apply
	reset   chan string      // why the consumer must be made again (at most one waits)
	status  chan nats.Status // the connection's status changes
	since   time.Time        // when the consumer was lost (zero while consuming)
}

// Bounds of the ordered consumer's re-creation.
const (
	// OrderedCreateTimeout is how long an attempt at making the ordered
	// consumer waits for its answer during the first orderedQuickFor;
	// after that each attempt that timed out makes the next wait half as
	// long again, up to orderedCreateMax. In the first seconds a request
	// without an answer was sent into the cut (to a cut node, or to a meta
	// leader cut off, until the others elect another): the next attempt
	// should follow soon. Later, the cluster may just be slow to answer.
	OrderedCreateTimeout = time.Second
	orderedQuickFor      = 10 * time.Second
	orderedCreateMax     = 10 * time.Second
	// orderedRetryMax is the longest pause between two attempts (after an
	// immediate refusal, e.g. no responders while the cluster elects).
	orderedRetryMax = time.Second
	// OrderedInactive is the consumer's InactiveThreshold: the server
	// removes a consumer that nobody pulled from for that long (one left
	// behind by a stopped or killed broker, or made after its request
	// timed out).
	OrderedInactive = time.Minute
	// OrderedStartTimeout bounds the attempts at the runner's start.
	OrderedStartTimeout = 15 * time.Second
)

// startOrdered makes the first ordered consumer (attempts as after a loss,
// for at most OrderedStartTimeout) and starts the loop that makes it again
// when lost.
func (r *Runner[T]) startOrdered(ctx context.Context) error {
	o := &r.ord
	var id [8]byte
	_, _ = rand.Read(id[:])
	o.prefix = hex.EncodeToString(id[:])
	o.next = max(r.cfg.StartSeq, 1)
	r.highest = o.next - 1
	o.reset = make(chan string, 1)
	o.status = r.js.Conn().StatusChanged(nats.RECONNECTING, nats.CONNECTED)
	// Bounded, so that the broker's start can say why it waits and give
	// up after --nats-cluster-wait (app: untilPlaced).
	sctx, cancel := context.WithTimeout(ctx, OrderedStartTimeout)
	defer cancel()
	if err := r.makeOrderedUntil(sctx, r.stopped, true); err != nil {
		r.js.Conn().RemoveStatusListener(o.status)
		return err
	}
	go r.orderedLoop()
	return nil
}

// orderedLoop makes the consumer again whenever it is lost, until the
// runner stops: at once after the connection reconnected (messages sent
// while it was down are lost to an acknowledging-nothing consumer).
func (r *Runner[T]) orderedLoop() {
	o := &r.ord
	defer r.js.Conn().RemoveStatusListener(o.status)
	disconnected := false
	for {
		var why string
		select {
		case <-r.stopped:
			return
		case st := <-o.status:
			if st == nats.RECONNECTING {
				disconnected = true
				continue
			}
			if st != nats.CONNECTED || !disconnected {
				continue
			}
			disconnected, why = false, "reconnected"
		case why = <-o.reset:
		}
		if r.stoppedNow() {
			// Stop and a loss came together (select picks at random):
			// nothing is made again after Stop.
			return
		}
		r.remakeOrdered(why)
	}
}

// lose takes the consumer of serial for lost (a missed heartbeat, a gap, a
// deleted consumer): orderedLoop makes it again. Only the current
// consumer's loss counts.
func (r *Runner[T]) lose(serial uint64, why string) {
	o := &r.ord
	o.mu.Lock()
	current := serial == o.serial
	o.mu.Unlock()
	if !current {
		return
	}
	select {
	case o.reset <- why:
	default: // a reset is already asked for
	}
}

// remakeOrdered drops the current consumer and makes a new one from the
// next sequence, trying until it succeeds or the runner stops.
func (r *Runner[T]) remakeOrdered(why string) {
	o := &r.ord
	o.mu.Lock()
	old, oldName := o.cc, o.name
	o.serial++ // the old consumer's deliveries are ignored from now on
	o.cc, o.name = nil, ""
	o.current.Store("")
	if o.since.IsZero() {
		o.since = time.Now()
	}
	next := o.next
	o.mu.Unlock()
	r.log.Warn("ordered consumer lost; making it again", zap.String("why", why), zap.String("old", oldName), zap.Uint64("from", next))
	if old != nil {
		old.Stop()
	}
	if oldName != "" {
		go r.deleteOrdered(oldName)
	}
	_ = r.makeOrderedUntil(context.Background(), r.stopped, false)
}

// makeOrderedUntil makes the consumer, attempt after attempt (each under a
// new name and bounded in time), until one succeeds, ctx ends or stop is
// closed; at the start (starting), an error other than JetStream being
// unavailable (IsUnavailable) ends it at once.
func (r *Runner[T]) makeOrderedUntil(ctx context.Context, stop <-chan struct{}, starting bool) error {
	timeout, pause, began := OrderedCreateTimeout, 100*time.Millisecond, time.Now()
	for attempt := 1; ; attempt++ {
		err := r.makeOrdered(ctx, timeout)
		if err == nil {
			o := &r.ord
			o.mu.Lock()
			since, name := o.since, o.name
			o.since = time.Time{}
			o.mu.Unlock()
			if !since.IsZero() {
				r.log.Info("ordered consumer made again", zap.String("name", name), zap.Int("attempts", attempt),
					zap.Duration("after", time.Since(since).Round(time.Millisecond)))
			}
			return nil
		}
		if starting && !IsUnavailable(err) {
			return err
		}
		if attempt == 1 || attempt%10 == 0 {
			r.log.Warn("ordered consumer not made; trying again", zap.Int("attempt", attempt), zap.Duration("timeout", timeout), zap.Error(err))
		}
		if (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) && time.Since(began) >= orderedQuickFor {
			timeout = min(timeout*3/2, orderedCreateMax)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ordered consumer not made in %d attempts: %w", attempt, err)
		case <-stop:
			return errors.New("stopped")
		case <-time.After(pause):
		}
		pause = min(2*pause, orderedRetryMax)
	}
}

// makeOrdered makes one consumer from the next sequence under a new name,
// waiting at most timeout for the server, and consumes it.
func (r *Runner[T]) makeOrdered(ctx context.Context, timeout time.Duration) error {
	o := &r.ord
	o.mu.Lock()
	o.serial++
	o.dseq = 0 // a new consumer delivers from 1
	serial, next := o.serial, o.next
	name := fmt.Sprintf("%s_%d", o.prefix, serial)
	o.mu.Unlock()
	cfg := jetstream.ConsumerConfig{
		Name:              name,
		Description:       r.cfg.Name,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       next,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: OrderedInactive,
		Replicas:          1,
		MemoryStorage:     true,
		HeadersOnly:       r.cfg.HeadersOnly,
		FilterSubject:     r.cfg.Filter,
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	cons, err := r.js.CreateConsumer(cctx, r.cfg.Stream, cfg)
	cancel()
	if err != nil {
		return err
	}
	cc, err := cons.Consume(r.orderedHandler(serial), jetstream.PullMaxMessages(512), jetstream.PullHeartbeat(ConsumeHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { r.orderedError(serial, err) }))
	if err != nil {
		go r.deleteOrdered(name)
		return err
	}
	o.mu.Lock()
	if serial != o.serial || r.stoppedNow() {
		o.mu.Unlock()
		cc.Stop()
		go r.deleteOrdered(name)
		return errors.New("stopped")
	}
	o.cc, o.name = cc, name
	o.current.Store(name)
	o.mu.Unlock()
	return nil
}

func (r *Runner[T]) stoppedNow() bool {
	select {
	case <-r.stopped:
		return true
	default:
		return false
	}
}

// orderedError acts on an error of the consumer of serial: the consumer is
// made again when the server no longer serves it.
func (r *Runner[T]) orderedError(serial uint64, err error) {
	switch {
	case errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrConsumerDeleted),
		errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, nats.ErrNoResponders),
		// nats.go ends the subscription on a 400 for good, and a server
		// shutting down will not deliver more: made again at once rather
		// than when the heartbeats are missed (or never, for the 400).
		errors.Is(err, jetstream.ErrBadRequest), errors.Is(err, jetstream.ErrServerShutdown):
		r.lose(serial, err.Error())
	case errors.Is(err, jetstream.ErrConnectionClosed):
	default:
		r.log.Warn("consume error", zap.Error(err))
	}
}

// orderedHandler applies the messages of the consumer of serial, in order:
// a delivery out of sequence (one lost in between) makes the consumer
// again from the next stream sequence.
func (r *Runner[T]) orderedHandler(serial uint64) jetstream.MessageHandler {
	return func(m jetstream.Msg) {
		o := &r.ord
		o.mu.Lock()
		defer o.mu.Unlock()
		if serial != o.serial || r.stoppedNow() {
			return // an older consumer's, or a delivery after Stop
		}
		md, err := m.Metadata()
		if err != nil || md.Sequence.Consumer != o.dseq+1 {
			go r.lose(serial, "delivery out of sequence")
			return
		}
		o.dseq = md.Sequence.Consumer
		if md.Sequence.Stream < o.next {
			return // applied already
		}
		o.next = md.Sequence.Stream + 1
		// Applied in order: the next delivery waits for this one (o.mu).
		r.handle(m)
	}
}

// deleteOrdered deletes a consumer given up on (bounded: if its node does
// not answer, the server removes it after OrderedInactive).
func (r *Runner[T]) deleteOrdered(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.js.DeleteConsumer(ctx, r.cfg.Stream, name)
}

// stopOrdered stops consuming; the consumer is left to the server, which
// removes it after OrderedInactive.
func (r *Runner[T]) stopOrdered() {
	o := &r.ord
	o.mu.Lock()
	cc := o.cc
	o.serial++
	o.cc = nil
	o.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
}
