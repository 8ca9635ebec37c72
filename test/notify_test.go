package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// connectNotify connects a dispensing or prescribing system as NATS user u,
// with the inbox prefix its permissions give it.
func connectNotify(t *testing.T, url, seedFile string, u broker.NATSUser) *natsClient {
	t.Helper()
	c := &natsClient{errs: make(chan error, 64)}
	o, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, o, nats.MaxReconnects(0), nats.CustomInboxPrefix(broker.NotifyInboxPrefix(u)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// got is one notification as a system received it.
type got struct {
	subject string
	n       broker.Notification
	seq     uint64 // EPS_NOTIFY sequence (durable consumer only)
}

func (g got) key() string { return fmt.Sprintf("%d %s", g.n.EventSeq, g.subject) }

// fetchAll reads every notification waiting for the durable consumer,
// acknowledging each.
func fetchAll(t *testing.T, c *natsClient, consumer string) []got {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := c.js.Consumer(ctx, broker.StreamNotify, consumer)
	if err != nil {
		t.Fatalf("consumer %s: %v", consumer, err)
	}
	var out []got
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			var nt broker.Notification
			if err := json.Unmarshal(m.Data(), &nt); err != nil {
				t.Fatalf("notification %s: %v", m.Data(), err)
			}
			out = append(out, got{m.Subject(), nt, md.Sequence.Stream})
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		if batch.Error() != nil {
			t.Fatalf("fetch: %v", batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// drainCore reads what a core NATS subscription holds.
func drainCore(t *testing.T, sub *nats.Subscription) []got {
	t.Helper()
	var out []got
	for {
		m, err := sub.NextMsg(0)
		if err != nil {
			return out
		}
		var nt broker.Notification
		if err := json.Unmarshal(m.Data, &nt); err != nil {
			t.Fatalf("notification %s: %v", m.Data, err)
		}
		out = append(out, got{subject: m.Subject, n: nt})
	}
}

// A dispensing system's durable consumer is stopped; orders, a nominated
// release, a dispense notification, a return and a claim are made; it
// restarts and receives every notification, each once, in order. A core
// NATS subscriber got the same at once; another dispenser's user can read
// none of them.
func TestNotifyDurableConsumerLosesNothing(t *testing.T) {
	dir := t.TempDir()
	fa565 := broker.NATSUser{Name: "dispenser-FA565", Role: broker.NATSRoleDispenser, ODS: "FA565"}
	fh542 := broker.NATSUser{Name: "dispenser-FH542", Role: broker.NATSRoleDispenser, ODS: "FH542"}
	presc := broker.NATSUser{Name: "prescriber-A83008", Role: broker.NATSRolePrescriber, ODS: "A83008"}
	seeds := map[string]string{}
	for _, u := range []broker.NATSUser{fa565, fh542, presc, {Name: "ops", Role: broker.NATSRoleInspect}} {
		seeds[u.Name] = natsUser(t, dir, u.Name, u.Role, u.ODS)
	}
	b := startBroker(t, dir, func(c *config.Config) { c.NATSListen = "127.0.0.1:0" })
	url := "nats://" + b.App.NATS.Embedded.Addr().String()

	// The fast path: a core NATS subscriber of FA565's subjects, up all along.
	fast := connectNotify(t, url, seeds[fa565.Name], fa565)
	core, err := fast.nc.SubscribeSync(broker.NotifyFilter(fa565))
	if err != nil {
		t.Fatal(err)
	}
	if err := fast.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	order := func() *fhirgen.Generated {
		g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
		if err != nil {
			t.Fatal(err)
		}
		if res := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); res.Status != 200 {
			t.Fatalf("order: %d %s", res.Status, res.Body)
		}
		return g
	}

	// Up: the system reads the first order's notification.
	sys := connectNotify(t, url, seeds[fa565.Name], fa565)
	g1 := order()
	b.settle()
	first := fetchAll(t, sys, broker.NotifyConsumerName(fa565))
	if len(first) != 1 || first[0].n.Event != broker.NotifyReady || first[0].n.PrescriptionID != g1.ShortID {
		t.Fatalf("before the stop: %+v", first)
	}
	sys.nc.Close() // down

	// While it is down.
	g2, g3 := order(), order()
	b.settle()
	ids, _ := released(t, b.release("FA565", ""))
	if !slices.Equal(ids, []string{g1.ShortID, g2.ShortID, g3.ShortID}) {
		t.Fatalf("nominated release: %v", ids)
	}
	disp := map[string]string{}
	for _, id := range g2.ItemIDs {
		disp[id] = "0001"
	}
	body, _ := fhirgen.DispenseNotification(g2, "FA565", disp, "0006", "")
	if res := b.post(b.token(auth.RoleDispenser, "FA565"), body); res.Status != 200 {
		t.Fatalf("dispense: %d %s", res.Status, res.Body)
	}
	if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, "FA565"), fhirgen.ReturnTask(g3, "FA565", "0003")); res.Status != 200 {
		t.Fatalf("return: %d %s", res.Status, res.Body)
	}
	claim, _ := fhirgen.Claim(g2, "FA565", "")
	if res := b.do("POST", "/FHIR/R4/Claim", b.token(auth.RoleDispenser, "FA565"), claim); res.Status != 200 {
		t.Fatalf("claim: %d %s", res.Status, res.Body)
	}
	b.settle()

	// Back up: everything since, each once, in the stream's order.
	sys = connectNotify(t, url, seeds[fa565.Name], fa565)
	after := fetchAll(t, sys, broker.NotifyConsumerName(fa565))
	var what []string
	seen := map[string]bool{}
	for i, g := range after {
		what = append(what, g.n.Event+" "+g.n.PrescriptionID)
		if seen[g.key()] {
			t.Errorf("notification %s received twice", g.key())
		}
		seen[g.key()] = true
		if i > 0 && g.seq <= after[i-1].seq {
			t.Errorf("out of order: %d after %d", g.seq, after[i-1].seq)
		}
		if g.subject != broker.DispenserNotifySubject("FA565", g.n.Event) || g.n.Dispenser != "FA565" {
			t.Errorf("notification on %s for %s", g.subject, g.n.Dispenser)
		}
	}
	for _, want := range []string{
		rx.EventNominatedRelease + " " + g1.ShortID, rx.EventNominatedRelease + " " + g2.ShortID, rx.EventNominatedRelease + " " + g3.ShortID,
		broker.NotifyReady + " " + g2.ShortID, broker.NotifyReady + " " + g3.ShortID,
		rx.EventDispense + " " + g2.ShortID, rx.EventReturn + " " + g3.ShortID, rx.EventClaim + " " + g2.ShortID,
	} {
		if !slices.Contains(what, want) {
			t.Errorf("missing %q; received %v", want, what)
		}
	}
	// The return clears the nomination: the prescription is not queued, nor
	// announced, again.
	if n := len(slices.DeleteFunc(slices.Clone(what), func(s string) bool { return s != broker.NotifyReady+" "+g3.ShortID })); n != 1 {
		t.Errorf("%d prescription-ready of %s, want 1: %v", n, g3.ShortID, what)
	}
	if len(after) != 8 {
		t.Errorf("%d notifications, want 8: %v", len(after), what)
	}

	// The fast path saw the same notifications, in the same order (a
	// redelivered event's notification may reach it twice: it is not
	// stored twice).
	var fastKeys, durableKeys []string
	fastSeen := map[string]bool{}
	for _, g := range drainCore(t, core) {
		if !fastSeen[g.key()] {
			fastSeen[g.key()] = true
			fastKeys = append(fastKeys, g.key())
		}
	}
	for _, g := range append(first, after...) {
		durableKeys = append(durableKeys, g.key())
	}
	if !slices.Equal(fastKeys, durableKeys) {
		t.Errorf("core subscriber got\n%v\ndurable consumer got\n%v", fastKeys, durableKeys)
	}

	// The prescriber's system reads its own with Consume: one notification
	// of each of the 9 events (3 orders, 3 releases, a dispense, a return, a
	// claim), acknowledged.
	pc := connectNotify(t, url, seeds[presc.Name], presc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pcons, err := pc.js.Consumer(ctx, broker.StreamNotify, broker.NotifyConsumerName(presc))
	if err != nil {
		t.Fatal(err)
	}
	pn := make(chan jetstream.Msg, 100)
	cc, err := pcons.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			t.Errorf("ack: %v", err)
		}
		pn <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 9; i++ {
		select {
		case m := <-pn:
			var nt broker.Notification
			if err := json.Unmarshal(m.Data(), &nt); err != nil || m.Subject() != broker.PrescriberNotifySubject("A83008", nt.Event) {
				t.Errorf("prescriber notification on %s: %s", m.Subject(), m.Data())
			}
		case <-ctx.Done():
			t.Fatalf("prescriber: %d of 9 notifications", i)
		}
	}
	cc.Drain()
	<-cc.Closed()
	if extra := len(pn); extra != 0 {
		t.Errorf("prescriber: %d more notifications than events", extra)
	}

	// Another dispenser reads its own consumer: nothing of FA565's.
	other := connectNotify(t, url, seeds[fh542.Name], fh542)
	if own := fetchAll(t, other, broker.NotifyConsumerName(fh542)); len(own) != 0 {
		t.Errorf("FH542 received %+v", own)
	}
	notifyRefusals(t, b, other, fa565, fh542)

	// The operator's inspect user reads the stream's configuration and
	// counts (no message).
	ops, err := connectNATS(t, url, seeds["ops"])
	if err != nil {
		t.Fatal(err)
	}
	if s, err := ops.js.Stream(ctx, broker.StreamNotify); err != nil || s.CachedInfo().State.Msgs == 0 {
		t.Errorf("inspect: stream info %s: %v", broker.StreamNotify, err)
	}
}

// notifyRefusals checks that user c (other) can reach nothing of victim's,
// and make or change no consumer.
func notifyRefusals(t *testing.T, b *testBroker, c *natsClient, victim, other broker.NATSUser) {
	t.Helper()
	filter := broker.NotifyFilter(victim)
	refused := []struct {
		name, subject string
		try           func(ctx context.Context) error
	}{
		{"info of another's consumer", "$JS.API.CONSUMER.INFO.EPS_NOTIFY." + victim.Name, func(ctx context.Context) error {
			_, err := c.js.Consumer(ctx, broker.StreamNotify, victim.Name)
			return err
		}},
		{"a consumer on another's subjects", "$JS.API.CONSUMER.CREATE.EPS_NOTIFY.peek." + filter, func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, broker.StreamNotify, jetstream.ConsumerConfig{Durable: "peek", FilterSubject: filter})
			return err
		}},
		{"another's consumer retargeted", "$JS.API.CONSUMER.CREATE.EPS_NOTIFY." + victim.Name + "." + broker.NotifyFilter(other), func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, broker.StreamNotify, jetstream.ConsumerConfig{Durable: victim.Name, FilterSubject: broker.NotifyFilter(other)})
			return err
		}},
		{"a consumer of its own (only the broker makes them)", "$JS.API.CONSUMER.CREATE.EPS_NOTIFY.mine." + broker.NotifyFilter(other), func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, broker.StreamNotify, jetstream.ConsumerConfig{Durable: "mine", FilterSubject: broker.NotifyFilter(other),
				DeliverSubject: broker.SubjectRx + "X"})
			return err
		}},
		{"a consumer of every subject", "$JS.API.CONSUMER.CREATE.EPS_NOTIFY.all", func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, broker.StreamNotify, jetstream.ConsumerConfig{Durable: "all"})
			return err
		}},
		{"delete its consumer", "$JS.API.CONSUMER.DELETE.EPS_NOTIFY." + other.Name, func(ctx context.Context) error {
			return c.js.DeleteConsumer(ctx, broker.StreamNotify, other.Name)
		}},
		{"stream info (lists every organisation's subjects)", "$JS.API.STREAM.INFO.EPS_NOTIFY", func(ctx context.Context) error {
			_, err := c.js.Stream(ctx, broker.StreamNotify)
			return err
		}},
		{"read a message of the stream", "$JS.API.STREAM.MSG.GET.EPS_NOTIFY", func(ctx context.Context) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.EPS_NOTIFY", []byte(`{"seq":1}`))
			return err
		}},
	}
	for _, tc := range refused {
		t.Run("refused "+tc.name, func(t *testing.T) { c.refusedRequest(t, tc.subject, tc.try) })
	}
	for _, subj := range []string{filter, "eps.notify.>", broker.NotifyInboxPrefix(victim) + ".>", "_INBOX.>", "$JS.ACK.>"} {
		if !c.refusedSubscribe(t, subj) {
			t.Errorf("subscribe %s: not refused", subj)
		}
	}
	for _, subj := range []string{"$JS.API.CONSUMER.MSG.NEXT.EPS_NOTIFY." + victim.Name, "$JS.ACK.EPS_NOTIFY." + victim.Name + ".1.1.1.1.0",
		"$JS.ACK._.x.EPS_NOTIFY." + victim.Name + ".1.1.1.1.0", "eps.notify.dispenser.FA565.prescription-ready"} {
		if !c.refusedPublish(t, subj) {
			t.Errorf("publish %s: not refused", subj)
		}
	}
	// Nothing was made or changed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := b.App.Store.JetStream().Stream(ctx, broker.StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"peek", "mine", "all"} {
		if _, err := st.Consumer(ctx, name); err == nil {
			t.Errorf("consumer %s was made", name)
		}
	}
	ci, err := st.Consumer(ctx, victim.Name)
	if err != nil {
		t.Fatal(err)
	}
	if f := ci.CachedInfo().Config.FilterSubject; f != filter {
		t.Errorf("%s's consumer filters %s", victim.Name, f)
	}
}

