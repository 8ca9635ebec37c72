package test

// The deployment files of deploy/ (docker compose, Kubernetes, the NATS
// configuration, the secrets script) cannot be run here: no Docker daemon, no
// cluster. These tests hold them to the code instead: every broker flag and
// EPS_* variable they use is one of the broker's settings and its value is
// accepted; their probes name routes the broker serves; the NATS
// configuration is one the server accepts (its own parser, as
// `nats-server --config FILE -t`), fsyncs before acknowledging, names three
// routes to each other and, started, lets in exactly the users it names; the
// broker's streams are asked for 3 replicas; the image, its user and ports
// agree with the Dockerfile; and what the README says about these files names
// files that exist.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/internal/natscluster"
)

// deployDir is the repository's deploy/ directory, seen from test/.
var deployDir = filepath.Join("..", "deploy")

// nonrootUID is the user of the Dockerfile's run stage
// (gcr.io/distroless/static-debian12:nonroot, USER nonroot): uid and gid
// 65532 in every distroless image. Kubernetes' runAsUser and the secrets
// script's chown must name it by number.
const nonrootUID = 65532

// probePaths are the broker routes an orchestrator or a load balancer may
// probe: readiness (503 without quorum or while the index catches up) and
// liveness.
var probePaths = map[string]bool{"/readyz": true, "/healthz": true}

// TestDeployCompose checks deploy/compose/compose.yaml: three NATS nodes of
// the nats-server release the broker is built with, each with its own name,
// volume and certificate, all on nats.conf; three broker instances built
// from the Dockerfile whose commands are valid epsbroker settings naming all
// three nodes and replicas 3, sharing the key files at the paths the broker
// reads them from; a front that routes by /readyz; and secrets that are the
// files the secrets script makes.
func TestDeployCompose(t *testing.T) {
	cf := readCompose(t, "compose.yaml")
	secrets := makeSecrets(t, "compose")

	secretFile := composeSecretFiles(t, cf, secrets)

	nodes := servicesWith(cf, func(s composeService) bool { return strings.HasPrefix(s.Image, "nats:") })
	brokers := servicesWith(cf, func(s composeService) bool { return s.Build != nil })
	if !slices.Equal(nodes, []string{"n1", "n2", "n3"}) {
		t.Fatalf("NATS services %v, want n1 n2 n3", nodes)
	}
	if len(brokers) < 2 || len(brokers) > 3 {
		t.Fatalf("broker services %v, want 2 or 3", brokers)
	}

	// The NATS nodes.
	wantImage := "nats:" + natsServerVersion(t) + "-alpine"
	volumes := map[string]string{}
	for _, n := range nodes {
		s := cf.Services[n]
		if s.Image != wantImage {
			t.Errorf("%s: image %s, want %s (the nats-server of go.mod)", n, s.Image, wantImage)
		}
		if s.Environment["NATS_SERVER_NAME"] != n {
			t.Errorf("%s: NATS_SERVER_NAME %q, want its own name", n, s.Environment["NATS_SERVER_NAME"])
		}
		conf := mountedFrom(t, s, "/etc/nats/nats.conf")
		if conf != "./nats.conf" || !slices.Equal(s.Command, []string{"nats-server", "--config", "/etc/nats/nats.conf"}) {
			t.Errorf("%s: runs %q with %q mounted as its configuration, want nats-server --config on ./nats.conf", n, s.Command, conf)
		}
		data := mountedFrom(t, s, "/data")
		if other, ok := volumes[data]; ok || data == "" {
			t.Errorf("%s: JetStream volume %q (shared with %s): want a volume of its own", n, data, other)
		}
		volumes[data] = n
		if _, ok := cf.Volumes[data]; !ok {
			t.Errorf("%s: volume %s is not declared", n, data)
		}
		if s.StopSignal != "SIGUSR2" {
			t.Errorf("%s: stop_signal %q, want SIGUSR2 (lame duck mode)", n, s.StopSignal)
		}
		if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "http://127.0.0.1:8222/healthz") {
			t.Errorf("%s: health check %v, want the monitoring port's /healthz", n, s.Healthcheck)
		}
		for _, r := range s.Secrets {
			if r.containerPath() == "/etc/nats/certs/server.pem" {
				checkServerCert(t, n, secretFile[r.Source], secretFile["nats-ca"], []string{n})
			}
		}
	}

	// The configuration every node runs, with node n1's certificates.
	opts := composeNATSOptions(t, cf, "n1", secretFile)
	checkNATSOptions(t, opts, "n1")
	if got := opts.StoreDir; !strings.HasPrefix(got, "/data/") {
		t.Errorf("nats.conf: store_dir %s is not on the node's volume (/data)", got)
	}
	var routeHosts []string
	for _, r := range opts.Routes {
		routeHosts = append(routeHosts, r.Hostname())
		if r.Port() != strconv.Itoa(opts.Cluster.Port) {
			t.Errorf("nats.conf: route %s is not on the cluster port %d", r, opts.Cluster.Port)
		}
	}
	slices.Sort(routeHosts)
	if !slices.Equal(routeHosts, nodes) {
		t.Errorf("nats.conf: routes to %v, want one to each node %v", routeHosts, nodes)
	}

	// The broker instances.
	df := readDockerfile(t)
	dataVolumes := map[string]string{}
	for _, b := range brokers {
		s := cf.Services[b]
		if s.Build.Context != "../.." || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("%s: built from %s/%s, want the repository's Dockerfile (../.., Dockerfile)", b, s.Build.Context, s.Build.Dockerfile)
		}
		cfg := brokerConfig(t, "compose "+b, s.Command, s.Environment, df.env)
		checkBrokerNATS(t, "compose "+b, cfg, nodes, opts.Port)
		// Files the broker reads are the secrets mounted where its flags say.
		secretAt := map[string]string{}
		for _, r := range s.Secrets {
			secretAt[r.containerPath()] = r.Source
		}
		for flag, file := range map[string]string{"nats-tls-ca": cfg.NATSTLSCA, "nats-tls-cert": cfg.NATSTLSCert,
			"nats-tls-key": cfg.NATSTLSKey, "pseudonym-key": cfg.PseudonymKey,
			"the issuer key": auth.IssuerKeyPath(cfg.DataDir)} {
			if _, ok := secretAt[file]; !ok {
				t.Errorf("%s: %s %s is not a mounted secret (%v)", b, flag, file, secretAt)
			}
		}
		checkKeyFiles(t, b, secretFile[secretAt[auth.IssuerKeyPath(cfg.DataDir)]], secretFile[secretAt[cfg.PseudonymKey]], true)
		checkClientCert(t, b, secretFile[secretAt[cfg.NATSTLSCert]], secretFile[secretAt[cfg.NATSTLSKey]],
			secretFile[secretAt[cfg.NATSTLSCA]], "CN=epsbroker")
		data := mountedFrom(t, s, cfg.DataDir)
		if other, ok := dataVolumes[data]; ok || data == "" {
			t.Errorf("%s: data dir volume %q (shared with %s): want one per instance (its index snapshot)", b, data, other)
		}
		dataVolumes[data] = b
		if s.StopSignal != "SIGTERM" {
			t.Errorf("%s: stop_signal %q, want SIGTERM (the broker drains on it)", b, s.StopSignal)
		}
		for _, n := range nodes {
			if !strings.Contains(fmt.Sprint(s.DependsOn), n) {
				t.Errorf("%s: does not wait for %s", b, n)
			}
		}
	}

	checkFront(t, cf, brokers, df, secretFile)
}

