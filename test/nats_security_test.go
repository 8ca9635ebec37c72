package test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// natsUser makes a NATS user in dir (before the broker starts) and returns
// the path of its seed file.
func natsUser(t *testing.T, dir, name string, role broker.NATSRole, ods string) string {
	t.Helper()
	_, seed, err := broker.AddNATSUser(dir, name, role, ods, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".nk")
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// natsClient is a client of the broker's --nats-listen port whose
// asynchronous errors (permission violations) are collected.
type natsClient struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectNATS(t *testing.T, url, seedFile string) (*natsClient, error) {
	t.Helper()
	c := &natsClient{errs: make(chan error, 64)}
	opts := []nats.Option{
		nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}
	if seedFile != "" {
		o, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, o)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c, nil
}

// violation waits for the server to refuse something of this client as a
// permission violation naming subject.
func (c *natsClient) violation(t *testing.T, subject string) bool {
	t.Helper()
	select {
	case err := <-c.errs:
		if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
			return true
		}
		t.Logf("another error: %v", err)
		return false
	case <-time.After(10 * time.Second):
		return false
	}
}

// drain forgets earlier asynchronous errors.
func (c *natsClient) drain() {
	for {
		select {
		case <-c.errs:
		default:
			return
		}
	}
}

// refusedSubscribe subscribes to subject and reports whether the server
// refused it as a permission violation.
func (c *natsClient) refusedSubscribe(t *testing.T, subject string) bool {
	t.Helper()
	c.drain()
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		return true
	}
	defer sub.Unsubscribe()
	// The server answers the SUB before the PONG of this flush.
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c.violation(t, subject)
}

// refusedPublish publishes to subject and reports whether the server
// refused it as a permission violation.
func (c *natsClient) refusedPublish(t *testing.T, subject string) bool {
	t.Helper()
	c.drain()
	if err := c.nc.Publish(subject, []byte("{}")); err != nil {
		return true
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c.violation(t, subject)
}

// refusedRequest runs a JetStream call whose request the server must refuse
// as a permission violation on subject; the call, which gets no answer, is
// cancelled once the refusal has come.
func (c *natsClient) refusedRequest(t *testing.T, subject string, try func(context.Context) error) {
	t.Helper()
	c.drain()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- try(ctx) }()
	refused := c.violation(t, subject)
	cancel()
	if err := <-done; err == nil {
		t.Fatalf("%s: allowed", subject)
	}
	if !refused {
		t.Fatalf("%s: not refused as a permission violation", subject)
	}
}

// natsSecurityBroker starts a broker listening for NATS clients on a free
// loopback port with an inspect user, a dispenser user for FA565 and a
// prescriber user for A83008; it returns the broker, the NATS URL and the
// users' seed files.
func natsSecurityBroker(t *testing.T) (*testBroker, string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	seeds := map[string]string{
		"inspect":    natsUser(t, dir, "ops", broker.NATSRoleInspect, ""),
		"dispenser":  natsUser(t, dir, "dispenser-FA565", broker.NATSRoleDispenser, "FA565"),
		"prescriber": natsUser(t, dir, "prescriber-A83008", broker.NATSRolePrescriber, "A83008"),
	}
	b := startBroker(t, dir, func(c *config.Config) { c.NATSListen = "127.0.0.1:0" })
	return b, "nats://" + b.App.NATS.Embedded.Addr().String(), seeds
}

// The --nats-listen port lets in only the users made with epsctl nats-user:
// no client without credentials, none with an unknown key.
func TestNATSSecurityRefusesUnknownClients(t *testing.T) {
	b, url, _ := natsSecurityBroker(t)
	stranger := natsUser(t, t.TempDir(), "stranger", broker.NATSRoleInspect, "") // listed in another data dir
	for _, tc := range []struct{ name, seed string }{
		{"no credentials", ""},
		{"unknown nkey", stranger},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := connectNATS(t, url, tc.seed)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Fatalf("connected, or refused for another reason: %v", err)
			}
		})
	}
	// The broker's own connection goes on.
	if st := b.App.NATS.Conn.Status(); st != nats.CONNECTED {
		t.Fatalf("broker connection %v", st)
	}
}