// A pull request names the subject its messages come to (its reply
// subject), and NATS does not check a reply subject against the user's
// permissions. A dispenser that points its pull at the event log or at
// another prescription's subject must not get its notifications stored there.
func TestNotifyPullReplyCannotWriteStreams(t *testing.T) {
	dir := t.TempDir()
	fa565 := broker.NATSUser{Name: "dispenser-FA565", Role: broker.NATSRoleDispenser, ODS: "FA565"}
	seed := natsUser(t, dir, fa565.Name, fa565.Role, fa565.ODS)
	b := startBroker(t, dir, func(c *config.Config) { c.NATSListen = "127.0.0.1:0" })
	url := "nats://" + b.App.NATS.Embedded.Addr().String()
	sys := connectNotify(t, url, seed, fa565)
	postOrders(t, b, 3, fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	b.settle()
	before := b.events("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, reply := range []string{broker.SubjectRx + "INJECTED", broker.SubjectRx + "FH542.INJECTED"} {
		if err := sys.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.EPS_NOTIFY."+fa565.Name, reply, []byte(`{"batch":1,"no_wait":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sys.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The pulled notifications are then in flight; the consumer's info shows
	// them delivered once the server has sent them.
	cons, err := b.App.Store.JetStream().Consumer(ctx, broker.StreamNotify, fa565.Name)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Delivered.Consumer >= 2 || time.Now().After(deadline) {
			t.Logf("delivered %d", info.Delivered.Consumer)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := b.events(""); n != before {
		t.Errorf("event log: %d messages, was %d", n, before)
	}
	if n := b.events("INJECTED"); n != 0 {
		t.Errorf("event log holds %d messages on %sINJECTED", n, broker.SubjectRx)
	}
}

// The README's nats CLI steps, run when the nats CLI is installed: the
// dispensing system reads and acknowledges its notifications with `nats
// consumer next`, and sees its consumer with `nats consumer info`.
func TestNotifyNATSCLI(t *testing.T) {
	cli, err := exec.LookPath("nats")
	if err != nil {
		t.Skip("the nats CLI is not installed")
	}
	dir := t.TempDir()
	fa565 := broker.NATSUser{Name: "dispenser-FA565", Role: broker.NATSRoleDispenser, ODS: "FA565"}
	seed := natsUser(t, dir, fa565.Name, fa565.Role, fa565.ODS)
	b := startBroker(t, dir, func(c *config.Config) { c.NATSListen = "127.0.0.1:0" })
	url := "nats://" + b.App.NATS.Embedded.Addr().String()
	gs := postOrders(t, b, 2, fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	b.settle()
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, cli, append([]string{"--server", url, "--nkey", seed, "--inbox-prefix", "_INBOX_dispenser-FA565"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NATS_CONTEXT=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run("consumer", "next", broker.StreamNotify, "dispenser-FA565", "--count", "2")
	for _, g := range gs {
		if !strings.Contains(out, g.ShortID) {
			t.Errorf("nats consumer next: %s not in\n%s", g.ShortID, out)
		}
	}
	if !strings.Contains(out, "eps.notify.dispenser.FA565.prescription-ready") {
		t.Errorf("nats consumer next:\n%s", out)
	}
	info := run("consumer", "info", broker.StreamNotify, "dispenser-FA565", "--json")
	var ci struct {
		NumPending    uint64 `json:"num_pending"`
		NumAckPending int    `json:"num_ack_pending"`
	}
	if err := json.Unmarshal([]byte(info), &ci); err != nil {
		t.Fatalf("nats consumer info: %v\n%s", err, info)
	}
	if ci.NumPending != 0 || ci.NumAckPending != 0 {
		t.Errorf("after next: %d pending, %d not acknowledged", ci.NumPending, ci.NumAckPending)
	}
}

// Notifications are stored by the notifier, before it acknowledges the
// event: while EPS_NOTIFY cannot take them, the event of a new order is
// retried, not acknowledged (the consumer's ack floor stays below it,
// nothing is notified); once it can, the event is applied and the
// notification stored. The ready queues do not wait for the notifications:
// the order is in its dispenser's queue all along.
func TestNotifyStoredBeforeEventAcked(t *testing.T) {
	b := startBroker(t, "")
	b.settle()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := b.App.Store.JetStream()
	st, err := js.Stream(ctx, broker.StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	subjects := cfg.Subjects
	cfg.Subjects = []string{"eps.notify-off.>"} // no stream takes eps.notify.>: its publishes fail
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	retriedBefore := consumerMessages(t, b, broker.ConsumerQueueProjector, "retried")
	g := postOrders(t, b, 1, fhirgen.Options{Sender: "A83008", Performer: "FA565"})[0]
	seq := b.events(g.ShortID)
	for consumerMessages(t, b, broker.ConsumerQueueProjector, "retried") == retriedBefore {
		if ctx.Err() != nil {
			t.Fatalf("the order's event was never retried: %s", b.App.Notifier().State())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := js.Consumer(ctx, broker.StreamEvents, broker.ConsumerQueueProjector)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream >= seq {
		t.Errorf("the event %d was acknowledged (ack floor %d) although its notification was not stored", seq, info.AckFloor.Stream)
	}
	if q, err := b.readyQueue(ctx, "FA565", 25); err != nil || len(q) != 1 || q[0].PrescriptionID != g.ShortID {
		t.Errorf("ready queue while the notification cannot be stored: %+v %v", q, err)
	}

	cfg.Subjects = subjects
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	b.settle()
	m, err := st.GetLastMsgForSubject(ctx, broker.DispenserNotifySubject("FA565", broker.NotifyReady))
	if err != nil {
		t.Fatalf("no ready notification stored: %v", err)
	}
	var n broker.Notification
	if err := json.Unmarshal(m.Data, &n); err != nil || n.PrescriptionID != g.ShortID {
		t.Errorf("ready notification %s (%v), want %s", m.Data, err, g.ShortID)
	}
	if q, err := b.readyQueue(ctx, "FA565", 25); err != nil || len(q) != 1 || q[0].PrescriptionID != g.ShortID {
		t.Errorf("ready queue: %+v %v", q, err)
	}
}