// checkFront: the front of a compose file is HAProxy on haproxy.cfg, which
// checks every broker service on its HTTP port with GET /readyz, and serves
// clients over HTTPS only, with the certificate and key make-secrets.sh
// makes (front.pem, signed by the CA, for servers), on the port published.
func checkFront(t *testing.T, cf composeFile, brokers []string, df dockerfile, secretFile map[string]string) {
	t.Helper()
	front := cf.Services["front"]
	cfgPath := mountedFrom(t, front, "/usr/local/etc/haproxy/haproxy.cfg")
	hb, err := os.ReadFile(filepath.Join(deployDir, "compose", cfgPath))
	if err != nil {
		t.Fatalf("front: %v", err)
	}
	haproxy := string(hb)
	binds := regexp.MustCompile(`(?m)^\s*bind (\S+)(.*)$`).FindAllStringSubmatch(haproxy, -1)
	if len(binds) != 1 {
		t.Fatalf("haproxy.cfg: binds %v, want one (HTTPS)", binds)
	}
	crt := regexp.MustCompile(`\sssl\s+crt\s+(\S+)`).FindStringSubmatch(binds[0][2])
	if crt == nil {
		t.Fatalf("haproxy.cfg: bind %s%s serves plain HTTP: want ssl crt FILE", binds[0][1], binds[0][2])
	}
	_, port, _ := net.SplitHostPort(binds[0][1])
	if !slices.Contains(front.Ports, port+":"+port) {
		t.Errorf("front: ports %v, want the HTTPS port %s published", front.Ports, port)
	}
	var crtSecret string
	for _, r := range front.Secrets {
		if r.containerPath() == crt[1] {
			crtSecret = r.Source
		}
	}
	if crtSecret == "" {
		t.Errorf("front: the certificate %s is not a mounted secret", crt[1])
	} else if pair, err := tls.X509KeyPair(mustRead(t, secretFile[crtSecret]), mustRead(t, secretFile[crtSecret])); err != nil {
		t.Errorf("front: %s (%s) does not hold a certificate and its key: %v", crt[1], secretFile[crtSecret], err)
	} else {
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(mustRead(t, secretFile["nats-ca"]))
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSName: "localhost"}); err != nil {
			t.Errorf("front: %s is not the CA's server certificate for localhost (EPS_FRONT_NAME's default): %v", crt[1], err)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*option httpchk GET /readyz\s*$`).MatchString(haproxy) ||
		!regexp.MustCompile(`(?m)^\s*http-check expect status 200\s*$`).MatchString(haproxy) {
		t.Errorf("haproxy.cfg: the health check is not GET /readyz expecting 200")
	}
	// The front waits for an answer at least as long as the broker may take
	// to write one (--http-write-timeout): a slow commit is not cut short.
	if m := regexp.MustCompile(`(?m)^\s*timeout server (\d+)s\s*$`).FindStringSubmatch(haproxy); m == nil {
		t.Error("haproxy.cfg: no timeout server")
	} else if n, _ := strconv.Atoi(m[1]); time.Duration(n)*time.Second <= config.Default().HTTPWriteTimeout {
		t.Errorf("haproxy.cfg: timeout server %ss, not above the broker's --http-write-timeout %v", m[1], config.Default().HTTPWriteTimeout)
	}
	var servers []string
	for _, m := range regexp.MustCompile(`(?m)^\s*server (\S+) (\S+):(\d+)`).FindAllStringSubmatch(haproxy, -1) {
		servers = append(servers, m[2])
		if m[3] != df.httpPort {
			t.Errorf("haproxy.cfg: server %s on port %s, the broker listens on %s", m[1], m[3], df.httpPort)
		}
	}
	if !slices.Equal(servers, brokers) {
		t.Errorf("haproxy.cfg: servers %v, want the broker services %v", servers, brokers)
	}
}

// TestDeployEmbedded checks deploy/compose/embedded.yaml: three broker
// instances built from the Dockerfile whose embedded servers are the
// cluster. Each command is valid epsbroker settings making its server a
// cluster node under its own name, with routes to all three on the route
// port, authenticated by mutual TLS with its own certificate (whose DNS name
// is its service's, as the other nodes dial it), replicas auto (3 on a
// cluster) and sync always; each keeps its store on a volume of its own,
// with the shared keys where the broker reads them; the front routes by
// /readyz to all three.
func TestDeployEmbedded(t *testing.T) {
	cf := readCompose(t, "embedded.yaml")
	secrets := makeSecrets(t, "embedded")
	secretFile := composeSecretFiles(t, cf, secrets)
	brokers := servicesWith(cf, func(s composeService) bool { return s.Build != nil })
	if !slices.Equal(brokers, []string{"broker1", "broker2", "broker3"}) {
		t.Fatalf("broker services %v, want broker1 broker2 broker3", brokers)
	}
	if others := servicesWith(cf, func(s composeService) bool { return strings.HasPrefix(s.Image, "nats:") }); len(others) != 0 {
		t.Errorf("NATS services %v beside the brokers: the brokers are the cluster", others)
	}
	df := readDockerfile(t)
	volumes := map[string]string{}
	for _, b := range brokers {
		s := cf.Services[b]
		if s.Build.Context != "../.." || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("%s: built from %s/%s, want the repository's Dockerfile (../.., Dockerfile)", b, s.Build.Context, s.Build.Dockerfile)
		}
		cfg := brokerConfig(t, "embedded "+b, s.Command, s.Environment, df.env)
		if !cfg.Clustered() || cfg.NATSServerName != b || cfg.NATSURL != "" {
			t.Errorf("%s: clustered %v as %q (nats-url %q): want an embedded cluster node named after its service", b, cfg.Clustered(), cfg.NATSServerName, cfg.NATSURL)
		}
		host, port, _ := net.SplitHostPort(cfg.NATSClusterListen)
		if host != "0.0.0.0" {
			t.Errorf("%s: route listener on %s, want every interface (the other nodes dial it)", b, cfg.NATSClusterListen)
		}
		var routes []string
		for _, r := range strings.Split(cfg.NATSRoutes, ",") {
			u, err := url.Parse(r)
			if err != nil || u.Port() != port {
				t.Errorf("%s: route %q is not on the route port %s", b, r, port)
				continue
			}
			routes = append(routes, u.Hostname())
		}
		slices.Sort(routes)
		if !slices.Equal(routes, brokers) {
			t.Errorf("%s: routes to %v, want all three %v", b, routes, brokers)
		}
		if cfg.Replicas != 0 && cfg.Replicas != 3 {
			t.Errorf("%s: --replicas %d, want auto (3 on a cluster) or 3", b, cfg.Replicas)
		}
		if _, always := cfg.SyncInterval(); !always {
			t.Errorf("%s: --jetstream-sync %s, want always", b, cfg.JetStreamSync)
		}
		secretAt := map[string]string{}
		for _, r := range s.Secrets {
			secretAt[r.containerPath()] = r.Source
		}
		for flag, file := range map[string]string{"nats-cluster-tls-ca": cfg.NATSClusterTLSCA, "nats-cluster-tls-cert": cfg.NATSClusterTLSCert,
			"nats-cluster-tls-key": cfg.NATSClusterTLSKey, "pseudonym-key": cfg.PseudonymKey, "the issuer key": auth.IssuerKeyPath(cfg.DataDir)} {
			if _, ok := secretAt[file]; !ok {
				t.Errorf("%s: %s %s is not a mounted secret (%v)", b, flag, file, secretAt)
			}
		}
		checkServerCert(t, b, secretFile[secretAt[cfg.NATSClusterTLSCert]], secretFile[secretAt[cfg.NATSClusterTLSCA]], []string{b})
		if _, err := tls.LoadX509KeyPair(secretFile[secretAt[cfg.NATSClusterTLSCert]], secretFile[secretAt[cfg.NATSClusterTLSKey]]); err != nil {
			t.Errorf("%s: route certificate and key: %v", b, err)
		}
		for _, f := range []string{cfg.NATSClusterTLSCert, cfg.NATSClusterTLSKey} {
			if fi, err := os.Stat(secretFile[secretAt[f]]); err == nil && os.Geteuid() == 0 && fileUID(fi) != nonrootUID {
				t.Errorf("%s: %s belongs to uid %d; the broker (uid %d) reads it", b, f, fileUID(fi), nonrootUID)
			}
		}
		checkKeyFiles(t, b, secretFile[secretAt[auth.IssuerKeyPath(cfg.DataDir)]], secretFile[secretAt[cfg.PseudonymKey]], true)
		data := mountedFrom(t, s, cfg.DataDir)
		if other, ok := volumes[data]; ok || data == "" {
			t.Errorf("%s: data volume %q (shared with %s): want one per node (its JetStream store)", b, data, other)
		}
		volumes[data] = b
		if s.StopSignal != "SIGTERM" {
			t.Errorf("%s: stop_signal %q, want SIGTERM (the broker drains on it)", b, s.StopSignal)
		}
	}
	checkFront(t, cf, brokers, df, secretFile)
}

// TestDeployEmbeddedRuns starts the three brokers of embedded.yaml with
// their own command lines, on loopback: the same settings except the
// addresses (HTTP, metrics, the route listener and the routes, to localhost)
// and the route certificate (one for localhost, signed by the script's CA,
// as broker1..3 are not names here). Each keeps the script's shared keys in
// its data dir, as compose mounts them. The servers form one cluster over
// mutual TLS, the broker's streams and buckets come up R3 with current
// followers (replicas auto), and every instance is ready.
func TestDeployEmbeddedRuns(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	cf := readCompose(t, "embedded.yaml")
	secrets := makeSecrets(t, "embedded")
	secretFile := composeSecretFiles(t, cf, secrets)
	brokers := servicesWith(cf, func(s composeService) bool { return s.Build != nil })
	cert, key := signLocalhost(t, secrets)
	ports := freePorts(t, len(brokers))
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://localhost:%d", p))
	}
	df := readDockerfile(t)
	var cfgs []config.Config
	for i, b := range brokers {
		cfg, secretAt := composeBrokerConfig(t, cf, "embedded", b, df, secretFile)
		cfg.NATSClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[i])
		cfg.NATSRoutes = strings.Join(routes, ",")
		cfg.NATSClusterTLSCert, cfg.NATSClusterTLSKey = cert, key
		cfg.NATSClusterTLSCA = secretFile[secretAt[cfg.NATSClusterTLSCA]]
		cfg.NATSClusterWait = 90 * time.Second
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, cfg)
	}
	nodes := startCluster(t, cfgs)
	waitReplicated(t, nodes[0].b.App.Store.JetStream(), 3)
	for _, n := range nodes {
		waitReady(t, n.b, 200, 90*time.Second)
	}
}

// composeBrokerConfig is the settings of compose service name (its
// command line and environment over the Dockerfile's), with its data dir a
// fresh one holding the issuer and pseudonym keys from the files the
// secrets script made (as compose mounts them) and its listeners on free
// loopback ports; secretAt maps each path the service mounts a secret at
// to the secret's name.
func composeBrokerConfig(t *testing.T, cf composeFile, what, name string, df dockerfile, secretFile map[string]string) (cfg config.Config, secretAt map[string]string) {
	t.Helper()
	s := cf.Services[name]
	cfg = brokerConfig(t, what+" "+name, s.Command, s.Environment, df.env)
	secretAt = map[string]string{}
	for _, r := range s.Secrets {
		secretAt[r.containerPath()] = r.Source
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{auth.IssuerKeyPath(cfg.DataDir), cfg.PseudonymKey} {
		rel, ok := strings.CutPrefix(f, cfg.DataDir+"/")
		if !ok {
			t.Fatalf("%s: %s is not in the data dir %s", name, f, cfg.DataDir)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), mustRead(t, secretFile[secretAt[f]]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.PseudonymKey = filepath.Join(dir, strings.TrimPrefix(cfg.PseudonymKey, cfg.DataDir+"/"))
	cfg.DataDir = dir
	cfg.HTTPAddr, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	return cfg, secretAt
}

// composeSecretFiles maps a compose file's secrets to the files the
// secrets script made in dir: each must be one, under $EPS_SECRETS_DIR.
func composeSecretFiles(t *testing.T, cf composeFile, dir string) map[string]string {
	t.Helper()
	const prefix = "${EPS_SECRETS_DIR:?set EPS_SECRETS_DIR}/"
	out := map[string]string{}
	for name, s := range cf.Secrets {
		rel, ok := strings.CutPrefix(s.File, prefix)
		if !ok {
			t.Errorf("secret %s: file %q is not under %s", name, s.File, prefix)
			continue
		}
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err != nil {
			t.Errorf("secret %s: deploy/make-secrets.sh makes no %s", name, rel)
		}
		out[name] = p
	}
	return out
}

// TestDeployNATSConfig starts a NATS server from deploy/compose/nats.conf
// (node n1, its own ports and store on loopback, without its routes) and
// checks who gets in: the broker's certificate, to an account with
// JetStream; the inspect certificate, to stream info but no stream change
// and no other inbox; the ops certificate, to the system account; and no
// client without a certificate of the deployment's CA.
func TestDeployNATSConfig(t *testing.T) {
	cf := readCompose(t, "compose.yaml")
	secrets := makeSecrets(t, "compose")
	secretFile := composeSecretFiles(t, cf, secrets)
	opts := composeNATSOptions(t, cf, "n1", secretFile)
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "127.0.0.1", -1
	opts.Cluster = server.ClusterOpts{} // one node: its routes name hosts that are not here
	opts.Routes = nil
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("the NATS server of nats.conf did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	connect := func(name string, extra ...nats.Option) (*nats.Conn, error) {
		pool := x509.NewCertPool()
		caPEM, err := os.ReadFile(filepath.Join(secrets, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(caPEM)
		tc := &tls.Config{ServerName: "n1", RootCAs: pool, MinVersion: tls.VersionTLS12}
		if name != "" {
			cert, err := tls.LoadX509KeyPair(filepath.Join(secrets, name+".pem"), filepath.Join(secrets, name+"-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		return nats.Connect(srv.ClientURL(), append([]nats.Option{nats.Secure(tc), nats.Timeout(10 * time.Second),
			nats.NoReconnect(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, extra...)...)
	}

	// The broker: JetStream in its account.
	bc, err := connect("broker/epsbroker")
	if err != nil {
		t.Fatalf("the broker's certificate: %v", err)
	}
	defer bc.Close()
	bjs, err := jetstream.New(bc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bjs.CreateStream(ctx, jetstream.StreamConfig{Name: broker.StreamEvents, Subjects: []string{broker.SubjectRx + ">"}}); err != nil {
		t.Fatalf("the broker's certificate: create %s: %v", broker.StreamEvents, err)
	}
	if _, err := bjs.Publish(ctx, broker.SubjectRx+"A", []byte("x")); err != nil {
		t.Fatalf("the broker's certificate: publish: %v", err)
	}
	if info, err := bjs.AccountInfo(ctx); err != nil || info.Streams != 1 {
		t.Fatalf("the broker's account: %+v, %v", info, err)
	}

	// inspect: stream info, nothing else.
	ic, err := connect("inspect", nats.CustomInboxPrefix("_INBOX_inspect"))
	if err != nil {
		t.Fatalf("the inspect certificate: %v", err)
	}
	defer ic.Close()
	ijs, err := jetstream.New(ic)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ijs.Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatalf("inspect: stream info of %s: %v", broker.StreamEvents, err)
	}
	if st.CachedInfo().State.Msgs != 1 {
		t.Errorf("inspect sees %d messages in %s, want the broker's 1", st.CachedInfo().State.Msgs, broker.StreamEvents)
	}
	if _, err := ic.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	if err := ic.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ic.LastError(); err == nil || !strings.Contains(err.Error(), "_INBOX.>") {
		t.Errorf("inspect subscribed to _INBOX.>, where the broker's replies go (last error %v)", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	_, err = ijs.CreateStream(short, jetstream.StreamConfig{Name: "X", Subjects: []string{"x.>"}})
	cancelShort()
	if err == nil {
		t.Error("inspect made a stream")
	}

	// ops: the system account.
	oc, err := connect("ops")
	if err != nil {
		t.Fatalf("the ops certificate: %v", err)
	}
	defer oc.Close()
	if _, err := oc.Request("$SYS.REQ.SERVER.PING.VARZ", nil, 10*time.Second); err != nil {
		t.Errorf("ops: a system account request: %v", err)
	}

	// No certificate: refused.
	if nc, err := connect(""); err == nil {
		nc.Close()
		t.Error("a client without a certificate got in")
	}
}

// TestDeployNATSCluster runs nats.conf as the three nodes of a cluster on
// loopback: the configuration as compose mounts it, except the addresses
// (each node's ports, the routes to localhost) and the node certificate
// (one for localhost, signed by the script's CA, as the nodes' own name n1,
// n2, n3 are not here). The routes form; the broker's certificate creates an
// R3 stream whose replicas become current; two brokers started with
// compose's own command lines (pointed at these nodes) make their streams
// and buckets R3 and are ready; and a server that dials a route with a
// client certificate of the same CA (the broker's: no DNS name) is refused.
func TestDeployNATSCluster(t *testing.T) {
	// Not parallel: it sets environment variables (t.Setenv).
	cf := readCompose(t, "compose.yaml")
	secrets := makeSecrets(t, "compose")
	secretFile := composeSecretFiles(t, cf, secrets)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	nodeCert, nodeKey := signLocalhost(t, secrets)
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://localhost:%d", p))
	}
	// start runs nats.conf as node (its NATS_SERVER_NAME), with cert and
	// key as its certificate, on cluster port port.
	start := func(node, cert, key string, port int, routes []string, log server.Logger) *server.Server {
		files := map[string]string{}
		for k, v := range secretFile {
			files[k] = v
		}
		for _, r := range cf.Services["n1"].Secrets {
			switch r.containerPath() {
			case "/etc/nats/certs/server.pem":
				files[r.Source] = cert
			case "/etc/nats/certs/server-key.pem":
				files[r.Source] = key
			}
		}
		opts := composeNATSOptions(t, cf, "n1", files)
		opts.ServerName = node
		opts.Host, opts.Port = "127.0.0.1", -1
		opts.HTTPHost, opts.HTTPPort = "127.0.0.1", -1
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", port
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		opts.StoreDir = t.TempDir()
		opts.NoSigs = true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		if log != nil {
			srv.SetLoggerV2(log, false, false, false)
		}
		go srv.Start()
		t.Cleanup(srv.Shutdown)
		if !srv.ReadyForConnections(30 * time.Second) {
			t.Fatalf("%s did not start", node)
		}
		return srv
	}
	refused := make(chan string, 1)
	var nodes []*server.Server
	for i, name := range []string{"n1", "n2", "n3"} {
		var log server.Logger
		if i == 0 {
			log = routeRefusals{refused}
		}
		nodes = append(nodes, start(name, nodeCert, nodeKey, ports[i], routes, log))
	}

	// The broker's certificate: an R3 stream, once the cluster has a meta leader.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, filepath.Join(secrets, "ca.pem")))
	pair, err := tls.LoadX509KeyPair(filepath.Join(secrets, "broker", "epsbroker.pem"), filepath.Join(secrets, "broker", "epsbroker-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(nodes[0].ClientURL(), nats.Secure(&tls.Config{ServerName: "localhost", RootCAs: pool,
		Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("the broker's certificate: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for created := false; !created; {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = js.CreateStream(actx, jetstream.StreamConfig{Name: "DEPLOY_CHECK", Subjects: []string{"deploy.check"}, Replicas: 3})
		acancel()
		created = err == nil
		if err != nil && ctx.Err() != nil {
			t.Fatalf("no R3 stream on the cluster of nats.conf: %v (routes %d %d %d)", err, nodes[0].NumRoutes(), nodes[1].NumRoutes(), nodes[2].NumRoutes())
		}
	}
	if _, err := js.Publish(ctx, "deploy.check", []byte("x")); err != nil {
		t.Fatalf("publish to the R3 stream: %v", err)
	}
	if err := natscluster.WaitStreamsCurrent(ctx, js, 3, "DEPLOY_CHECK"); err != nil {
		t.Fatalf("the R3 stream's replicas did not become current: %v", err)
	}

	// Two brokers with compose's own command lines (the URLs pointed at
	// these nodes, the files where the script made them): their streams
	// and buckets come up R3 with current followers, and they are ready.
	df := readDockerfile(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, fmt.Sprintf("tls://localhost:%d", n.Addr().(*net.TCPAddr).Port))
	}
	var brokers []*testBroker
	for _, name := range []string{"broker1", "broker2"} {
		cfg, secretAt := composeBrokerConfig(t, cf, "compose", name, df, secretFile)
		cfg.NATSURL = strings.Join(urls, ",")
		cfg.NATSTLSCA, cfg.NATSTLSCert, cfg.NATSTLSKey = secretFile[secretAt[cfg.NATSTLSCA]], secretFile[secretAt[cfg.NATSTLSCert]], secretFile[secretAt[cfg.NATSTLSKey]]
		b, err := startClusterBroker(t, cfg)
		if err != nil {
			t.Fatalf("%s on the cluster of nats.conf: %v", name, err)
		}
		brokers = append(brokers, b)
	}
	waitReplicated(t, brokers[0].App.Store.JetStream(), 3)
	for _, b := range brokers {
		waitReady(t, b, 200, 90*time.Second)
	}

	// A server with the broker's certificate (the CA's, but no DNS name)
	// dialling n1's route port is refused.
	start("intruder", filepath.Join(secrets, "broker", "epsbroker.pem"), filepath.Join(secrets, "broker", "epsbroker-key.pem"),
		server.RANDOM_PORT, routes[:1], nil)
	select {
	case msg := <-refused:
		t.Logf("n1: %s", msg)
	case <-ctx.Done():
		t.Fatal("n1 did not refuse a route dialled with a client certificate")
	}
}

// routeRefusals is a server logger that passes on the first route refused
// for its credentials.
type routeRefusals struct{ c chan string }

func (l routeRefusals) Errorf(format string, v ...any) {
	if msg := fmt.Sprintf(format, v...); strings.Contains(msg, "rid:") && strings.Contains(msg, server.ErrAuthentication.Error()) {
		select {
		case l.c <- msg:
		default:
		}
	}
}
func (routeRefusals) Noticef(string, ...any) {}
func (routeRefusals) Warnf(string, ...any)   {}
func (routeRefusals) Fatalf(string, ...any)  {}
func (routeRefusals) Debugf(string, ...any)  {}
func (routeRefusals) Tracef(string, ...any)  {}

// signLocalhost makes a node certificate for localhost (server and client
// authentication, as the script's node certificates), signed by the
// script's CA, and returns its certificate and key files.
func signLocalhost(t *testing.T, secrets string) (string, string) {
	t.Helper()
	caBlock, _ := pem.Decode(mustRead(t, filepath.Join(secrets, "ca.pem")))
	keyBlock, _ := pem.Decode(mustRead(t, filepath.Join(secrets, "ca-key.pem")))
	if caBlock == nil || keyBlock == nil {
		t.Fatal("the script's CA is not PEM")
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "localhost.pem"), filepath.Join(dir, "localhost-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestDeployKubernetes checks deploy/kubernetes: the values for the official
// NATS chart (cluster of 3, JetStream on a volume claim, fsync always, route
// and client TLS, spread across zones, the users of nats.conf) and the
// broker's Deployment, Service and PodDisruptionBudget (valid settings naming
// the chart's three pods, replicas 3, probes on routes the broker serves,
// the image's user, read-only root, keys where the broker reads them).
func TestDeployKubernetes(t *testing.T) {
	values := readYAMLDoc(t, filepath.Join(deployDir, "kubernetes", "nats-values.yaml"))
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"config", "cluster", "enabled"}, true},
		{[]string{"config", "cluster", "replicas"}, 3},
		{[]string{"config", "cluster", "tls", "enabled"}, true},
		{[]string{"config", "cluster", "tls", "merge", "verify_cert_and_check_known_urls"}, true},
		{[]string{"config", "jetstream", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "enabled"}, true},
		{[]string{"config", "jetstream", "fileStore", "pvc", "enabled"}, true},
		{[]string{"config", "jetstream", "merge", "sync_interval"}, "always"},
		{[]string{"config", "nats", "tls", "enabled"}, true},
		{[]string{"config", "nats", "tls", "merge", "verify_and_map"}, true},
		{[]string{"config", "merge", "system_account"}, "SYS"},
		{[]string{"config", "merge", "accounts", "EPS", "jetstream"}, "enabled"},
		{[]string{"tlsCA", "enabled"}, true},
		{[]string{"container", "image", "tag"}, natsServerVersion(t) + "-alpine"},
		{[]string{"podDisruptionBudget", "enabled"}, true},
		{[]string{"podTemplate", "topologySpreadConstraints", "topology.kubernetes.io/zone", "whenUnsatisfiable"}, "DoNotSchedule"},
	} {
		if got := dig(values, c.path...); got != c.want {
			t.Errorf("nats-values.yaml: %s = %v, want %v", strings.Join(c.path, "."), got, c.want)
		}
	}
	if got, _ := dig(values, "config", "merge", "max_payload").(int); int64(got) < minMaxPayload() {
		t.Errorf("nats-values.yaml: max_payload %d, want at least %d (two times --max-body)", got, minMaxPayload())
	}
	// The same users as nats.conf, and inspect may do what the embedded
	// server's inspect role may.
	users := map[string]map[string]any{}
	for _, acc := range []string{"EPS", "SYS"} {
		list, _ := dig(values, "config", "merge", "accounts", acc, "users").([]any)
		for _, u := range list {
			m, _ := u.(map[string]any)
			name, _ := m["user"].(string)
			users[name] = m
			if want := map[string]string{"CN=epsbroker": "EPS", "CN=eps-inspect": "EPS", "CN=eps-ops": "SYS"}[name]; want != acc {
				t.Errorf("nats-values.yaml: user %q in account %s, want %q", name, acc, want)
			}
		}
	}
	if len(users) != 3 {
		t.Errorf("nats-values.yaml: users %v, want CN=epsbroker, CN=eps-inspect, CN=eps-ops", keys(users))
	}
	checkInspectPermissions(t, "nats-values.yaml", strs(dig(users["CN=eps-inspect"], "permissions", "publish", "allow")),
		strs(dig(users["CN=eps-inspect"], "permissions", "subscribe", "allow")))
	if _, ok := users["CN=epsbroker"]["permissions"]; ok {
		t.Error("nats-values.yaml: the broker's user is limited: it makes and changes its streams, buckets and consumers")
	}

	// The broker.
	docs := readYAMLDocs(t, filepath.Join(deployDir, "kubernetes", "epsbroker.yaml"))
	byKind := map[string]map[string]any{}
	for _, d := range docs {
		kind, _ := d["kind"].(string)
		if _, dup := byKind[kind]; dup {
			t.Errorf("epsbroker.yaml: two %s", kind)
		}
		byKind[kind] = d
	}
	dep, svc, pdb, np := byKind["Deployment"], byKind["Service"], byKind["PodDisruptionBudget"], byKind["NetworkPolicy"]
	if dep == nil || svc == nil || pdb == nil || np == nil || len(byKind) != 4 {
		t.Fatalf("epsbroker.yaml: kinds %v, want Deployment, Service, PodDisruptionBudget, NetworkPolicy", keys(byKind))
	}
	if n, _ := dig(dep, "spec", "replicas").(int); n < 2 || n > 3 {
		t.Errorf("Deployment: %d replicas, want 2 or 3", n)
	}
	if dig(dep, "spec", "strategy", "type") != "RollingUpdate" || dig(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable") != 1 ||
		dig(dep, "spec", "strategy", "rollingUpdate", "maxSurge") != 1 {
		t.Errorf("Deployment: strategy %v, want a rolling update one instance at a time (maxUnavailable 1, maxSurge 1)", dig(dep, "spec", "strategy"))
	}
	labels := dig(dep, "spec", "template", "metadata", "labels")
	if !equalYAML(dig(dep, "spec", "selector", "matchLabels"), labels) || !equalYAML(dig(svc, "spec", "selector"), labels) ||
		!equalYAML(dig(pdb, "spec", "selector", "matchLabels"), labels) || !equalYAML(dig(np, "spec", "podSelector", "matchLabels"), labels) {
		t.Errorf("the Deployment's selector, the Service's, the PodDisruptionBudget's and the NetworkPolicy's are not the pods' labels %v", labels)
	}
	// The NetworkPolicy: the API from anywhere, the metrics (no
	// authentication) only from the namespace monitoring.
	for _, rule := range asList(dig(np, "spec", "ingress")) {
		for _, p := range asList(dig(rule, "ports")) {
			from := asList(dig(rule, "from"))
			if dig(p, "port") == "metrics" && (len(from) != 1 || dig(from[0], "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name") != "monitoring") {
				t.Errorf("NetworkPolicy: the metrics port is open to %v, want the namespace monitoring alone", dig(rule, "from"))
			}
		}
	}
	if fmt.Sprint(dig(np, "spec", "policyTypes")) != "[Ingress]" || len(asList(dig(np, "spec", "ingress"))) != 2 {
		t.Errorf("NetworkPolicy: %v, want two ingress rules (the API, the metrics)", dig(np, "spec"))
	}
	if dig(pdb, "spec", "maxUnavailable") != 1 {
		t.Errorf("PodDisruptionBudget: maxUnavailable %v, want 1", dig(pdb, "spec", "maxUnavailable"))
	}
	pod, _ := dig(dep, "spec", "template", "spec").(map[string]any)
	if dig(pod, "securityContext", "runAsNonRoot") != true || dig(pod, "securityContext", "runAsUser") != nonrootUID ||
		dig(pod, "securityContext", "runAsGroup") != nonrootUID || dig(pod, "securityContext", "fsGroup") != nonrootUID {
		t.Errorf("pod securityContext %v, want non-root as the image's user %d", dig(pod, "securityContext"), nonrootUID)
	}
	containers, _ := pod["containers"].([]any)
	if len(containers) != 1 {
		t.Fatalf("Deployment: %d containers, want the broker alone", len(containers))
	}
	c, _ := containers[0].(map[string]any)
	df := readDockerfile(t)
	cfg := brokerConfig(t, "Deployment", strs(c["args"]), nil, df.env)
	checkBrokerNATS(t, "Deployment", cfg, []string{"nats-0.nats-headless", "nats-1.nats-headless", "nats-2.nats-headless"}, 4222)
	if dig(c, "securityContext", "readOnlyRootFilesystem") != true || dig(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Errorf("container securityContext %v, want a read-only root and no privilege escalation", dig(c, "securityContext"))
	}
	// Ports: http is the broker's, as the Dockerfile exposes it.
	ports := map[string]int{}
	for _, p := range asList(c["ports"]) {
		n, _ := dig(p, "containerPort").(int)
		ports[fmt.Sprint(dig(p, "name"))] = n
	}
	_, httpPort, _ := net.SplitHostPort(cfg.HTTPAddr)
	_, metricsPort, _ := net.SplitHostPort(cfg.MetricsListen)
	if strconv.Itoa(ports["http"]) != httpPort || httpPort != df.httpPort || strconv.Itoa(ports["metrics"]) != metricsPort {
		t.Errorf("container ports %v; the broker listens on %s (the Dockerfile exposes %s) and serves metrics on %s", ports, httpPort, df.httpPort, metricsPort)
	}
	for _, p := range asList(dig(svc, "spec", "ports")) {
		if _, ok := ports[fmt.Sprint(dig(p, "targetPort"))]; !ok {
			t.Errorf("Service port %v targets no container port", p)
		}
	}
	// Probes: routes the broker serves; readiness and startup on /readyz
	// (no restart while the index catches up), liveness on /healthz.
	for probe, want := range map[string]string{"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := dig(c, probe, "httpGet", "path"); got != want || dig(c, probe, "httpGet", "port") != "http" || dig(c, probe, "httpGet", "scheme") != "HTTPS" {
			t.Errorf("%s: %v on port %v (%v), want %s on http over HTTPS", probe, got, dig(c, probe, "httpGet", "port"), dig(c, probe, "httpGet", "scheme"), want)
		}
	}
	period, _ := dig(c, "startupProbe", "periodSeconds").(int)
	failures, _ := dig(c, "startupProbe", "failureThreshold").(int)
	if period*failures < 1800 {
		t.Errorf("startupProbe allows %d s, want at least half an hour for an index rebuild", period*failures)
	}
	// Files: the data dir, the keys (copied by the init container from the
	// Secret to where the broker reads them) and the NATS certificates.
	mounts := map[string]string{}
	for _, m := range asList(c["volumeMounts"]) {
		mounts[fmt.Sprint(dig(m, "mountPath"))] = fmt.Sprint(dig(m, "name"))
	}
	volumes := map[string]map[string]any{}
	for _, v := range asList(pod["volumes"]) {
		m, _ := v.(map[string]any)
		volumes[fmt.Sprint(dig(v, "name"))] = m
	}
	if v := volumes[mounts[cfg.DataDir]]; v == nil || v["emptyDir"] == nil {
		t.Errorf("the data dir %s is not an emptyDir volume", cfg.DataDir)
	}
	tlsVol := volumes[mounts["/etc/eps/nats"]]
	for _, f := range []string{cfg.NATSTLSCA, cfg.NATSTLSCert, cfg.NATSTLSKey} {
		if path.Dir(f) != "/etc/eps/nats" || tlsVol == nil || dig(tlsVol, "secret", "secretName") != "epsbroker-nats-tls" {
			t.Errorf("%s is not in the Secret epsbroker-nats-tls", f)
		}
	}
	// The API is HTTPS: the certificate and key from the Secret epsbroker-https.
	httpsVol := volumes[mounts["/etc/eps/https"]]
	if cfg.TLSCert == "" || path.Dir(cfg.TLSCert) != "/etc/eps/https" || path.Dir(cfg.TLSKey) != "/etc/eps/https" ||
		httpsVol == nil || dig(httpsVol, "secret", "secretName") != "epsbroker-https" {
		t.Errorf("the broker does not serve HTTPS with the Secret epsbroker-https: --tls-cert %q --tls-key %q", cfg.TLSCert, cfg.TLSKey)
	}
	inits, _ := pod["initContainers"].([]any)
	if len(inits) != 1 {
		t.Fatalf("%d init containers, want the one that copies the keys", len(inits))
	}
	script := strings.Join(strs(dig(inits[0], "command")), " ")
	initMounts := map[string]string{}
	for _, m := range asList(dig(inits[0], "volumeMounts")) {
		initMounts[fmt.Sprint(dig(m, "mountPath"))] = fmt.Sprint(dig(m, "name"))
	}
	if initMounts[cfg.DataDir] != mounts[cfg.DataDir] || dig(volumes[initMounts["/secrets"]], "secret", "secretName") != "epsbroker-keys" {
		t.Errorf("the init container does not copy from the Secret epsbroker-keys to the data dir: mounts %v", initMounts)
	}
	for _, f := range []string{auth.IssuerKeyPath(cfg.DataDir), cfg.PseudonymKey} {
		if !strings.Contains(script, "/secrets/"+path.Base(f)) || !strings.Contains(script, "mkdir -p "+path.Dir(f)) ||
			!strings.Contains(script, "umask 077") || !regexp.MustCompile(`chmod 0600 [^&]*`+regexp.QuoteMeta(f)).MatchString(script) {
			t.Errorf("the init container does not put %s where the broker reads it (%s), mode 0600: %s", path.Base(f), f, script)
		}
	}
	if dig(inits[0], "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("the init container's root is writable")
	}

	// The secrets script's kubernetes files: the chart's pods present a
	// certificate naming the hosts the broker dials; the broker's client
	// certificate and keys are what it reads.
	secrets := makeSecrets(t, "kubernetes")
	checkServerCert(t, "make-secrets.sh kubernetes", filepath.Join(secrets, "nats-server.pem"), filepath.Join(secrets, "ca.pem"), hostsOf(cfg.NATSURL))
	checkClientCert(t, "make-secrets.sh kubernetes", filepath.Join(secrets, "broker", "epsbroker.pem"),
		filepath.Join(secrets, "broker", "epsbroker-key.pem"), filepath.Join(secrets, "ca.pem"), "CN=epsbroker")
	checkKeyFiles(t, "make-secrets.sh kubernetes", filepath.Join(secrets, "broker", "issuer-ed25519.pem"),
		filepath.Join(secrets, "broker", "pseudonym-hmac.pem"), false)
	// Its HTTPS certificate names the Service in the namespace eps (the
	// default), and the broker loads it with its key.
	if _, err := tls.LoadX509KeyPair(filepath.Join(secrets, "broker", "https.pem"), filepath.Join(secrets, "broker", "https-key.pem")); err != nil {
		t.Errorf("make-secrets.sh kubernetes: broker/https.pem: %v", err)
	} else {
		block, _ := pem.Decode(mustRead(t, filepath.Join(secrets, "broker", "https.pem")))
		leaf, err := x509.ParseCertificate(block.Bytes)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(mustRead(t, filepath.Join(secrets, "ca.pem")))
		for _, name := range []string{"epsbroker", "epsbroker.eps.svc", "epsbroker.eps.svc.cluster.local"} {
			if err == nil {
				_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSName: name})
			}
			if err != nil {
				t.Errorf("make-secrets.sh kubernetes: broker/https.pem for %s: %v", name, err)
			}
		}
	}
}

// hostsOf lists the hosts of comma-separated URLs, sorted.
func hostsOf(urls string) []string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if pu, err := url.Parse(u); err == nil {
			out = append(out, pu.Hostname())
		}
	}
	slices.Sort(out)
	return out
}

// checkServerCert: the certificate is the CA's, for servers and for clients
// (a node dials its routes with it), and its DNS names are exactly names.
func checkServerCert(t *testing.T, where, certFile, caFile string, names []string) {
	t.Helper()
	block, _ := pem.Decode(mustRead(t, certFile))
	if block == nil {
		t.Fatalf("%s: %s holds no certificate", where, certFile)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, caFile))
	for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
			t.Errorf("%s: %s: %v", where, certFile, err)
		}
	}
	got := slices.Clone(leaf.DNSNames)
	slices.Sort(got)
	if !slices.Equal(got, names) {
		t.Errorf("%s: %s names %v, want %v", where, certFile, got, names)
	}
}

// TestDeployProbesServed checks that every probe path the deployment files
// name is a route the broker serves, 200 on a running broker.
func TestDeployProbesServed(t *testing.T) {
	b := startBroker(t, "")
	b.settle()
	for p := range probePaths {
		if res := b.do("GET", p, "", nil); res.Status != 200 {
			t.Errorf("GET %s: %d %s", p, res.Status, res.Body)
		}
	}
}

// TestDeployReferences checks what names the deployment files: every
// deploy/ path in the README and in the files' own header comments exists;
// every epsbroker command in the README's shell blocks is made of the
// broker's settings, with values it accepts; and a `helm install` of the
// NATS chart pins the version the values file was written for.
func TestDeployReferences(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{"README.md": string(readme)}
	err = filepath.WalkDir(deployDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		texts[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pathRe := regexp.MustCompile(`\bdeploy/[A-Za-z0-9_./-]*[A-Za-z0-9_]`)
	for where, text := range texts {
		for _, p := range pathRe.FindAllString(text, -1) {
			if _, err := os.Stat(filepath.Join("..", p)); err != nil {
				t.Errorf("%s names %s, which does not exist", where, p)
			}
		}
	}

	// The chart version.
	pin := regexp.MustCompile(`helm install nats nats/nats --version (\S+)`)
	m := pin.FindStringSubmatch(texts[filepath.Join(deployDir, "kubernetes", "nats-values.yaml")])
	if m == nil {
		t.Fatal("nats-values.yaml: no pinned `helm install nats nats/nats --version` in its header")
	}
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.Contains(line, "helm install") && strings.Contains(line, "nats/nats") {
			if got := pin.FindStringSubmatch(line); got == nil || got[1] != m[1] {
				t.Errorf("README.md: %q does not pin chart version %s (nats-values.yaml)", strings.TrimSpace(line), m[1])
			}
		}
	}

	// epsbroker command lines in the README's fenced blocks.
	blocks := strings.Split(strings.ReplaceAll(string(readme), "\\\n", " "), "```")
	df := readDockerfile(t)
	for i := 1; i < len(blocks); i += 2 {
		for _, line := range strings.Split(blocks[i], "\n") {
			args, ok := epsbrokerArgs(line)
			if !ok {
				continue
			}
			brokerConfig(t, "README.md: "+strings.TrimSpace(line), args, nil, df.env)
		}
	}

	// Alert rules (`expr:` lines of its fenced blocks) name only metrics the
	// broker has.
	metrics := brokerMetricNames(t)
	for i := 1; i < len(blocks); i += 2 {
		for _, line := range strings.Split(blocks[i], "\n") {
			expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:")
			if !ok {
				continue
			}
			for _, m := range regexp.MustCompile(`\beps_[a-z_]+`).FindAllString(expr, -1) {
				base := m
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suf); ok && metrics[b] {
						base = b
					}
				}
				if !metrics[base] {
					t.Errorf("README.md: alert %q names %s, which the broker does not export", strings.TrimSpace(expr), m)
				}
			}
		}
	}

	// The Kubernetes secrets the README makes are those the manifests and
	// the chart's values use, with the keys they read, from files the
	// secrets script makes.
	made := map[string]map[string]string{} // secret -> key -> file
	for i := 1; i < len(blocks); i += 2 {
		for _, line := range strings.Split(blocks[i], "\n") {
			if name, files, ok := kubectlSecret(t, line); ok {
				made[name] = files
			}
		}
	}
	if len(made) > 0 {
		checkKubernetesSecrets(t, made)
	}
}

