package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// startNATS runs a standalone NATS server with JetStream on a temp dir, on a
// random loopback port, as an operator's external server would be.
func startNATS(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// With --nats-url the broker uses an external server: its streams are there
// (another client sees the order), and /readyz turns 503 when the server goes.
func TestExternalNATS(t *testing.T) {
	srv := startNATS(t)
	b := startBroker(t, "", func(c *config.Config) { c.NATSURL = srv.ClientURL() })
	if b.App.NATS.Embedded != nil {
		t.Fatal("an embedded server was started although --nats-url was given")
	}
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	if res := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); res.Status != 200 {
		t.Fatalf("%d %s", res.Status, res.Body)
	}

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), broker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), broker.SubjectRx+g.ShortID)
	if err != nil || string(m.Data) != string(g.Body) || m.Header.Get(broker.HeaderEvent) != "prescription-order" {
		t.Fatalf("the external server does not hold the order: %v", err)
	}
	nc.Close()

	if res := b.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Fatalf("readyz %d %s", res.Status, res.Body)
	}
	srv.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := b.do("GET", "/readyz", "", nil)
		if res.Status == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz still %d after NATS went away", res.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An order that cannot be stored is not acknowledged.
	g2, _ := tmpl.Order(fhirgen.Options{})
	t0 := time.Now()
	res := b.post(b.token(auth.RolePrescriber, g2.Sender), g2.Body)
	t.Logf("order with NATS down answered in %s", time.Since(t0))
	if res.Status != http.StatusServiceUnavailable {
		t.Errorf("order with NATS down: %d %s, want 503", res.Status, res.Body)
	}
}

