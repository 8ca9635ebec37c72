package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	instances := []*Notifier{{store: st, metrics: m, log: zap.NewNop()}, {store: st, metrics: m, log: zap.NewNop()}}
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
			if err := instances[delivery%2].apply(ctx, d); err != nil {
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