// brokerMetricNames are the names of the broker's Prometheus metrics, as its
// code registers them (Name: "eps_..." and prometheus.NewDesc("eps_...")).
func brokerMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(eps_[a-z_]+)"`)
	names := map[string]bool{}
	err := filepath.WalkDir(filepath.Join("..", "broker"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		for _, m := range re.FindAllSubmatch(mustRead(t, p), -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !names["eps_http_requests_total"] || !names["eps_consumer_pending"] {
		t.Fatalf("found only the metrics %v in broker/", keys(names))
	}
	return names
}

// kubectlSecret reads a `kubectl ... create secret generic|tls NAME ...`
// line: the secret's name and its keys' files.
func kubectlSecret(t *testing.T, line string) (string, map[string]string, bool) {
	if !strings.Contains(line, "kubectl") || !strings.Contains(line, "create secret") {
		return "", nil, false
	}
	w := shellWords(t, strings.TrimSpace(line))
	i := slices.Index(w, "secret")
	if i < 0 || i+2 >= len(w) {
		t.Errorf("README.md: cannot read %q", line)
		return "", nil, false
	}
	files := map[string]string{}
	for _, a := range w[i+3:] {
		switch k, v, _ := strings.Cut(a, "="); k {
		case "--from-file":
			key, file, ok := strings.Cut(v, "=")
			if !ok {
				key, file = path.Base(v), v
			}
			files[key] = file
		case "--cert":
			files["tls.crt"] = v
		case "--key":
			files["tls.key"] = v
		default:
			t.Errorf("README.md: %q: option %s not understood", line, a)
		}
	}
	return w[i+2], files, true
}

// checkKubernetesSecrets compares the secrets the README makes with what
// deploy/kubernetes reads: each secret by name, each key by the file name
// its reader opens, each file one of the secrets script's (kubernetes).
func checkKubernetesSecrets(t *testing.T, made map[string]map[string]string) {
	t.Helper()
	values := readYAMLDoc(t, filepath.Join(deployDir, "kubernetes", "nats-values.yaml"))
	want := map[string][]string{
		fmt.Sprint(dig(values, "tlsCA", "secretName")):                    {"ca.crt"},
		fmt.Sprint(dig(values, "config", "nats", "tls", "secretName")):    {"tls.crt", "tls.key"},
		fmt.Sprint(dig(values, "config", "cluster", "tls", "secretName")): {"tls.crt", "tls.key"},
	}
	docs := readYAMLDocs(t, filepath.Join(deployDir, "kubernetes", "epsbroker.yaml"))
	var cfg config.Config
	var pod map[string]any
	for _, d := range docs {
		if d["kind"] == "Deployment" {
			pod, _ = dig(d, "spec", "template", "spec").(map[string]any)
			c := asList(pod["containers"])
			cfg = brokerConfig(t, "Deployment", strs(dig(c[0], "args")), nil, nil)
		}
	}
	for _, v := range asList(pod["volumes"]) {
		name := dig(v, "secret", "secretName")
		switch dig(v, "name") {
		case "nats-tls":
			want[fmt.Sprint(name)] = []string{path.Base(cfg.NATSTLSCA), path.Base(cfg.NATSTLSCert), path.Base(cfg.NATSTLSKey)}
		case "keys":
			want[fmt.Sprint(name)] = []string{path.Base(auth.IssuerKeyPath(cfg.DataDir)), path.Base(cfg.PseudonymKey)}
		case "https":
			want[fmt.Sprint(name)] = []string{path.Base(cfg.TLSCert), path.Base(cfg.TLSKey)}
		}
	}
	if !slices.Equal(keys(made), keys(want)) {
		t.Errorf("README.md makes the secrets %v; deploy/kubernetes uses %v", keys(made), keys(want))
	}
	secrets := makeSecrets(t, "kubernetes")
	for name, files := range made {
		got := keys(files)
		w := slices.Clone(want[name])
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("README.md: secret %s has the keys %v, deploy/kubernetes reads %v", name, got, w)
		}
		for key, file := range files {
			rel, ok := strings.CutPrefix(file, "eps-secrets/")
			if _, err := os.Stat(filepath.Join(secrets, rel)); !ok || err != nil {
				t.Errorf("README.md: secret %s key %s from %s: not a file of deploy/make-secrets.sh kubernetes eps-secrets", name, key, file)
			}
		}
	}
}

// epsbrokerArgs returns the arguments of an epsbroker command line
// (`epsbroker ...`, `./epsbroker ...`, `go run ./cmd/epsbroker ...`), without
// a trailing comment or `&`.
func epsbrokerArgs(line string) ([]string, bool) {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSuffix(strings.TrimSpace(line), "&")
	f := strings.Fields(line)
	for len(f) > 0 && strings.Contains(f[0], "=") && !strings.HasPrefix(f[0], "-") { // VAR=value prefixes
		f = f[1:]
	}
	switch {
	case len(f) >= 3 && f[0] == "go" && f[1] == "run" && f[2] == "./cmd/epsbroker":
		return f[3:], true
	case len(f) >= 1 && (f[0] == "epsbroker" || f[0] == "./epsbroker" || f[0] == "/usr/local/bin/epsbroker"):
		return f[1:], true
	}
	return nil, false
}

// composeFile is the part of the compose specification deploy/compose uses;
// reading it with known fields only makes a misspelt key an error.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Extensions map[string]any `yaml:",inline"` // x-* fragments for anchors
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command         []string            `yaml:"command"`
	Environment     map[string]string   `yaml:"environment"`
	Volumes         []string            `yaml:"volumes"`
	Secrets         []composeSecretRef  `yaml:"secrets"`
	Ports           []string            `yaml:"ports"`
	Restart         string              `yaml:"restart"`
	StopSignal      string              `yaml:"stop_signal"`
	StopGracePeriod string              `yaml:"stop_grace_period"`
	DependsOn       any                 `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck `yaml:"healthcheck"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

// composeSecretRef is a service's secret, short (its name) or long syntax.
type composeSecretRef struct {
	Source string `yaml:"source"`
	Target string `yaml:"target"`
}

func (r *composeSecretRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		r.Source = n.Value
		return nil
	}
	type plain composeSecretRef
	return n.Decode((*plain)(r))
}

