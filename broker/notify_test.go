package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// notifyStore starts an embedded NATS server and opens the store on it.
func notifyStore(t testing.TB, maxAge time.Duration, lim StorageLimits) (*Store, *nats.Conn, *Metrics) {
	t.Helper()
	st, n, m := commitStoreWith(t, StoreConfig{NotifyMaxAge: maxAge, Limits: lim})
	return st, n.Conn, m
}

// applyNow applies d with p as the runner would, and returns the outcome
// its delivery is finished with.
func applyNow(ctx context.Context, p *Notifier, d *Delivery[*service.Event]) error {
	done := make(chan error, 1)
	d.finish = func(err error) { done <- err }
	if err := p.apply(ctx, d); !errors.Is(err, ErrApplyPending) {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// The notifier stores an event's notifications on every delivery of the
// event (it acknowledges the event only after), so a redelivered event's
// notifications, or the same event's delivered to another broker instance,
// are made again: their message IDs keep each stored once, and a durable
// consumer gets each once. Core NATS subscribers get every publish (the
// fast path is at least once too). It decides from the event alone:
// prescription-ready for the event that put the prescription into its
// dispenser's queue (an order), none for a later event that leaves it
// there (a cancellation of one of its items).
func TestNotifyRedeliveredEventStoredOnce(t *testing.T) {
	st, nc, m := notifyStore(t, 0, StorageLimits{})
	core, err := nc.SubscribeSync(SubjectNotify + ">")
	if err != nil {
		t.Fatal(err)
	}
	instances := []*Notifier{newNotifier(st, m, zap.NewNop()), newNotifier(st, m, zap.NewNop())}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	dispensed := &service.Event{Seq: 41, Time: now, Event: rx.EventDispense, Record: &rx.Prescription{
		ID: "9918CC-A83008-DD25CB", Prescriber: "A83008", Issue: rx.Issue{Dispenser: "FA565", Status: rx.StatusWithDispenser},
		History: []rx.Event{{Type: rx.EventDispense, Org: "FA565", Status: rx.StatusWithDispenser}},
	}}
	ready := &service.Event{Seq: 42, Time: now, Event: rx.EventOrder, Record: &rx.Prescription{
		ID: "92342C-A83008-6B796T", Prescriber: "A83008", Issue: rx.Issue{Nominated: "FA565", Status: rx.StatusToBeDispensed},
		History: []rx.Event{{Type: rx.EventOrder, Org: "A83008", Status: rx.StatusToBeDispensed}},
	}}
	stillReady := &service.Event{Seq: 43, Time: now, Event: rx.EventCancel, Record: &rx.Prescription{
		ID: "92342C-A83008-6B796T", Prescriber: "A83008", Issue: rx.Issue{Nominated: "FA565", Status: rx.StatusToBeDispensed},
		History: []rx.Event{{Type: rx.EventOrder, Org: "A83008", Status: rx.StatusToBeDispensed},
			{Type: rx.EventCancel, Org: "A83008", Status: rx.StatusToBeDispensed}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for delivery := 1; delivery <= 3; delivery++ {
		for _, ev := range []*service.Event{dispensed, ready, stillReady} {
			d := &Delivery[*service.Event]{Seq: ev.Seq, Delivered: uint64(delivery), Time: ev.Time, Value: ev}
			if err := applyNow(ctx, instances[delivery%2], d); err != nil {
				t.Fatalf("delivery %d of %d: %v", delivery, ev.Seq, err)
			}
		}
	}

	want := map[string]string{ // subject -> message ID
		"eps.notify.prescriber.A83008.dispense-notification":     "41:prescriber:dispense-notification",
		"eps.notify.dispenser.FA565.dispense-notification":       "41:dispenser:dispense-notification",
		"eps.notify.prescriber.A83008.prescription-order":        "42:prescriber:prescription-order",
		"eps.notify.dispenser.FA565.prescription-ready":          "42:dispenser:prescription-ready",
		"eps.notify.prescriber.A83008.prescription-order-update": "43:prescriber:prescription-order-update",
	}
	s, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != uint64(len(want)) {
		t.Errorf("%s holds %d notifications, want %d", StreamNotify, n, len(want))
	}
	for seq := uint64(1); seq <= uint64(len(want)); seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if id := msg.Header.Get(nats.MsgIdHdr); id != want[msg.Subject] {
			t.Errorf("%s: message ID %q, want %q", msg.Subject, id, want[msg.Subject])
		}
	}
	for _, c := range []struct{ audience, event string }{{"prescriber", rx.EventDispense}, {"dispenser", rx.EventDispense}, {"dispenser", NotifyReady},
		{"prescriber", rx.EventOrder}, {"prescriber", rx.EventCancel}} {
		if n := counterValue(t, m, "eps_notifications_total", c.audience, c.event); n != 1 {
			t.Errorf("eps_notifications_total{%s,%s} = %v, want 1", c.audience, c.event, n)
		}
	}
	if n, _, _ := core.Pending(); n != 3*len(want) {
		t.Errorf("core subscriber got %d, want %d", n, 3*len(want))
	}
}

// EPS_NOTIFY keeps notifications for --notify-max-age within its byte
// limit, drops the oldest when full (new notifications are never refused),
// denies deleting single messages, and its full state is no storage alert.
func TestNotifyStreamSettings(t *testing.T) {
	st, _, _ := notifyStore(t, 36*time.Hour, StorageLimits{Notify: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxAge != 36*time.Hour || cfg.MaxBytes != 256<<10 || cfg.Discard.String() != "DiscardOld" || !cfg.DenyDelete ||
		cfg.Duplicates != NotifyDuplicates || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "eps.notify.>" {
		t.Errorf("config %+v", cfg)
	}
	// Fill it several times over: every publish is stored, the oldest go.
	body := make([]byte, 4<<10)
	for i := 0; i < 200; i++ {
		if _, err := st.js.Publish(ctx, DispenserNotifySubject("FA565", NotifyReady), body); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	s, _ = st.js.Stream(ctx, StreamNotify)
	state := s.CachedInfo().State
	if state.LastSeq != 200 || state.FirstSeq == 1 || state.Bytes > 256<<10 {
		t.Errorf("state %+v", state)
	}
	warn, err := st.StorageWarnings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(warn) != 0 {
		t.Errorf("warnings %v", warn)
	}
}

// counterValue reads a counter of the registry by its label values.
func counterValue(t *testing.T, m *Metrics, name string, values ...string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, mt := range mf.GetMetric() {
			if len(mt.GetLabel()) != len(values) {
				continue
			}
			for i, l := range mt.GetLabel() {
				if l.GetValue() != values[i] {
					continue metrics
				}
			}
			return mt.GetCounter().GetValue()
		}
	}
	return 0
}

// The broker makes a durable pull consumer per dispenser and prescriber
// user, filtered to its organisation's subjects, and removes the ones of
// users since removed, leaving any consumer it did not make.
func TestNotifyConsumersFollowUsers(t *testing.T) {
	st, _, _ := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	users := []NATSUser{
		{Name: "ops", Role: NATSRoleInspect},
		{Name: "dispenser-FA565", Role: NATSRoleDispenser, ODS: "FA565"},
		{Name: "prescriber-A83008", Role: NATSRolePrescriber, ODS: "A83008"},
	}
	if err := EnsureNotifyConsumers(ctx, st, users, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.js.CreateOrUpdateConsumer(ctx, StreamNotify, jetstream.ConsumerConfig{Durable: "operator-made"}); err != nil {
		t.Fatal(err)
	}
	s, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	for name, filter := range map[string]string{"dispenser-FA565": "eps.notify.dispenser.FA565.>", "prescriber-A83008": "eps.notify.prescriber.A83008.>"} {
		c, err := s.Consumer(ctx, name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		cfg := c.CachedInfo().Config
		if cfg.FilterSubject != filter || cfg.Durable != name || cfg.DeliverSubject != "" || cfg.AckPolicy != jetstream.AckExplicitPolicy ||
			cfg.DeliverPolicy != jetstream.DeliverAllPolicy || cfg.AckWait != 30*time.Second || cfg.MaxDeliver != -1 || cfg.MaxAckPending != 1000 {
			t.Errorf("consumer %s: %+v", name, cfg)
		}
	}
	if _, err := s.Consumer(ctx, "ops"); err == nil {
		t.Error("a consumer for the inspect user")
	}
	// The prescriber user is removed; the broker starts again.
	if err := EnsureNotifyConsumers(ctx, st, users[:2], zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"dispenser-FA565": true, "prescriber-A83008": false, "operator-made": true} {
		if _, err := s.Consumer(ctx, name); (err == nil) != want {
			t.Errorf("consumer %s: %v, want kept %v", name, err, want)
		}
	}
}

// A deployment of an earlier version has the durable consumer
// eps-queue-projector without headers-only: the notifier updates it in
// place (its acknowledged position kept) and goes on from there, reading
// headers only.
func TestNotifierUpdatesTheConsumerInPlace(t *testing.T) {
	st, _, m := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(id string) uint64 {
		rec := `{"id":"` + id + `","prescriber":"A83008","status":"0001","nominated":"FA565","history":[{"type":"prescription-order","org":"A83008","status":"0001"}]}`
		msg := &nats.Msg{Subject: SubjectRx + id, Data: make([]byte, 16<<10), Header: nats.Header{}}
		msg.Header.Set(HeaderEvent, rx.EventOrder)
		msg.Header.Set(HeaderRecord, rec)
		ack, err := st.js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	publish("OLD1")
	// The consumer as the earlier version made it, with OLD1 acknowledged.
	old, err := st.js.CreateOrUpdateConsumer(ctx, StreamEvents, jetstream.ConsumerConfig{Durable: ConsumerQueueProjector,
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: 30 * time.Second,
		MaxAckPending: 4096, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := old.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for msg := range msgs.Messages() {
		if len(msg.Data()) != 16<<10 {
			t.Fatalf("the earlier consumer got %d bytes of data", len(msg.Data()))
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	seq := publish("NEW1")
	n, err := StartNotifier(ctx, st, m, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if err := n.WaitApplied(ctx, seq); err != nil {
		t.Fatal(err)
	}
	c, err := st.js.Consumer(ctx, StreamEvents, ConsumerQueueProjector)
	if err != nil {
		t.Fatal(err)
	}
	if info := c.CachedInfo(); !info.Config.HeadersOnly {
		t.Errorf("consumer not updated to headers only: %+v", info.Config)
	}
	s, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, DispenserNotifySubject("FA565", NotifyReady)); err != nil {
		t.Errorf("no ready notification of the event after the update: %v", err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, PrescriberNotifySubject("A83008", rx.EventOrder)); err != nil {
		t.Errorf("no order notification: %v", err)
	}
	if info, _ := s.Info(ctx); info.State.Msgs != 2 {
		t.Errorf("%d notifications, want 2 (only the event after the acknowledged one)", info.State.Msgs)
	}
}

// publishOrders appends n order events (each about its own prescription,
// prescribed by prescriber(i) and nominated to dispenser(i)) to the event
// log with async publishes and returns the last one's sequence.
func publishOrders(t testing.TB, st *Store, n int, prescriber, dispenser func(i int) string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last jetstream.PubAckFuture
	for i := range n {
		id := fmt.Sprintf("%06X-A83008-00000A", i)
		rec := fmt.Sprintf(`{"id":%q,"prescriber":%q,"status":"0001","nominated":%q,"history":[{"type":"prescription-order","org":%[2]q,"status":"0001"}]}`,
			id, prescriber(i), dispenser(i))
		msg := &nats.Msg{Subject: SubjectRx + id, Header: nats.Header{}}
		msg.Header.Set(HeaderEvent, rx.EventOrder)
		msg.Header.Set(HeaderRecord, rec)
		f, err := st.js.PublishMsgAsync(msg, jetstream.WithExpectStream(StreamEvents))
		if err != nil {
			t.Fatal(err)
		}
		last = f
	}
	select {
	case <-st.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	select {
	case ack := <-last.Ok():
		return ack.Sequence
	case err := <-last.Err():
		t.Fatal(err)
	}
	return 0
}

// BenchmarkNotifier is the rate at which the notifier stores the
// notifications of events already in the log (each an order: two
// notifications, to the prescriber and prescription-ready to the nominated
// dispenser) on the embedded server under sync always: from its start
// until its applied sequence reaches the last event. Each round starts
// with a fresh consumer and an empty EPS_NOTIFY, so nothing is a duplicate.
//
//	go test -run '^$' -bench Notifier -benchtime 3x -count 6 ./broker/ | benchstat -
func BenchmarkNotifier(b *testing.B) {
	st, _, m := notifyStore(b, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const events = 2000
	last := publishOrders(b, st, events, func(i int) string { return fmt.Sprintf("P%05d", i%50) },
		func(i int) string { return fmt.Sprintf("F%05d", i%200) })
	ns, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		b.Fatal(err)
	}
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := st.js.DeleteConsumer(ctx, StreamEvents, ConsumerQueueProjector); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			b.Fatal(err)
		}
		if err := ns.Purge(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		n, err := StartNotifier(ctx, st, m, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		if err := n.WaitApplied(ctx, last); err != nil {
			b.Fatal(err)
		}
		took += time.Since(start)
		b.StopTimer()
		n.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(events)*float64(b.N)/took.Seconds(), "events/s")
}

// waitUntil polls cond until it holds, or fails the test when ctx ends
// first: for states the runner exposes without a signal (events in hand).
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// heldPublish is a notification the gate holds: not yet published, its
// future answered once it is.
type heldPublish struct {
	msg  *nats.Msg
	opts []jetstream.PublishOpt
	seq  uint64 // the event's
	ok   chan *jetstream.PubAck
	err  chan error
}

func (h *heldPublish) Ok() <-chan *jetstream.PubAck { return h.ok }
func (h *heldPublish) Err() <-chan error            { return h.err }
func (h *heldPublish) Msg() *nats.Msg               { return h.msg }

// publishGate stands for the notifier's publish to EPS_NOTIFY: the
// notifications of the events hold says are held back (not sent to the
// server at all) until released; the others are published at once.
type publishGate struct {
	js   jetstream.JetStream
	mu   sync.Mutex
	hold func(seq uint64) bool
	held []*heldPublish
}

func (g *publishGate) publish(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	var n Notification
	if err := json.Unmarshal(m.Data, &n); err != nil {
		return nil, err
	}
	h := &heldPublish{msg: m, opts: opts, seq: n.EventSeq, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold(n.EventSeq) {
		g.held = append(g.held, h)
		return h, nil
	}
	return g.js.PublishMsgAsync(m, opts...)
}

// heldEvents is the events whose notifications the gate holds.
func (g *publishGate) heldEvents() map[uint64]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	evs := map[uint64]int{}
	for _, h := range g.held {
		evs[h.seq]++
	}
	return evs
}

// release publishes the held notifications of the events keep does not
// hold, and from now on holds only those keep says.
func (g *publishGate) release(t *testing.T, keep func(seq uint64) bool) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = keep
	var still []*heldPublish
	for _, h := range g.held {
		if keep(h.seq) {
			still = append(still, h)
			continue
		}
		f, err := g.js.PublishMsgAsync(h.msg, h.opts...)
		if err != nil {
			t.Fatalf("release a notification of event %d: %v", h.seq, err)
		}
		go func() {
			select {
			case ack := <-f.Ok():
				h.ok <- ack
			case err := <-f.Err():
				h.err <- err
			}
		}()
	}
	g.held = still
}

// startGated starts a notifier whose publishes go through a gate holding
// the events hold says. Its atomic batches are refused as by a stream
// that takes none, so it publishes each notification on its own (through
// the gate) from its first commit on.
func startGated(t *testing.T, ctx context.Context, st *Store, m *Metrics, hold func(seq uint64) bool) (*Notifier, *publishGate) {
	t.Helper()
	g := &publishGate{js: st.js, hold: hold}
	p := newNotifier(st, m, zap.NewNop())
	p.publish = g.publish
	p.publishBatch = func(context.Context, []*nats.Msg) error { return jetstreamext.ErrBatchPublishNotEnabled }
	if _, err := p.start(ctx); err != nil {
		t.Fatal(err)
	}
	return p, g
}

// notifyIDs is how many times EPS_NOTIFY holds each message ID.
func notifyIDs(t *testing.T, ctx context.Context, st *Store) map[string]int {
	t.Helper()
	s, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("notification %d: %v", seq, err)
		}
		ids[msg.Header.Get(nats.MsgIdHdr)]++
	}
	return ids
}

// checkNotified fails unless EPS_NOTIFY holds each notification of the
// order events first..last (publishOrders) exactly once, and those of the
// events after last not at all.
func checkNotified(t *testing.T, ids map[string]int, first, last, all uint64) {
	t.Helper()
	for seq := first; seq <= all; seq++ {
		want := 0
		if seq <= last {
			want = 1
		}
		for _, id := range []string{notifyMsgID(seq, "prescriber", rx.EventOrder), notifyMsgID(seq, "dispenser", NotifyReady)} {
			if ids[id] != want {
				t.Errorf("notification %s stored %d times, want %d", id, ids[id], want)
			}
		}
	}
}

// The notifier has at most NotifyInFlight events' notifications in flight.
// Events finish in any order, as their notifications are stored, and each
// is acknowledged then; but the applied sequence passes no event whose
// notifications are not stored: one event held back holds it while every
// later one is done, and it moves once that event's are stored.
func TestNotifierPipelinedAppliedWaitsForStored(t *testing.T) {
	st, _, m := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const events = NotifyInFlight + 44
	last := publishOrders(t, st, events, func(i int) string { return fmt.Sprintf("P%05d", i) }, func(i int) string { return fmt.Sprintf("F%05d", i) })
	first := last - events + 1
	p, g := startGated(t, ctx, st, m, func(uint64) bool { return true })
	defer p.Stop()

	// Everything held: NotifyInFlight events in flight, the next waiting
	// for room, nothing applied.
	waitUntil(t, ctx, "the events in flight", func() bool { return len(g.heldEvents()) == NotifyInFlight })
	waitUntil(t, ctx, "the next event waiting for room", func() bool { return p.State().InHand == NotifyInFlight+1 })
	if held := g.heldEvents(); len(held) != NotifyInFlight || held[first] != 2 || held[first+NotifyInFlight-1] != 2 {
		t.Fatalf("held the notifications of %d events (%d of the first, %d of the last), want %d, two each", len(held), held[first], held[first+NotifyInFlight-1], NotifyInFlight)
	}
	if a := p.State().Applied; a != first-1 {
		t.Fatalf("applied %d with nothing stored, want %d", a, first-1)
	}

	// Every event but the first is let through: they are all finished and
	// acknowledged, the first is still in hand and holds the applied
	// sequence.
	g.release(t, func(seq uint64) bool { return seq == first })
	waitUntil(t, ctx, "every event but the first finished", func() bool {
		s := p.State()
		return s.Highest == last && s.InHand == 1
	})
	if s := p.State(); s.Applied != first-1 {
		t.Fatalf("%s: applied passed the first event, whose notifications are not stored", s)
	}
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "applied"); n != events-1 {
		t.Errorf("%v events applied, want %d", n, events-1)
	}
	checkNotified(t, notifyIDs(t, ctx, st), first+1, last, last)
	if ids := notifyIDs(t, ctx, st); ids[notifyMsgID(first, "prescriber", rx.EventOrder)] != 0 {
		t.Fatal("the held notification was stored")
	}

	g.release(t, func(uint64) bool { return false })
	if err := p.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	checkNotified(t, notifyIDs(t, ctx, st), first, last, last)
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "retried"); n != 0 {
		t.Errorf("%v retries, want none", n)
	}
}

// Among many events in flight, one whose notification EPS_NOTIFY refuses
// (here a per-subject limit set for the test: its prescriber's subject
// already holds a notification) is retried with the runner's backoff while
// the others are acknowledged; the applied sequence stays before it until
// the stream takes it, then reaches the last event. Its notification the
// stream did take the first time (to the dispenser) is not stored twice.
func TestNotifierPipelinedRetriesTheRefusedEvent(t *testing.T) {
	st, _, m := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const events, failing = 300, 120
	refused := PrescriberNotifySubject("PFAIL", rx.EventOrder)
	if _, err := st.js.Publish(ctx, refused, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	s, err := st.js.Stream(ctx, StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	limited := cfg
	limited.MaxMsgsPerSubject, limited.Discard, limited.DiscardNewPerSubject = 1, jetstream.DiscardNew, true
	if _, err := st.js.UpdateStream(ctx, limited); err != nil {
		t.Fatal(err)
	}
	last := publishOrders(t, st, events, func(i int) string {
		if i == failing {
			return "PFAIL"
		}
		return fmt.Sprintf("P%05d", i)
	}, func(i int) string { return fmt.Sprintf("F%05d", i) })
	first := last - events + 1
	failSeq := first + failing

	p, err := StartNotifier(ctx, st, m, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitUntil(t, ctx, "every event but the refused one finished, and that one retried", func() bool {
		s := p.State()
		return s.Highest == last && s.InHand == 1 &&
			counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "retried") >= 1
	})
	if s := p.State(); s.Applied != failSeq-1 {
		t.Fatalf("%s: want applied %d, just before the refused event", s, failSeq-1)
	}
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "applied"); n != events-1 {
		t.Errorf("%v events applied, want %d", n, events-1)
	}
	ids := notifyIDs(t, ctx, st)
	if ids[notifyMsgID(failSeq, "prescriber", rx.EventOrder)] != 0 || ids[notifyMsgID(failSeq, "dispenser", NotifyReady)] != 1 {
		t.Fatalf("the refused event's notifications: prescriber %d, dispenser %d stored, want 0 and 1",
			ids[notifyMsgID(failSeq, "prescriber", rx.EventOrder)], ids[notifyMsgID(failSeq, "dispenser", NotifyReady)])
	}

	// The stream takes it again: the retry stores it, once.
	if _, err := st.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	checkNotified(t, notifyIDs(t, ctx, st), first, last, last)
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "applied"); n != events {
		t.Errorf("%v events applied, want %d", n, events)
	}
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "dead"); n != 0 {
		t.Errorf("%v events in the dead letter, want none", n)
	}
}

// Stop waits for the events in flight: their notifications stored, each
// is acknowledged before Stop returns, and a notifier started again goes
// on from there, storing nothing twice.
func TestNotifierStopWaitsForEventsInFlight(t *testing.T) {
	st, _, m := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const events = 100
	last := publishOrders(t, st, events, func(i int) string { return fmt.Sprintf("P%05d", i) }, func(i int) string { return fmt.Sprintf("F%05d", i) })
	first := last - events + 1
	p, g := startGated(t, ctx, st, m, func(uint64) bool { return true })
	waitUntil(t, ctx, "every event in flight", func() bool { return len(g.heldEvents()) == events })

	stopped := make(chan struct{})
	go func() { p.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned with every event in flight")
	default:
	}
	g.release(t, func(uint64) bool { return false })
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Stop did not return once the events in flight were stored")
	}
	if s := p.State(); s.Applied != last || s.InHand != 0 {
		t.Fatalf("after Stop: %s, want applied %d and nothing in hand", s, last)
	}
	c, err := st.js.Consumer(ctx, StreamEvents, ConsumerQueueProjector)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, "the acknowledgements at the server", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream == last
	})
	checkNotified(t, notifyIDs(t, ctx, st), first, last, last)

	// Started again, with one more event: only that one is notified.
	more := publishOrders(t, st, 1, func(int) string { return "P99999" }, func(int) string { return "F99999" })
	again, err := StartNotifier(ctx, st, m, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Stop()
	if err := again.WaitApplied(ctx, more); err != nil {
		t.Fatal(err)
	}
	ids := notifyIDs(t, ctx, st)
	if len(ids) != 2*(events+1) {
		t.Errorf("%d notifications stored, want %d", len(ids), 2*(events+1))
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("notification %s stored %d times", id, n)
		}
	}
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "applied"); n != events+1 {
		t.Errorf("%v events applied, want %d (none twice)", n, events+1)
	}
}

// The notifier commits the events waiting in atomic batches. Delivered
// again (its consumer made anew, as after losing it), their notifications
// are all already stored: no batch stores a second copy, and every event
// is acknowledged again.
func TestNotifierBatchesRedeliveredStoredOnce(t *testing.T) {
	st, _, m := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const events = 200
	last := publishOrders(t, st, events, func(i int) string { return fmt.Sprintf("P%05d", i%7) }, func(i int) string { return fmt.Sprintf("F%05d", i%11) })
	first := last - events + 1
	for round := 1; round <= 2; round++ {
		p, err := StartNotifier(ctx, st, m, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WaitApplied(ctx, last); err != nil {
			t.Fatal(err)
		}
		p.Stop()
		checkNotified(t, notifyIDs(t, ctx, st), first, last, last)
		if err := st.js.DeleteConsumer(ctx, StreamEvents, ConsumerQueueProjector); err != nil {
			t.Fatal(err)
		}
		if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "applied"); n != float64(round*events) {
			t.Errorf("round %d: %v events applied, want %d", round, n, round*events)
		}
	}
	if n := counterValue(t, m, "eps_consumer_messages_total", ConsumerQueueProjector, "retried"); n != 0 {
		t.Errorf("%v retries, want none", n)
	}
	if n := counterValue(t, m, "eps_notifications_total", "dispenser", NotifyReady); n != events {
		t.Errorf("eps_notifications_total{dispenser,prescription-ready} = %v, want %d (a duplicate is not counted)", n, events)
	}
}
