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
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