// containerPath is where compose mounts the secret.
func (r composeSecretRef) containerPath() string {
	switch {
	case r.Target == "":
		return "/run/secrets/" + r.Source
	case path.IsAbs(r.Target):
		return r.Target
	}
	return "/run/secrets/" + r.Target
}

func readCompose(t *testing.T, name string) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "compose", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cf composeFile
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for k := range cf.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("%s: unknown top-level key %s", name, k)
		}
	}
	return cf
}

// servicesWith lists the services for which keep is true, sorted.
func servicesWith(cf composeFile, keep func(composeService) bool) []string {
	var out []string
	for name, s := range cf.Services {
		if keep(s) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// mountedFrom is the source of the service's volume mounted at target ("" if none).
func mountedFrom(t *testing.T, s composeService, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// composeNATSOptions parses nats.conf as node runs it: its NATS_SERVER_NAME,
// and its certificates where compose mounts them (here: copies of the
// secrets' files in a temp dir, the paths rewritten to it).
func composeNATSOptions(t *testing.T, cf composeFile, node string, secretFile map[string]string) *server.Options {
	t.Helper()
	s := cf.Services[node]
	conf, err := os.ReadFile(filepath.Join(deployDir, "compose", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const certDir = "/etc/nats/certs/"
	for _, r := range s.Secrets {
		target := r.containerPath()
		name, ok := strings.CutPrefix(target, certDir)
		if !ok {
			t.Errorf("%s: secret %s mounted at %s, outside %s", node, r.Source, target, certDir)
			continue
		}
		b, err := os.ReadFile(secretFile[r.Source])
		if err != nil {
			t.Fatalf("%s: secret %s: %v", node, r.Source, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.ReplaceAll(string(conf), certDir, dir+"/")
	if strings.Count(text, dir+"/") != strings.Count(string(conf), certDir) {
		t.Fatal("nats.conf: could not place the certificates")
	}
	p := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_SERVER_NAME", s.Environment["NATS_SERVER_NAME"])
	opts, err := server.ProcessConfigFile(p)
	if err != nil {
		t.Fatalf("nats.conf (as %s runs it): %v", node, err)
	}
	return opts
}

// checkNATSOptions checks a node's parsed configuration: its name; JetStream
// fsyncing every write; messages as large as the broker's; lame duck mode;
// client TLS mapping certificates to users; routes authenticated by
// certificate; the broker, inspect and ops users in their accounts.
func checkNATSOptions(t *testing.T, opts *server.Options, node string) {
	t.Helper()
	if opts.ServerName != node {
		t.Errorf("nats.conf: server_name %q, want %q", opts.ServerName, node)
	}
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("nats.conf: JetStream %v, sync always %v: want JetStream fsyncing every write (sync_interval: always)", opts.JetStream, opts.SyncAlways)
	}
	if int64(opts.MaxPayload) < minMaxPayload() {
		t.Errorf("nats.conf: max_payload %d, want at least %d (two times --max-body)", opts.MaxPayload, minMaxPayload())
	}
	if opts.LameDuckDuration <= 0 || opts.LameDuckGracePeriod <= 0 {
		t.Errorf("nats.conf: lame duck %v after %v", opts.LameDuckDuration, opts.LameDuckGracePeriod)
	}
	if opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert || !opts.TLSMap {
		t.Error("nats.conf: clients are not TLS with verified certificates mapped to users (verify_and_map)")
	}
	if opts.Cluster.Name != "eps" || opts.Cluster.Port == 0 || opts.Cluster.TLSConfig == nil || !opts.Cluster.TLSCheckKnownURLs ||
		opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("nats.conf: cluster %q on port %d: routes are not authenticated by certificates naming a known route", opts.Cluster.Name, opts.Cluster.Port)
	}
	if !opts.Cluster.NoAdvertise {
		t.Error("nats.conf: the cluster advertises node addresses to clients; they get the URLs they were given")
	}
	if opts.SystemAccount != "SYS" {
		t.Errorf("nats.conf: system account %q, want SYS", opts.SystemAccount)
	}
	byName := map[string]*server.User{}
	for _, u := range opts.Users {
		byName[u.Username] = u
	}
	want := map[string]string{"CN=epsbroker": "EPS", "CN=eps-inspect": "EPS", "CN=eps-ops": "SYS"}
	if len(byName) != len(want) {
		t.Errorf("nats.conf: users %v, want %v", keys(byName), keys(want))
	}
	for name, acc := range want {
		u := byName[name]
		if u == nil || u.Account == nil || u.Account.Name != acc || u.Password != "" {
			t.Errorf("nats.conf: user %s is not a certificate user of account %s", name, acc)
		}
	}
	if u := byName["CN=epsbroker"]; u != nil && u.Permissions != nil {
		t.Error("nats.conf: the broker's user is limited: it makes and changes its streams, buckets and consumers")
	}
	if u := byName["CN=eps-inspect"]; u != nil && u.Permissions != nil && u.Permissions.Publish != nil && u.Permissions.Subscribe != nil {
		checkInspectPermissions(t, "nats.conf", u.Permissions.Publish.Allow, u.Permissions.Subscribe.Allow)
	} else {
		t.Error("nats.conf: the inspect user has no permissions: it would have every right")
	}
}

// checkInspectPermissions: the inspect user may publish what the embedded
// server's inspect role may, and subscribe to its own inbox prefix only.
func checkInspectPermissions(t *testing.T, where string, pub, sub []string) {
	t.Helper()
	want := slices.Clone(broker.NATSUser{Role: broker.NATSRoleInspect}.Permissions().Publish.Allow)
	got := slices.Clone(pub)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: inspect may publish %v, want the embedded inspect role's %v", where, got, want)
	}
	if !slices.Equal(sub, []string{"_INBOX_inspect.>"}) {
		t.Errorf("%s: inspect may subscribe to %v, want its own inbox prefix _INBOX_inspect.> alone", where, sub)
	}
}

// minMaxPayload is the least max_payload a server must allow: the embedded
// server's, two times the default --max-body.
func minMaxPayload() int64 { return max(config.Default().MaxBodyBytes*2, 1<<20) }

// brokerSettings are the names of the broker's flags, from its --help.
var brokerSettings = sync.OnceValues(func() (map[string]bool, error) {
	var out bytes.Buffer
	if _, err := config.Load([]string{"--help"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) {
		return nil, fmt.Errorf("epsbroker --help: %v", err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1) {
		names[m[1]] = true
	}
	if len(names) < 20 {
		return nil, fmt.Errorf("epsbroker --help lists %d settings", len(names))
	}
	return names, nil
})

// brokerConfig checks a broker's command line and environment (plus the
// image's own environment): every flag and EPS_* variable is a setting, and
// the broker accepts them together (config.Load and its validation).
func brokerConfig(t *testing.T, where string, args []string, env, imageEnv map[string]string) config.Config {
	t.Helper()
	names, err := brokerSettings()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
		if !names[name] && name != "config" {
			t.Errorf("%s: --%s is not an epsbroker setting", where, name)
		}
	}
	all := map[string]string{}
	for k, v := range imageEnv {
		all[k] = v
	}
	for k, v := range env {
		all[k] = v
	}
	for k := range all {
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "EPS_"), "_", "-"))
		if strings.HasPrefix(k, "EPS_") && !names[name] && k != "EPS_CONFIG" {
			t.Errorf("%s: %s is not an epsbroker setting", where, k)
		}
	}
	cfg, err := config.Load(args, func(k string) string { return all[k] }, io.Discard)
	if err != nil {
		t.Errorf("%s: epsbroker refuses %q: %v", where, args, err)
	}
	return cfg
}

// checkBrokerNATS: the broker reaches every NATS node on its client port,
// over TLS with a client certificate, and asks for 3 replicas.
func checkBrokerNATS(t *testing.T, where string, cfg config.Config, nodes []string, port int) {
	t.Helper()
	var hosts []string
	for _, u := range strings.Split(cfg.NATSURL, ",") {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "tls" || pu.Port() != strconv.Itoa(port) || pu.User != nil {
			t.Errorf("%s: NATS URL %q: want tls://host:%d, no password", where, u, port)
			continue
		}
		hosts = append(hosts, pu.Hostname())
	}
	slices.Sort(hosts)
	if !slices.Equal(hosts, nodes) {
		t.Errorf("%s: --nats-url names %v, want every node %v", where, hosts, nodes)
	}
	if cfg.Replicas != 3 {
		t.Errorf("%s: --replicas %d, want 3", where, cfg.Replicas)
	}
	if cfg.NATSTLSCA == "" || cfg.NATSTLSCert == "" || cfg.NATSTLSKey == "" {
		t.Errorf("%s: NATS TLS CA %q, certificate %q, key %q: want all three", where, cfg.NATSTLSCA, cfg.NATSTLSCert, cfg.NATSTLSKey)
	}
	if cfg.MetricsListen == "" {
		t.Errorf("%s: /metrics on the API listener: want --metrics-listen", where)
	}
}

// checkKeyFiles: the script's key files are what the broker reads: an
// Ed25519 issuer key and a 32-byte pseudonym key, each mode 0600 (the
// broker refuses any other), owned by the image's user when made as root
// for a container that mounts them (owned).
func checkKeyFiles(t *testing.T, where, issuer, pseudonym string, owned bool) {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{issuer: auth.IssuerKeyPath(dir), pseudonym: broker.PseudonymKeyPath(dir)} {
		fi, err := os.Stat(src)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %s has mode %04o, want 0600", where, src, fi.Mode().Perm())
		}
		if owned && os.Geteuid() == 0 {
			if uid := fileUID(fi); uid != nonrootUID {
				t.Errorf("%s: %s belongs to uid %d, want the image's user %d", where, src, uid, nonrootUID)
			}
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := auth.LoadOrCreateIssuerKey(dir); err != nil {
		t.Errorf("%s: the issuer key: %v", where, err)
	}
	if _, err := broker.LoadOrCreatePseudonymKey(dir, ""); err != nil {
		t.Errorf("%s: the pseudonym key: %v", where, err)
	}
	if b, _ := os.ReadFile(auth.IssuerKeyPath(dir)); !bytes.Equal(b, mustRead(t, issuer)) {
		t.Errorf("%s: the broker made a new issuer key instead of reading the script's", where)
	}
}

// checkClientCert: the certificate and key make a pair, the CA verifies it
// for client authentication, and its subject is the user nats.conf names.
func checkClientCert(t *testing.T, where, certFile, keyFile, caFile, subject string) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, caFile))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("%s: the NATS client certificate: %v", where, err)
	}
	if leaf.Subject.String() != subject || len(leaf.DNSNames) != 0 {
		t.Errorf("%s: client certificate subject %q, DNS names %v: want %q and none (it must not pass as a route)",
			where, leaf.Subject, leaf.DNSNames, subject)
	}
}