// With --tls-cert and --tls-key the API is served over HTTPS.
func TestHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	b := startBroker(t, "", func(c *config.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := client.Get("https://" + b.App.Addr() + "/FHIR/R4/metadata")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Fatalf("status %d tls %v", res.StatusCode, res.TLS)
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// notifyUserConf is the authorization entry of a dispenser or prescriber
// user on an external NATS server, as the README gives it: the permissions
// the embedded server gives such a user.
const notifyUserConf = `    { nkey: %[1]s, permissions: {   # the user's public nkey
        publish: { allow: [
          "$JS.API.CONSUMER.INFO.EPS_NOTIFY.%[2]s",
          "$JS.API.CONSUMER.MSG.NEXT.EPS_NOTIFY.%[2]s",
          "$JS.ACK.EPS_NOTIFY.%[2]s.>",
          "$JS.ACK.*.*.EPS_NOTIFY.%[2]s.>"
        ] }
        subscribe: { allow: ["eps.notify.%[3]s.%[4]s.>", "_INBOX_%[2]s.>"] }
    } }
`

// With --nats-url the users, their permissions and their notification
// consumers are the operator's: the broker makes EPS_NOTIFY and no user
// consumer (not even for the users file of its data dir), and removes none.
// An operator who gives a dispensing system's user the README's permissions
// and makes its consumer with the README's nats consumer add (through the
// Go API, with the same configuration, when the nats CLI is not installed)
// gets what the embedded server gives: the system reads every notification,
// those made while it was down too, and reaches nothing of another
// organisation's.
func TestExternalNATSNotifyConsumers(t *testing.T) {
	keys := t.TempDir()
	fa565 := broker.NATSUser{Name: "dispenser-FA565", Role: broker.NATSRoleDispenser, ODS: "FA565"}
	fh542 := broker.NATSUser{Name: "dispenser-FH542", Role: broker.NATSRoleDispenser, ODS: "FH542"}
	seeds := map[string]string{}
	users := ""
	for _, u := range []*broker.NATSUser{&fa565, &fh542} {
		seeds[u.Name] = natsUser(t, keys, u.Name, u.Role, u.ODS)
		all, _ := broker.LoadNATSUsers(keys)
		u.NKey = all[len(all)-1].NKey
		users += fmt.Sprintf(notifyUserConf, u.NKey, u.Name, u.Role, u.ODS)
	}
	conf := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`listen: 127.0.0.1:-1
jetstream { store_dir: %q }
authorization {
  users = [
    { user: broker, password: "broker-secret" }      # or however the broker's own user is defined
%s  ]
}
`, t.TempDir(), users)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	// The README's permissions are those of the embedded server.
	for _, u := range []broker.NATSUser{fa565, fh542} {
		var got *server.Permissions
		for _, nk := range opts.Nkeys {
			if nk.Nkey == u.NKey {
				got = nk.Permissions
			}
		}
		want := u.Permissions()
		if got == nil || !slices.Equal(got.Publish.Allow, want.Publish.Allow) || !slices.Equal(got.Subscribe.Allow, want.Subscribe.Allow) {
			t.Fatalf("%s: configured %+v, the embedded server's %+v", u.Name, got, want)
		}
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()
	brokerURL := strings.Replace(url, "nats://", "nats://broker:broker-secret@", 1)

	// A users file in the broker's data dir is the embedded server's: with
	// --nats-url it makes no consumer.
	dir := t.TempDir()
	natsUser(t, dir, fa565.Name, fa565.Role, fa565.ODS)
	b := startBroker(t, dir, func(c *config.Config) { c.NATSURL = brokerURL })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := b.App.Store.JetStream()
	st, err := js.Stream(ctx, broker.StreamNotify)
	if err != nil {
		t.Fatal(err)
	}
	if names := consumerNames(t, ctx, st); len(names) != 0 {
		t.Fatalf("the broker made consumers of %s on an external server: %v", broker.StreamNotify, names)
	}

	// The operator makes FA565's consumer, as the README says.
	want := broker.NotifyConsumerConfig(fa565)
	cli, _ := exec.LookPath("nats")
	natsCLI := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, cli, append([]string{"--server", url, "--user", "broker", "--password", "broker-secret"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NATS_CONTEXT=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if cli != "" {
		natsCLI("consumer", "add", "EPS_NOTIFY", "dispenser-FA565", "--pull", "--filter", "eps.notify.dispenser.FA565.>",
			"--deliver", "all", "--ack", "explicit", "--wait", "30s", "--max-deliver=-1", "--max-pending", "1000",
			"--replay", "instant", "--description", "notifications of dispenser FA565", "--defaults")
	} else {
		t.Log("the nats CLI is not installed: the consumer is made through the Go API")
		if _, err := js.CreateConsumer(ctx, broker.StreamNotify, want); err != nil {
			t.Fatal(err)
		}
	}
	ci, err := st.Consumer(ctx, fa565.Name)
	if err != nil {
		t.Fatal(err)
	}
	got := ci.CachedInfo().Config
	if got.Durable != want.Durable || got.FilterSubject != want.FilterSubject || got.AckPolicy != want.AckPolicy ||
		got.DeliverPolicy != want.DeliverPolicy || got.AckWait != want.AckWait || got.MaxDeliver != want.MaxDeliver ||
		got.MaxAckPending != want.MaxAckPending || got.ReplayPolicy != want.ReplayPolicy || got.DeliverSubject != "" {
		t.Errorf("consumer %+v, the embedded server's %+v", got, want)
	}

	// The dispensing system reads what is waiting; is down while two more
	// orders come; reads both when back. A restarted broker leaves the
	// consumer as it is.
	order := func(b *testBroker) string {
		t.Helper()
		return postOrders(t, b, 1, fhirgen.Options{Sender: "A83008", Performer: "FA565"})[0].ShortID
	}
	read := func() []string {
		t.Helper()
		sys := connectNotify(t, url, seeds[fa565.Name], fa565)
		defer sys.nc.Close()
		var ids []string
		for _, g := range fetchAll(t, sys, fa565.Name) {
			if g.subject != broker.DispenserNotifySubject("FA565", g.n.Event) || g.n.Event != broker.NotifyReady {
				t.Errorf("notification %s on %s", g.n.Event, g.subject)
			}
			ids = append(ids, g.n.PrescriptionID)
		}
		return ids
	}
	g1 := order(b)
	b.settle()
	if ids := read(); !slices.Equal(ids, []string{g1}) {
		t.Fatalf("first read: %v, want [%s]", ids, g1)
	}
	g2, g3 := order(b), order(b)
	b.settle()
	b.stop()
	b = startBroker(t, dir, func(c *config.Config) { c.NATSURL = brokerURL })
	g4 := order(b)
	b.settle()
	if st, err = b.App.Store.JetStream().Stream(ctx, broker.StreamNotify); err != nil {
		t.Fatal(err)
	}
	if names := consumerNames(t, ctx, st); !slices.Equal(names, []string{fa565.Name}) {
		t.Errorf("consumers after a restart of the broker: %v", names)
	}
	if ids := read(); !slices.Equal(ids, []string{g2, g3, g4}) {
		t.Errorf("after the system's downtime: %v, want %v", ids, []string{g2, g3, g4})
	}

	// Another organisation's user reaches none of it.
	other := connectNotify(t, url, seeds[fh542.Name], fh542)
	notifyRefusals(t, b, other, fa565, fh542)

	// The system's user gone, the operator removes its consumer.
	if cli != "" {
		natsCLI("consumer", "rm", "EPS_NOTIFY", "dispenser-FA565", "-f")
	} else if err := st.DeleteConsumer(ctx, fa565.Name); err != nil {
		t.Fatal(err)
	}
	if names := consumerNames(t, ctx, st); len(names) != 0 {
		t.Errorf("consumers after nats consumer rm: %v", names)
	}
}

// consumerNames lists a stream's consumers, sorted.
func consumerNames(t *testing.T, ctx context.Context, st jetstream.Stream) []string {
	t.Helper()
	var names []string
	l := st.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}
