package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
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
	// A short quorum grace: /readyz turns 503 once the server has been
	// gone that long (the default 15 s covers a leader election).
	b := startBroker(t, "", func(c *config.Config) { c.NATSURL = srv.ClientURL(); c.NATSQuorumGrace = time.Second })
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

// With --nats-url the users, their permissions and their notification
// consumers are the operator's: the broker makes EPS_NOTIFY and no user
// consumer (not even for the users file of its data dir), and removes none.
// An operator who gives a dispensing system's user the README's permissions
// and makes its consumer with the README's nats consumer add (through the
// Go API, with the same configuration, when the nats CLI is not installed)
// gets what the embedded server gives: the system reads every notification,
// those made while it was down too, and reaches nothing of another
// organisation's. The server configuration and the commands are read from
// README.md itself, so that the README and the code cannot drift apart.
func TestExternalNATSNotifyConsumers(t *testing.T) {
	keys := t.TempDir()
	fa565 := broker.NATSUser{Name: "dispenser-FA565", Role: broker.NATSRoleDispenser, ODS: "FA565"}
	fh542 := broker.NATSUser{Name: "dispenser-FH542", Role: broker.NATSRoleDispenser, ODS: "FH542"}
	seeds := map[string]string{}
	for _, u := range []*broker.NATSUser{&fa565, &fh542} {
		seeds[u.Name] = natsUser(t, keys, u.Name, u.Role, u.ODS)
		all, _ := broker.LoadNATSUsers(keys)
		u.NKey = all[len(all)-1].NKey
	}
	// The README's authorization block, for FA565, with the broker's
	// password and FA565's public nkey filled in; its user entry again for
	// FH542.
	auth := readmeAuthorization(t, fa565, "broker-secret", fa565, fh542)
	conf := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\n%s", t.TempDir(), auth)), 0o600); err != nil {
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
		if got == nil || got.Publish == nil || got.Subscribe == nil {
			t.Fatalf("%s: the README's configuration gives it no publish and subscribe permissions: %+v", u.Name, got)
		}
		if !slices.Equal(got.Publish.Allow, want.Publish.Allow) || !slices.Equal(got.Subscribe.Allow, want.Subscribe.Allow) ||
			!slices.Equal(got.Publish.Deny, want.Publish.Deny) || !slices.Equal(got.Subscribe.Deny, want.Subscribe.Deny) ||
			(got.Response == nil) != (want.Response == nil) {
			t.Fatalf("%s: the README's permissions: publish %q subscribe %q (deny %q %q); the embedded server's: publish %q subscribe %q",
				u.Name, got.Publish.Allow, got.Subscribe.Allow, got.Publish.Deny, got.Subscribe.Deny, want.Publish.Allow, want.Subscribe.Allow)
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

	// The operator makes FA565's consumer with the README's own command
	// (its connection options, --server and --creds, replaced by this
	// server's and the broker's user): through the nats CLI when it is
	// installed, else through the Go API with the configuration the
	// command's options give. Either way the consumer's whole configuration
	// is the one the broker makes on its embedded server, description
	// included: a reference consumer made from NotifyConsumerConfig on the
	// same server (so with the same server defaults) differs from it in its
	// name only.
	want := broker.NotifyConsumerConfig(fa565)
	add := readmeNATSCommand(t, "consumer add EPS_NOTIFY")
	rm := readmeNATSCommand(t, "consumer rm EPS_NOTIFY")
	cli, _ := exec.LookPath("nats")
	natsCLI := func(c natsCommand) {
		t.Helper()
		cmd := exec.CommandContext(ctx, cli, append([]string{"--server", url, "--user", "broker", "--password", "broker-secret"}, c.args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NATS_CONTEXT=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
	stream, cfg := consumerAddConfig(t, add.args)
	if stream != broker.StreamNotify || cfg.Durable != fa565.Name {
		t.Fatalf("the README's nats consumer add makes %s on %s, want %s on %s", cfg.Durable, stream, fa565.Name, broker.StreamNotify)
	}
	if cli != "" {
		natsCLI(add)
	} else {
		t.Log("the nats CLI is not installed: the README's consumer is made through the Go API")
		if _, err := js.CreateConsumer(ctx, broker.StreamNotify, cfg); err != nil {
			t.Fatal(err)
		}
	}
	ci, err := st.Consumer(ctx, fa565.Name)
	if err != nil {
		t.Fatal(err)
	}
	got := ci.CachedInfo().Config
	ref := want
	ref.Durable = "reference-" + fa565.Name
	rc, err := js.CreateConsumer(ctx, broker.StreamNotify, ref)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := rc.CachedInfo().Config
	if err := st.DeleteConsumer(ctx, ref.Durable); err != nil {
		t.Fatal(err)
	}
	wantCfg.Durable, wantCfg.Name = got.Durable, got.Name
	if got.PauseUntil != nil && got.PauseUntil.IsZero() {
		got.PauseUntil = nil // the nats CLI sends "not paused" as the zero time
	}
	if !reflect.DeepEqual(got, wantCfg) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(wantCfg, "", "  ")
		t.Errorf("the README's consumer:\n%s\nthe broker's (NotifyConsumerConfig):\n%s", g, w)
	}
	if got.Description != want.Description {
		t.Errorf("description %q, the broker's %q", got.Description, want.Description)
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
	if len(rm.args) != 5 || rm.args[2] != broker.StreamNotify || rm.args[3] != fa565.Name || rm.args[4] != "-f" {
		t.Fatalf("the README's nats consumer rm: %q", rm.args)
	}
	if cli != "" {
		natsCLI(rm)
	} else if err := st.DeleteConsumer(ctx, rm.args[3]); err != nil {
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

// natsCommand is a nats CLI command of the README, without its connection
// options (--server, --creds), which name the operator's server and
// credentials: args start at the subcommand.
type natsCommand struct{ args []string }

// readmeNATSCommand is the one nats CLI command of ../README.md that
// contains what, taken from a shell block (with its line continuations and
// quotes) or from inline code.
func readmeNATSCommand(t *testing.T, what string) natsCommand {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	blocks := strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "```")
	for i, block := range blocks {
		if i%2 == 1 { // a fenced block: its commands are its lines
			for _, line := range strings.Split(block, "\n") {
				if strings.HasPrefix(line, "nats ") && strings.Contains(line, what) {
					found = append(found, line)
				}
			}
			continue
		}
		for j, code := range strings.Split(block, "`") {
			if j%2 == 1 && strings.HasPrefix(code, "nats ") && strings.Contains(code, what) {
				found = append(found, strings.Join(strings.Fields(code), " "))
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("README.md: %d nats commands with %q, want 1: %q", len(found), what, found)
	}
	words := shellWords(t, found[0])
	args := words[1:]
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "--server", "--creds":
			if len(args) < 2 {
				t.Fatalf("README.md: %s without a value: %s", args[0], found[0])
			}
			args = args[2:]
		default:
			t.Fatalf("README.md: nats option %s before the subcommand is not a connection option: %s", args[0], found[0])
		}
	}
	return natsCommand{args: args}
}

// shellWords splits a command line as a POSIX shell does for words in
// plain, single and double quotes (no expansions).
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unclosed quote: %s", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// consumerAddConfig is the stream and the consumer configuration that
// `nats consumer add <stream> <name> <options>` (args, from the subcommand)
// asks for, for the options the README uses; any other option fails the
// test, so that a README line this reading does not understand cannot pass.
func consumerAddConfig(t *testing.T, args []string) (string, jetstream.ConsumerConfig) {
	t.Helper()
	if len(args) < 4 || args[0] != "consumer" || args[1] != "add" {
		t.Fatalf("not a nats consumer add: %q", args)
	}
	stream := args[2]
	cfg := jetstream.ConsumerConfig{Durable: args[3]}
	pull := false
	for opts := args[4:]; len(opts) > 0; {
		name, value, hasValue := strings.Cut(opts[0], "=")
		opts = opts[1:]
		switch name {
		case "--pull":
			pull = true
			continue
		case "--defaults":
			continue
		}
		if !hasValue {
			if len(opts) == 0 {
				t.Fatalf("nats consumer add: %s without a value", name)
			}
			value, opts = opts[0], opts[1:]
		}
		var err error
		switch name {
		case "--filter":
			cfg.FilterSubject = value
		case "--description":
			cfg.Description = value
		case "--deliver":
			if value != "all" {
				err = fmt.Errorf("deliver %q", value)
			}
			cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		case "--ack":
			if value != "explicit" {
				err = fmt.Errorf("ack %q", value)
			}
			cfg.AckPolicy = jetstream.AckExplicitPolicy
		case "--replay":
			if value != "instant" {
				err = fmt.Errorf("replay %q", value)
			}
			cfg.ReplayPolicy = jetstream.ReplayInstantPolicy
		case "--wait":
			cfg.AckWait, err = time.ParseDuration(value)
		case "--max-deliver":
			cfg.MaxDeliver, err = strconv.Atoi(value)
		case "--max-pending":
			cfg.MaxAckPending, err = strconv.Atoi(value)
		default:
			err = errors.New("an option this test does not read")
		}
		if err != nil {
			t.Fatalf("nats consumer add %s %s: %v", name, value, err)
		}
	}
	if !pull {
		t.Fatalf("nats consumer add without --pull: %q", args)
	}
	return stream, cfg
}

// readmeAuthorization is the README's server configuration block for a
// dispensing system's user (the one fenced block with "authorization {"),
// which the README writes for readme (its user's public nkey given as an
// example, the broker's password as "..."): the broker's password set to
// password and the user entry repeated for each of users, its nkey, name and
// ODS code made theirs.
func readmeAuthorization(t *testing.T, readme broker.NATSUser, password string, users ...broker.NATSUser) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for i, s := range strings.Split(string(b), "```") {
		if i%2 == 1 && strings.Contains(s, "authorization {") {
			if block != "" {
				t.Fatal("README.md: more than one authorization block")
			}
			block = strings.TrimPrefix(s, "\n")
		}
	}
	lines := strings.SplitAfter(block, "\n")
	first, last := -1, -1
	for i, l := range lines {
		switch {
		case strings.Contains(l, "{ nkey: "):
			first = i
		case first >= 0 && last < 0 && strings.TrimSpace(l) == "} }":
			last = i
		}
	}
	if first < 0 || last < 0 || strings.Count(block, `password: "..."`) != 1 {
		t.Fatalf("README.md: no authorization block with one broker user and one nkey user:\n%s", block)
	}
	entry := strings.Join(lines[first:last+1], "")
	nkey := strings.Fields(strings.SplitN(entry, "{ nkey: ", 2)[1])[0]
	nkey = strings.TrimSuffix(nkey, ",")
	if !strings.Contains(entry, readme.Name) || !strings.Contains(entry, string(readme.Role)+"."+readme.ODS) {
		t.Fatalf("README.md: the authorization block is not for %s:\n%s", readme.Name, entry)
	}
	var entries strings.Builder
	for _, u := range users {
		entries.WriteString(strings.NewReplacer(nkey, u.NKey, readme.Name, u.Name,
			string(readme.Role)+"."+readme.ODS, string(u.Role)+"."+u.ODS).Replace(entry))
	}
	out := strings.Join(lines[:first], "") + entries.String() + strings.Join(lines[last+1:], "")
	return strings.Replace(out, `password: "..."`, `password: "`+password+`"`, 1)
}