// The inspect user lists and inspects streams and consumers, and can
// neither write, delete, purge nor read messages or patient-keyed subjects.
func TestNATSSecurityInspectUser(t *testing.T) {
	b, url, seeds := natsSecurityBroker(t)
	c, err := connectNATS(t, url, seeds["inspect"])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// What it may do: list and inspect.
	var names []string
	lister := c.js.StreamNames(ctx)
	for n := range lister.Name() {
		names = append(names, n)
	}
	if lister.Err() != nil {
		t.Fatalf("stream names: %v", lister.Err())
	}
	for _, want := range []string{broker.StreamEvents, broker.StreamAudit, broker.StreamNotify} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("stream %s not listed: %v", want, names)
		}
	}
	infos := c.js.ListStreams(ctx)
	n := 0
	for range infos.Info() {
		n++
	}
	if infos.Err() != nil || n != len(names) {
		t.Errorf("stream list: %d of %d, %v", n, len(names), infos.Err())
	}
	st, err := c.js.Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatalf("stream info %s: %v", broker.StreamEvents, err)
	}
	if cfg := st.CachedInfo().Config; !cfg.DenyDelete || !cfg.DenyPurge {
		t.Errorf("%s deny delete %v purge %v", broker.StreamEvents, cfg.DenyDelete, cfg.DenyPurge)
	}
	if _, err := st.Consumer(ctx, broker.ConsumerQueueProjector); err != nil {
		t.Errorf("consumer info: %v", err)
	}
	if _, err := c.js.AccountInfo(ctx); err != nil {
		t.Errorf("account info: %v", err)
	}

	// What it may not do. Each attempt is a request the server refuses.
	refused := []struct {
		name, subject string
		try           func(ctx context.Context) error
	}{
		{"delete EPS_AUDIT", "$JS.API.STREAM.DELETE.EPS_AUDIT", func(ctx context.Context) error { return c.js.DeleteStream(ctx, broker.StreamAudit) }},
		{"delete EPS_EVENTS", "$JS.API.STREAM.DELETE.EPS_EVENTS", func(ctx context.Context) error { return c.js.DeleteStream(ctx, broker.StreamEvents) }},
		{"purge EPS_EVENTS", "$JS.API.STREAM.PURGE.EPS_EVENTS", func(ctx context.Context) error { return st.Purge(ctx) }},
		{"delete a message", "$JS.API.STREAM.MSG.DELETE.EPS_EVENTS", func(ctx context.Context) error { return st.DeleteMsg(ctx, 1) }},
		{"read a message", "$JS.API.DIRECT.GET.EPS_EVENTS", func(ctx context.Context) error { _, err := st.GetMsg(ctx, 1); return err }},
		{"read a prescription's last message", "$JS.API.DIRECT.GET.EPS_EVENTS.eps.rx.X", func(ctx context.Context) error {
			_, err := st.GetLastMsgForSubject(ctx, broker.SubjectRx+"X")
			return err
		}},
		{"info of the audit stream (subjects hold NHS numbers)", "$JS.API.STREAM.INFO.EPS_AUDIT", func(ctx context.Context) error {
			_, err := c.js.Stream(ctx, broker.StreamAudit)
			return err
		}},
		{"make a consumer", "$JS.API.CONSUMER.CREATE.EPS_EVENTS.peek", func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, broker.StreamEvents, jetstream.ConsumerConfig{Name: "peek"})
			return err
		}},
		{"change a stream", "$JS.API.STREAM.UPDATE.EPS_EVENTS", func(ctx context.Context) error {
			cfg := st.CachedInfo().Config
			cfg.Description = "changed"
			_, err := c.js.UpdateStream(ctx, cfg)
			return err
		}},
		{"publish a forged claim", "eps.rx.X", func(ctx context.Context) error {
			_, err := c.js.Publish(ctx, broker.SubjectRx+"X", []byte("{}"), jetstream.WithMsgID("forged"))
			return err
		}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) { c.refusedRequest(t, tc.subject, tc.try) })
	}
	for _, subj := range []string{"eps.rx.>", "eps.notify.>", "eps.audit.>", ">", "_EPS_BROKER_INBOX.>"} {
		if !c.refusedSubscribe(t, subj) {
			t.Errorf("subscribe %s: not refused", subj)
		}
	}
	if !c.refusedPublish(t, "eps.rx.X") {
		t.Error("publish eps.rx.X: not refused")
	}

	// Nothing changed: both protected streams are there, as they were.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{broker.StreamAudit, broker.StreamEvents} {
		s, err := b.App.Store.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s after the attempts: %v", name, err)
		}
		if info := s.CachedInfo(); info.Config.Description == "changed" || info.State.Msgs != 0 {
			t.Errorf("%s changed: %+v", name, info.State)
		}
	}
}

