package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nhs-eps/epsbroker/config"
)

// testCA signs certificates for the route tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "eps test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// sign makes a server-and-client certificate of the CA with the given
// common name and DNS names (and 127.0.0.1), and returns its files.
func (ca *testCA) sign(t *testing.T, cn string, dns ...string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: dns, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// routeErrors is a nats-server logger that hands on its error lines.
type routeErrors struct {
	mu    sync.Mutex
	lines []string
}

func (l *routeErrors) Noticef(string, ...any) {}
func (l *routeErrors) Warnf(string, ...any)   {}
func (l *routeErrors) Fatalf(string, ...any)  {}
func (l *routeErrors) Debugf(string, ...any)  {}
func (l *routeErrors) Tracef(string, ...any)  {}
func (l *routeErrors) Errorf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}

func (l *routeErrors) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// startRouteNode starts a server with the route settings a broker cluster
// node gets from cfg (clusterOptions), without JetStream: only its routes
// are looked at.
func startRouteNode(t *testing.T, name string, cfg config.Config, log server.Logger) *server.Server {
	t.Helper()
	so := &server.Options{ServerName: name, Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true}
	if err := clusterOptions(cfg, so); err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(so)
	if err != nil {
		t.Fatal(err)
	}
	if log != nil {
		srv.SetLogger(log, false, false)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatalf("%s not ready", name)
	}
	return srv
}

// With route mutual TLS, a server whose certificate is of the cluster's CA
// but names none of the routes (here a client's, CN=some-client) is
// refused as a route; a node whose certificate names a route's host
// (localhost) joins. Without the known-URL check any certificate of the CA
// joined, and such a node reads and writes every stream.
func TestClusterRouteTLSOnlyRouteNames(t *testing.T) {
	ca := newTestCA(t)
	routeCert, routeKey := ca.sign(t, "eps-route", "localhost")
	otherCert, otherKey := ca.sign(t, "some-client")
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	routes := fmt.Sprintf("nats-route://localhost:%d,nats-route://localhost:%d", ports[0], ports[1])
	nodeCfg := func(port int) config.Config {
		c := config.Default()
		c.NATSClusterListen = fmt.Sprintf("127.0.0.1:%d", port)
		c.NATSRoutes = routes
		c.NATSClusterTLSCert, c.NATSClusterTLSKey, c.NATSClusterTLSCA = routeCert, routeKey, ca.file
		return c
	}
	logA := &routeErrors{}
	a := startRouteNode(t, "eps-a", nodeCfg(ports[0]), logA)

	// The intruder: a plain nats-server in the same cluster, its route TLS
	// with the other certificate of the same CA, dialling node A.
	tc, err := serverTLS(otherCert, otherKey, ca.file)
	if err != nil {
		t.Fatal(err)
	}
	tc.RootCAs = tc.ClientCAs
	intruder, err := server.NewServer(&server.Options{ServerName: "intruder", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: config.Default().NATSClusterName, Host: "127.0.0.1", Port: server.RANDOM_PORT, TLSConfig: tc, TLSTimeout: 5},
		Routes:  server.RoutesFromStr(fmt.Sprintf("nats-route://localhost:%d", ports[0]))})
	if err != nil {
		t.Fatal(err)
	}
	go intruder.Start()
	t.Cleanup(func() { intruder.Shutdown(); intruder.WaitForShutdown() })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within the bound", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	// A refuses the intruder's route for its certificate (the TLS
	// handshake itself verifies: the certificate is of the CA).
	waitFor("node A refusing or taking the intruder's route", func() bool {
		return logA.has("authentication error") || intruder.NumRoutes() > 0
	})
	if n := intruder.NumRoutes(); n != 0 {
		t.Fatalf("the intruder with a certificate of the CA naming no route joined: %d routes", n)
	}

	b := startRouteNode(t, "eps-b", nodeCfg(ports[1]), nil)
	waitFor("node B joining node A", func() bool { return a.NumRoutes() >= 1 && b.NumRoutes() >= 1 })

	if n := intruder.NumRoutes(); n != 0 {
		t.Errorf("the intruder with a certificate naming no route has %d routes, want 0", n)
	}
	routez, err := a.Routez(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routez.Routes {
		if r.RemoteName != "eps-b" {
			t.Errorf("node A has a route to %q, want only eps-b", r.RemoteName)
		}
	}
}