// makeSecrets runs deploy/make-secrets.sh in a temp dir and returns the
// directory it made.
func makeSecrets(t *testing.T, mode string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: deploy/make-secrets.sh needs it (Debian: apt-get install openssl)")
	}
	dir := filepath.Join(t.TempDir(), mode)
	out, err := exec.Command("sh", filepath.Join(deployDir, "make-secrets.sh"), mode, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/make-secrets.sh %s: %v\n%s", mode, err, out)
	}
	return dir
}

// dockerfile is what the deployment files must agree with in the run stage
// of ../Dockerfile.
type dockerfile struct {
	env      map[string]string // ENV
	httpPort string            // the port of EPS_HTTP_ADDR, which EXPOSE names
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(b), -1)
	run := stages[len(stages)-1]
	df := dockerfile{env: map[string]string{}}
	if !strings.HasPrefix(run, "gcr.io/distroless/static-debian12:nonroot") ||
		!regexp.MustCompile(`(?m)^USER nonroot:nonroot$`).MatchString(run) {
		t.Errorf("Dockerfile: the run stage is not distroless as nonroot (uid %d), which the deployment files assume", nonrootUID)
	}
	for _, m := range regexp.MustCompile(`(?m)^ENV (.+)$`).FindAllStringSubmatch(run, -1) {
		for _, kv := range strings.Fields(m[1]) {
			k, v, _ := strings.Cut(kv, "=")
			df.env[k] = v
		}
	}
	_, df.httpPort, _ = net.SplitHostPort(df.env["EPS_HTTP_ADDR"])
	if !regexp.MustCompile(`(?m)^EXPOSE ` + df.httpPort + `$`).MatchString(run) {
		t.Errorf("Dockerfile: EXPOSE is not the port of EPS_HTTP_ADDR %s", df.env["EPS_HTTP_ADDR"])
	}
	if !regexp.MustCompile(`(?m)^VOLUME \["` + df.env["EPS_DATA_DIR"] + `"\]$`).MatchString(run) {
		t.Errorf("Dockerfile: VOLUME is not EPS_DATA_DIR %s", df.env["EPS_DATA_DIR"])
	}
	return df
}

// natsServerVersion is the nats-server release the broker is built with,
// as go.mod requires it, without its v.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\S+)$`).FindSubmatch(mustRead(t, filepath.Join("..", "go.mod")))
	if m == nil {
		t.Fatal("go.mod requires no github.com/nats-io/nats-server/v2")
	}
	return string(m[1])
}

func readYAMLDoc(t *testing.T, p string) map[string]any {
	t.Helper()
	docs := readYAMLDocs(t, p)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", p, len(docs))
	}
	return docs[0]
}

func readYAMLDocs(t *testing.T, p string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		docs = append(docs, d)
	}
}

// dig follows keys through nested YAML maps (nil when one is missing).
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func equalYAML(a, b any) bool { return a != nil && fmt.Sprint(a) == fmt.Sprint(b) }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// fileUID is the owner of a file (-1 where the system does not say).
func fileUID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