// A dispensing system's user receives its own notifications and nothing
// else; a prescriber's likewise.
func TestNATSSecurityOrganisationUsers(t *testing.T) {
	b, url, seeds := natsSecurityBroker(t)
	disp, err := connectNATS(t, url, seeds["dispenser"])
	if err != nil {
		t.Fatal(err)
	}
	presc, err := connectNATS(t, url, seeds["prescriber"])
	if err != nil {
		t.Fatal(err)
	}
	dsub, err := disp.nc.SubscribeSync("eps.notify.dispenser.FA565.>")
	if err != nil {
		t.Fatal(err)
	}
	psub, err := presc.nc.SubscribeSync("eps.notify.prescriber.A83008.>")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*natsClient{disp, presc} {
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	if err != nil {
		t.Fatal(err)
	}
	if res := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); res.Status != 200 {
		t.Fatalf("order: %d %s", res.Status, res.Body)
	}
	for _, tc := range []struct {
		sub  *nats.Subscription
		want string
	}{
		{dsub, broker.DispenserNotifySubject("FA565", broker.NotifyReady)},
		{psub, "eps.notify.prescriber.A83008.prescription-order"},
	} {
		m, err := tc.sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("no notification on %s: %v", tc.want, err)
		}
		if m.Subject != tc.want {
			t.Errorf("notification on %s, want %s", m.Subject, tc.want)
		}
	}

	for _, tc := range []struct {
		name string
		c    *natsClient
		subj string
	}{
		{"dispenser: another dispenser", disp, "eps.notify.dispenser.FH542.>"},
		{"dispenser: every dispenser", disp, "eps.notify.dispenser.*.>"},
		{"dispenser: prescribers", disp, "eps.notify.prescriber.A83008.>"},
		{"dispenser: event log", disp, "eps.rx.>"},
		{"dispenser: everything", disp, ">"},
		{"dispenser: inboxes", disp, "_INBOX.>"},
		{"prescriber: another prescriber", presc, "eps.notify.prescriber.B81001.>"},
		{"prescriber: dispensers", presc, "eps.notify.dispenser.FA565.>"},
		{"prescriber: event log", presc, "eps.rx.>"},
	} {
		t.Run("subscribe "+tc.name, func(t *testing.T) {
			if !tc.c.refusedSubscribe(t, tc.subj) {
				t.Errorf("subscribe %s: not refused", tc.subj)
			}
		})
	}
	for _, tc := range []struct {
		name string
		c    *natsClient
		subj string
	}{
		{"dispenser: a forged event", disp, broker.SubjectRx + g.ShortID},
		{"dispenser: a JetStream request", disp, "$JS.API.STREAM.DELETE." + broker.StreamAudit},
		{"dispenser: a notification", disp, "eps.notify.dispenser.FA565.prescription-ready"},
		{"prescriber: a forged event", presc, broker.SubjectRx + g.ShortID},
	} {
		t.Run("publish "+tc.name, func(t *testing.T) {
			if !tc.c.refusedPublish(t, tc.subj) {
				t.Errorf("publish %s: not refused", tc.subj)
			}
		})
	}
	if seq := b.events(g.ShortID); seq == 0 {
		t.Error("the order is not in the event log")
	}
}

// A protected stream found without its deny settings (deleted and made
// again, or changed, outside the broker) stops the broker from starting,
// with an error that names it; the bucket of nominations likewise.
func TestNATSSecurityRefusesChangedDenySettings(t *testing.T) {
	for _, tc := range []struct {
		stream string
		cfg    jetstream.StreamConfig
		lost   string
	}{
		{broker.StreamAudit, jetstream.StreamConfig{Name: broker.StreamAudit, Subjects: []string{broker.SubjectAudit + ">"}}, "deny_delete and deny_purge"},
		{broker.StreamEvents, jetstream.StreamConfig{Name: broker.StreamEvents, Subjects: []string{broker.SubjectRx + ">"}, DenyDelete: true}, "deny_purge"},
		{"KV_" + broker.BucketNominations, jetstream.StreamConfig{Name: "KV_" + broker.BucketNominations, Subjects: []string{"$KV." + broker.BucketNominations + ".>"}, AllowRollup: true}, "deny_delete"},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default()
			cfg.DataDir = dir
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, err := broker.ConnectNATS(ctx, cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			js, _ := jetstream.New(n.Conn)
			_, err = js.CreateStream(ctx, tc.cfg)
			n.Close()
			if err != nil {
				t.Fatal(err)
			}

			a, err := app.New(ctx, cfg, zap.NewNop(), nil)
			if err == nil {
				a.Listen()
				go a.Serve(ctx)
				t.Fatal("the broker started")
			}
			if !errors.Is(err, broker.ErrDenySettingsChanged) || !strings.Contains(err.Error(), "stream "+tc.stream+" exists without "+tc.lost) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// A users file edited into something the broker would misread stops it
// from starting, rather than letting in a user with other rights than meant.
func TestNATSSecurityRefusesBadUsersFile(t *testing.T) {
	for name, users := range map[string]string{
		"dispenser without ODS": `{"users":[{"name":"d","role":"dispenser","nkey":"UDLQ2TIHH2NJR7VJLC5SPDPRA2DUBKWP5YTF2LT477CSM2EJ6RIATJUS"}]}`,
		"unknown role":          `{"users":[{"name":"a","role":"admin","nkey":"UDLQ2TIHH2NJR7VJLC5SPDPRA2DUBKWP5YTF2LT477CSM2EJ6RIATJUS"}]}`,
		"seed for a key":        `{"users":[{"name":"o","role":"inspect","nkey":"SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"}]}`,
		"not JSON":              `users: ops`,
		"same key twice": `{"users":[{"name":"a","role":"inspect","nkey":"UDLQ2TIHH2NJR7VJLC5SPDPRA2DUBKWP5YTF2LT477CSM2EJ6RIATJUS"},` +
			`{"name":"b","role":"dispenser","ods":"FA565","nkey":"UDLQ2TIHH2NJR7VJLC5SPDPRA2DUBKWP5YTF2LT477CSM2EJ6RIATJUS"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(broker.NATSUsersPath(dir), []byte(users), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := config.Default()
			cfg.DataDir, cfg.NATSListen = dir, "127.0.0.1:0"
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err := app.New(ctx, cfg, zap.NewNop(), nil)
			if err == nil {
				a.Listen()
				go a.Serve(ctx)
				t.Fatal("the broker started")
			}
			if !strings.Contains(err.Error(), "NATS users") {
				t.Fatalf("error %v", err)
			}
		})
	}
}
