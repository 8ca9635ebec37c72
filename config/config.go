// Package config holds the broker's settings and reads them from flags,
// EPS_* environment variables and an optional JSON config file, in that order
// of precedence. It is a leaf package: it imports nothing of the project.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SyncAlways is the JetStream sync policy that fsyncs every write before it
// is acknowledged.
const SyncAlways = "always"

// Config is every setting of epsbroker.
type Config struct {
	HTTPAddr         string
	DataDir          string
	NATSURL          string
	LogLevel         string
	JetStreamSync    string // "always" or a Go duration (the file store's sync interval)
	Replicas         int
	MaxBodyBytes     int64
	HTTPReadTimeout  time.Duration
	HTTPWriteTimeout time.Duration
	HTTPIdleTimeout  time.Duration
	ShutdownTimeout  time.Duration
	ShutdownDelay    time.Duration
	TLSCert          string
	TLSKey           string
	NATSListen       string
	NATSCreds        string
	NATSTLSCA        string
	NATSTLSCert      string
	NATSTLSKey       string
	JWTIssuer        string
	JWTAudience      string
	JWKS             string
	IdempotencyTTL   time.Duration
	SchedulerEvery   time.Duration
	SchedulerLease   time.Duration // the scheduler lease's TTL (broker/lease.go)
	ConfigFile       string

	// Bearer tokens and the external issuer's keys (issue 11).
	TokenMaxLifetime time.Duration // longest exp - iat (or exp - now) accepted
	JWKSRefresh      time.Duration // how often the --jwks keys are reloaded
	JWKSCA           string        // PEM CA certificates for the --jwks https URL; empty: system roots
	TokenCacheSize   int           // verified tokens remembered (issue 13); 0: none

	// HTTP limits (issue 11): connections, rates, tracker sessions and the
	// metrics listener.
	HTTPMaxConns    int     // connections served at once; 0: no cap
	RateLimit       float64 // requests per second per user (token sub and ods); 0: none
	RateBurst       int
	RateLimitIP     float64 // requests per second per client address without valid credentials; 0: none
	RateBurstIP     int
	SessionsPerUser int    // live tracker page sessions per user
	MetricsListen   string // host:port serving /metrics alone; empty: /metrics on the API listener

	// Privacy of identifiers (issue 11): the key of the NHS number
	// pseudonyms in NATS subjects and keys.
	PseudonymKey string

	// Storage limits (issue 11, storelimits): the most bytes each stream or
	// bucket keeps, 0 for an automatic share of the JetStream storage
	// (broker.StorageShares) and -1 for no limit; StorageAlert is the used fraction
	// at which eps_storage_alert fires and /readyz warns.
	EventsMaxBytes      int64
	AuditMaxBytes       int64
	RequestsMaxBytes    int64
	SessionsMaxBytes    int64
	NominationsMaxBytes int64
	StorageAlert        float64

	// Notifications at least once (issue 12, notify): the most bytes the
	// notification stream EPS_NOTIFY keeps (0 automatic, -1 none) and how
	// long it keeps a notification for a dispensing or prescribing system's
	// durable consumer to fetch.
	NotifyMaxBytes int64
	NotifyMaxAge   time.Duration
	// Dead letter (issue 12, runner): the most bytes EPS_DEAD keeps, as the
	// limits above.
	DeadMaxBytes int64

	// The debug listener (issue 13): host:port serving net/http/pprof
	// alone (empty: none), and whether an address off the loopback
	// interface is allowed for it.
	DebugListen    string
	DebugListenAny bool

	// The event log's group commit (issue 13): the most writes that wait
	// to be committed; past it a write is refused at once (503 with
	// Retry-After), nothing written.
	CommitMaxPending int

	// The embedded server as a cluster node (issue 14, cluster). Setting
	// NATSClusterListen makes it one; its routes must authenticate (mutual
	// TLS, a shared secret, or both).
	NATSClusterListen     string        // host:port of the route listener
	NATSRoutes            string        // comma-separated route URLs of the other nodes
	NATSClusterName       string        // the cluster's name (all nodes alike)
	NATSServerName        string        // this node's name: unique and stable (JetStream's raft identity)
	JetStreamDomain       string        // the embedded server's JetStream domain (empty: none)
	NATSClusterTLSCert    string        // PEM certificate the node presents on routes
	NATSClusterTLSKey     string        // its private key
	NATSClusterTLSCA      string        // PEM CA that route peers' certificates must chain to
	NATSClusterSecretFile string        // file of the shared route secret (the routes' password)
	NATSClusterWait       time.Duration // how long start-up waits for JetStream on a cluster

	// Quorum (issue 14, fixquorum): the route address other nodes are told
	// to dial, and how long the broker's streams may be without a leader
	// before /readyz says so (and, on an external cluster, the broker
	// reconnects to another server).
	NATSClusterAdvertise string        // host:port (empty: the route listener's)
	NATSQuorumGrace      time.Duration // see broker.DefaultQuorumGrace
}

// Clustered reports whether the embedded server is a cluster node.
func (c Config) Clustered() bool { return c.NATSURL == "" && c.NATSClusterListen != "" }

type setting struct {
	name  string // flag name; env is EPS_ + upper snake; file key is the flag name
	usage string
	def   string
	set   func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

func dur(p func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 30s, 5m): %q", v)
		}
		*p(c) = d
		return nil
	}
}

var settings = []setting{
	{"http-addr", "address the HTTP API listens on", "127.0.0.1:8080", str(func(c *Config) *string { return &c.HTTPAddr })},
	{"data-dir", "directory for JetStream storage (embedded server) and the issuer key", "./data", str(func(c *Config) *string { return &c.DataDir })},
	{"nats-url", "external NATS server or cluster URLs, comma-separated; empty starts an embedded server", "", str(func(c *Config) *string { return &c.NATSURL })},
	{"log-level", "log level: debug, info, warn, error", "info", str(func(c *Config) *string { return &c.LogLevel })},
	{"jetstream-sync", "embedded JetStream file-store sync policy: 'always' (fsync every write before it is acknowledged) or an interval such as 2m (NATS's default; acknowledged writes can be lost on power failure)", SyncAlways, str(func(c *Config) *string { return &c.JetStreamSync })},
	{"commit-max-pending", "most event log writes (orders, dispensing messages, every prescription change) that wait to be committed, 1 to 1000000; past it a write is refused at once, nothing written, answered 503 with Retry-After", "1024", func(c *Config, v string) error {
		if err := whole(1, func(c *Config) *int { return &c.CommitMaxPending })(c, v); err != nil || c.CommitMaxPending > 1000000 {
			return fmt.Errorf("want a whole number from 1 to 1000000: %q", v)
		}
		return nil
	}},
	{"replicas", "JetStream replicas for the broker's streams and buckets, 1 to 5; 'auto' is 3 when the embedded server is a cluster node or the external server is in a cluster, else 1", "auto", func(c *Config, v string) error {
		if v == "auto" {
			c.Replicas = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("want 'auto' or a whole number from 1 to 5: %q", v)
		}
		c.Replicas = n
		return nil
	}},
	{"max-body", "largest request body in bytes; larger answers 413", "1048576", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("not a whole number of bytes: %q", v)
		}
		c.MaxBodyBytes = n
		return nil
	}},
	{"http-read-timeout", "HTTP read timeout (whole request)", "15s", dur(func(c *Config) *time.Duration { return &c.HTTPReadTimeout })},
	{"http-write-timeout", "HTTP write timeout (whole response)", "30s", dur(func(c *Config) *time.Duration { return &c.HTTPWriteTimeout })},
	{"http-idle-timeout", "HTTP keep-alive idle timeout", "120s", dur(func(c *Config) *time.Duration { return &c.HTTPIdleTimeout })},
	{"shutdown-timeout", "how long SIGTERM/SIGINT waits for in-flight requests to finish", "25s", dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{"shutdown-delay", "on SIGTERM/SIGINT, how long to keep serving with /readyz answering 503 (and every answer closing its connection) before the drain, so load balancers stop sending first; above their health check's interval times its fall count; 0 stops at once", "5s", dur(func(c *Config) *time.Duration { return &c.ShutdownDelay })},
	{"tls-cert", "PEM certificate for HTTPS (with --tls-key); empty serves plain HTTP", "", str(func(c *Config) *string { return &c.TLSCert })},
	{"tls-key", "PEM private key for HTTPS", "", str(func(c *Config) *string { return &c.TLSKey })},
	{"nats-listen", "embedded server only: host:port to accept NATS clients on (e.g. 127.0.0.1:4222 for the nats CLI; port 0 picks a free one); only the nkey users made with epsctl nats-user add get in; empty accepts in-process connections only", "", str(func(c *Config) *string { return &c.NATSListen })},
	{"nats-creds", "external NATS: credentials file (JWT and nkey seed)", "", str(func(c *Config) *string { return &c.NATSCreds })},
	{"nats-tls-ca", "NATS TLS: CA certificate to verify the server (external) ", "", str(func(c *Config) *string { return &c.NATSTLSCA })},
	{"nats-tls-cert", "NATS TLS: certificate (client certificate for an external server; server certificate for the embedded listener)", "", str(func(c *Config) *string { return &c.NATSTLSCert })},
	{"nats-tls-key", "NATS TLS: private key for --nats-tls-cert", "", str(func(c *Config) *string { return &c.NATSTLSKey })},
	{"jwt-issuer", "expected iss claim of bearer tokens", "epsbroker", str(func(c *Config) *string { return &c.JWTIssuer })},
	{"jwt-audience", "expected aud claim of bearer tokens", "eps-broker", str(func(c *Config) *string { return &c.JWTAudience })},
	{"jwks", "external issuer keys to trust as well: a JWKS file path or https:// URL", "", str(func(c *Config) *string { return &c.JWKS })},
	{"idempotency-ttl", "how long an X-Request-ID and its answer are remembered", "24h", dur(func(c *Config) *time.Duration { return &c.IdempotencyTTL })},
	{"scheduler-interval", "how often due transitions (post-dated becoming ready, expiry, no-claim) are applied", "1m", dur(func(c *Config) *time.Duration { return &c.SchedulerEvery })},
	{"scheduler-lease", "how long the scheduler lease lasts unrenewed, 2s to 10m (whole seconds): of the instances sharing NATS only its holder runs the scheduler; another takes over within about this time after the holder dies, within a third of it after the holder stops", "15s",
		durIn(2*time.Second, 10*time.Minute, func(c *Config) *time.Duration { return &c.SchedulerLease })},

	// Bearer tokens and the external issuer's keys (issue 11).
	{"token-max-lifetime", "longest lifetime of a bearer token (exp - iat, or exp - now without iat) accepted, 1m to 168h; longer tokens answer 401", "12h",
		durIn(time.Minute, 168*time.Hour, func(c *Config) *time.Duration { return &c.TokenMaxLifetime })},
	{"jwks-refresh", "how often the --jwks keys are reloaded, 1s to 15m (a key the issuer removed is distrusted within this time)", "5m",
		durIn(time.Second, 15*time.Minute, func(c *Config) *time.Duration { return &c.JWKSRefresh })},
	{"jwks-ca", "PEM file of the CA certificates that verify the --jwks https:// server, instead of the system roots", "", str(func(c *Config) *string { return &c.JWKSCA })},
	{"token-cache-size", "verified bearer tokens remembered (by SHA-256), each until its exp or until its signing key is no longer trusted, so a token seen again is not verified in full; 0 to 1000000 (0: none)", "10000", func(c *Config, v string) error {
		if err := whole(0, func(c *Config) *int { return &c.TokenCacheSize })(c, v); err != nil || c.TokenCacheSize > 1000000 {
			return fmt.Errorf("want a whole number from 0 to 1000000: %q", v)
		}
		return nil
	}},

	// HTTP limits (issue 11).
	{"http-max-connections", "most HTTP connections served at once; as many again are answered 503 with Retry-After and closed, and more are closed unanswered (0: no cap)", "1024", whole(0, func(c *Config) *int { return &c.HTTPMaxConns })},
	{"rate-limit", "requests per second that one user (a token's sub and ods) may make; more answer 429 with Retry-After (0: no limit)", "5000", rate(func(c *Config) *float64 { return &c.RateLimit })},
	{"rate-burst", "most requests one user may make in a burst, before --rate-limit paces it", "10000", whole(1, func(c *Config) *int { return &c.RateBurst })},
	{"rate-limit-ip", "requests per second from one client address (IPv6: one /64) without valid credentials; more answer 429 with Retry-After (0: no limit)", "100", rate(func(c *Config) *float64 { return &c.RateLimitIP })},
	{"rate-burst-ip", "most requests one client address may make in a burst, before --rate-limit-ip paces it", "200", whole(1, func(c *Config) *int { return &c.RateBurstIP })},
	{"tracker-sessions-per-user", "live tracker page sessions one user may hold; a new sign-in ends the least recently used beyond it", "5", whole(1, func(c *Config) *int { return &c.SessionsPerUser })},
	{"metrics-listen", "host:port to serve GET /metrics on, alone; the API listener then answers 404 there (empty: /metrics on the API listener)", "", func(c *Config, v string) error {
		if v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port: %q", v)
			}
		}
		c.MetricsListen = v
		return nil
	}},

	// Privacy of identifiers (issue 11).
	{"pseudonym-key", "file of the secret key whose hashes stand for NHS numbers in NATS subjects and keys (created on first start); empty is DATA_DIR/keys/pseudonym-hmac.pem; brokers sharing an external NATS server must share one file", "", str(func(c *Config) *string { return &c.PseudonymKey })},
}

// durIn is dur limited to [lo, hi].
func durIn(lo, hi time.Duration, p func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 30s, 5m): %q", v)
		}
		if d < lo || d > hi {
			return fmt.Errorf("%v is out of range: want %v to %v", d, lo, hi)
		}
		*p(c) = d
		return nil
	}
}

// whole sets a whole number of at least least.
func whole(least int, p func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < least {
			return fmt.Errorf("want a whole number of at least %d: %q", least, v)
		}
		*p(c) = n
		return nil
	}
}

// rate sets a rate per second: a number of at least 0.
func rate(p func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("want a number of requests per second, 0 or more: %q", v)
		}
		*p(c) = f
		return nil
	}
}

// The embedded server as a cluster node (issue 14, cluster).
func init() { settings = append(settings, clusterSettings...) }

var clusterSettings = []setting{
	{"nats-cluster-listen", "embedded server only: host:port of the route listener that makes it a node of a NATS cluster (port 0 picks a free one); routes must authenticate: set --nats-cluster-tls-* or --nats-cluster-secret-file (or both); empty: a single node", "", hostPort(func(c *Config) *string { return &c.NATSClusterListen })},
	{"nats-routes", "embedded cluster node: route URLs of the cluster's nodes, comma-separated (nats-route://host:port or nats://host:port; this node's own may be listed, it is skipped)", "", str(func(c *Config) *string { return &c.NATSRoutes })},
	{"nats-cluster-name", "embedded cluster node: the cluster's name, the same on every node", "eps", str(func(c *Config) *string { return &c.NATSClusterName })},
	{"nats-server-name", "the embedded server's name; required on a cluster node: unique in the cluster and kept across restarts (JetStream's raft identity: a node that comes back under another name is a new peer, and the old one counts against the quorum until removed); empty on a single node is epsbroker-embedded", "", str(func(c *Config) *string { return &c.NATSServerName })},
	{"jetstream-domain", "embedded server only: its JetStream domain (for leaf node topologies; empty: none)", "", str(func(c *Config) *string { return &c.JetStreamDomain })},
	{"nats-cluster-tls-cert", "embedded cluster node: PEM certificate presented on routes (mutual TLS, with --nats-cluster-tls-key and --nats-cluster-tls-ca)", "", str(func(c *Config) *string { return &c.NATSClusterTLSCert })},
	{"nats-cluster-tls-key", "embedded cluster node: PEM private key of --nats-cluster-tls-cert", "", str(func(c *Config) *string { return &c.NATSClusterTLSKey })},
	{"nats-cluster-tls-ca", "embedded cluster node: PEM CA that every route peer's certificate must chain to (peers are verified both ways)", "", str(func(c *Config) *string { return &c.NATSClusterTLSCA })},
	{"nats-cluster-secret-file", "embedded cluster node: file holding the cluster's shared route secret (the same file content on every node; used as the routes' password, never logged)", "", str(func(c *Config) *string { return &c.NATSClusterSecretFile })},
	{"nats-cluster-wait", "on a cluster (embedded or external): how long start-up waits for JetStream to answer (a meta leader elected, the streams' peers up) before giving up", "2m", dur(func(c *Config) *time.Duration { return &c.NATSClusterWait })},
	{"nats-cluster-advertise", "embedded cluster node: host:port of its route listener as the other nodes must dial it (behind NAT, a container port mapping or a proxy); empty: the --nats-cluster-listen address", "", hostPort(func(c *Config) *string { return &c.NATSClusterAdvertise })},
	{"nats-quorum-grace", "how long the broker's streams may be without a leader (or JetStream unanswering) before /readyz answers 503 (a leader election takes up to about 10 s; requests meanwhile answer 503 with Retry-After); on an external cluster the broker then also reconnects to another server", "15s", dur(func(c *Config) *time.Duration { return &c.NATSQuorumGrace })},
}

// hostPort sets a host:port or empty.
func hostPort(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port: %q", v)
			}
		}
		*p(c) = v
		return nil
	}
}

// validateCluster checks the cluster settings together.
func (c Config) validateCluster() []error {
	var errs []error
	if c.NATSClusterWait <= 0 {
		errs = append(errs, errors.New("nats-cluster-wait must be positive"))
	}
	if c.NATSQuorumGrace <= 0 {
		errs = append(errs, errors.New("nats-quorum-grace must be positive"))
	}
	if c.NATSClusterAdvertise != "" && (c.NATSURL != "" || c.NATSClusterListen == "") {
		errs = append(errs, errors.New("nats-cluster-advertise is for an embedded cluster node: it needs nats-cluster-listen (and no nats-url)"))
	} else if c.NATSClusterAdvertise != "" {
		if _, port, _ := net.SplitHostPort(c.NATSClusterAdvertise); port == "0" {
			errs = append(errs, fmt.Errorf("nats-cluster-advertise %q: want the port the other nodes dial, not 0", c.NATSClusterAdvertise))
		}
	}
	if strings.ContainsAny(c.NATSServerName, " \t\r\n") {
		errs = append(errs, fmt.Errorf("nats-server-name %q: no spaces", c.NATSServerName))
	}
	if c.NATSURL != "" {
		for name, v := range map[string]string{"nats-cluster-listen": c.NATSClusterListen, "nats-routes": c.NATSRoutes,
			"nats-server-name": c.NATSServerName, "jetstream-domain": c.JetStreamDomain, "nats-cluster-tls-cert": c.NATSClusterTLSCert,
			"nats-cluster-tls-key": c.NATSClusterTLSKey, "nats-cluster-tls-ca": c.NATSClusterTLSCA, "nats-cluster-secret-file": c.NATSClusterSecretFile} {
			if v != "" {
				errs = append(errs, fmt.Errorf("%s is for the embedded server; it cannot be used with nats-url (the external cluster is configured on its servers)", name))
			}
		}
		return errs
	}
	if c.NATSClusterListen == "" {
		for name, v := range map[string]string{"nats-routes": c.NATSRoutes, "nats-cluster-tls-cert": c.NATSClusterTLSCert,
			"nats-cluster-tls-key": c.NATSClusterTLSKey, "nats-cluster-tls-ca": c.NATSClusterTLSCA, "nats-cluster-secret-file": c.NATSClusterSecretFile} {
			if v != "" {
				errs = append(errs, fmt.Errorf("%s needs nats-cluster-listen (the embedded server is a single node without it)", name))
			}
		}
		return errs
	}
	if c.NATSServerName == "" {
		errs = append(errs, errors.New("nats-server-name is required on a cluster node: a name unique in the cluster and kept across restarts (JetStream's raft identity)"))
	}
	if c.NATSClusterName == "" || strings.ContainsAny(c.NATSClusterName, " \t\r\n") {
		errs = append(errs, fmt.Errorf("nats-cluster-name %q: want a name without spaces", c.NATSClusterName))
	}
	tlsSet := c.NATSClusterTLSCert != "" || c.NATSClusterTLSKey != "" || c.NATSClusterTLSCA != ""
	if tlsSet && (c.NATSClusterTLSCert == "" || c.NATSClusterTLSKey == "" || c.NATSClusterTLSCA == "") {
		errs = append(errs, errors.New("nats-cluster-tls-cert, nats-cluster-tls-key and nats-cluster-tls-ca go together (mutual TLS: the CA verifies the peers)"))
	}
	if !tlsSet && c.NATSClusterSecretFile == "" {
		errs = append(errs, errors.New("nats-cluster-listen: the cluster's routes must authenticate: set nats-cluster-tls-cert, nats-cluster-tls-key and nats-cluster-tls-ca (mutual TLS), or nats-cluster-secret-file (a shared secret), or both"))
	}
	for _, r := range strings.Split(c.NATSRoutes, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "nats-route" && u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" || u.Port() == "" {
			errs = append(errs, fmt.Errorf("nats-routes: %q: want nats-route://host:port or nats://host:port", r))
		} else if u.User != nil {
			errs = append(errs, fmt.Errorf("nats-routes: %s: no credentials in route URLs (use nats-cluster-secret-file)", u.Redacted()))
		}
	}
	return errs
}

// Storage limits (issue 11, storelimits).
func init() { settings = append(settings, storageSettings...) }

// MinStreamBytes is the smallest limit a stream may be given.
const MinStreamBytes = 64 << 10

var storageSettings = []setting{
	{"events-max-bytes", "most bytes the event log EPS_EVENTS keeps (e.g. 200GiB): when full, new prescriptions and updates answer 507 and nothing stored is dropped; 'auto' is 50% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.EventsMaxBytes })},
	{"audit-max-bytes", "most bytes the audit trail EPS_AUDIT keeps (full: tracker reads answer 507); 'auto' is 15% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.AuditMaxBytes })},
	{"requests-max-bytes", "most bytes the X-Request-ID bucket EPS_REQUESTS keeps; 'auto' is 10% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.RequestsMaxBytes })},
	{"sessions-max-bytes", "most bytes the tracker session bucket EPS_SESSIONS keeps; 'auto' is 1% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.SessionsMaxBytes })},
	{"nominations-max-bytes", "most bytes the nominations bucket EPS_NOMINATIONS keeps (every revision); 'auto' is 10% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.NominationsMaxBytes })},
	{"dead-max-bytes", "most bytes the dead letter stream EPS_DEAD keeps (messages a consumer could not apply; when full, the next is refused and its message retried); 'auto' is 1% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.DeadMaxBytes })},
	{"storage-alert", "used fraction of a stream's limit at which the eps_storage_alert metric fires and /readyz warns", "0.8", func(c *Config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0 && f < 1) {
			return fmt.Errorf("want a fraction between 0 and 1 (e.g. 0.8): %q", v)
		}
		c.StorageAlert = f
		return nil
	}},
}

// Notifications at least once (issue 12, notify).
func init() { settings = append(settings, notifySettings...) }

var notifySettings = []setting{
	{"notify-max-bytes", "most bytes the notification stream EPS_NOTIFY keeps; when full the oldest notifications go first; 'auto' is 3% of the JetStream storage, 'none' no limit", "auto", size(func(c *Config) *int64 { return &c.NotifyMaxBytes })},
	{"notify-max-age", "how long EPS_NOTIFY keeps a notification for a dispensing or prescribing system's durable consumer (e.g. 7d, 36h); at least 1m", "7d", func(c *Config, v string) error {
		d, err := ParseAge(v)
		if err != nil {
			return err
		}
		c.NotifyMaxAge = d
		return nil
	}},
}

// The debug listener (issue 13).
func init() { settings = append(settings, debugSettings...) }

var debugSettings = []setting{
	{"debug-listen", "host:port to serve Go's runtime profiles (net/http/pprof, /debug/pprof/) on, alone and without authentication; a heap profile holds pieces of memory, patient data among them, so only a loopback address is accepted unless --debug-listen-any is set (empty: no debug listener)", "", func(c *Config, v string) error {
		if v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return fmt.Errorf("want host:port: %q", v)
			}
		}
		c.DebugListen = v
		return nil
	}},
	{"debug-listen-any", "allow --debug-listen on an address that is not loopback (true or false); whoever reaches it can read the broker's memory", "false", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false: %q", v)
		}
		c.DebugListenAny = b
		return nil
	}},
}

// ParseAge reads a duration that may also be given in whole days ("7d").
// It must be at least a minute.
func ParseAge(v string) (time.Duration, error) {
	s := strings.TrimSpace(v)
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 36500 {
			return 0, fmt.Errorf("want a duration such as 7d, 36h or 90m: %q", v)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("want a duration such as 7d, 36h or 90m: %q", v)
		}
	}
	if d < time.Minute {
		return 0, fmt.Errorf("%q is shorter than a minute", v)
	}
	return d, nil
}

// size parses a byte size: a whole number of bytes with an optional unit
// (KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024),
// 'auto' (0) or 'none' (-1).
func size(p func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*p(c) = n
		return nil
	}
}

// ParseSize reads a size setting: 'auto' is 0, 'none' is -1, otherwise a
// whole number of bytes of at least MinStreamBytes, with an optional unit.
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	switch strings.ToLower(s) {
	case "auto":
		return 0, nil
	case "none":
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("want a size such as 500MiB or 20GB, 'auto' or 'none': %q", v)
	}
	if n*mult < MinStreamBytes {
		return 0, fmt.Errorf("%q is smaller than the least a stream may be given (64KiB)", v)
	}
	return n * mult, nil
}

// EnvName is the environment variable of a setting: EPS_ and the flag name in
// upper snake case.
func EnvName(flagName string) string {
	return "EPS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Default returns the configuration with every default applied.
func Default() Config {
	var c Config
	for _, s := range settings {
		if err := s.set(&c, s.def); err != nil {
			panic("config default of " + s.name + ": " + err.Error())
		}
	}
	return c
}

// Load reads the settings: flags first, then EPS_* environment variables
// (getenv), then the JSON config file named by --config or EPS_CONFIG, then
// the defaults. It returns flag.ErrHelp when --help was asked for, after
// writing the usage to out.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("epsbroker", flag.ContinueOnError)
	fs.SetOutput(out)
	vals := make(map[string]*string, len(settings))
	for _, s := range settings {
		vals[s.name] = fs.String(s.name, s.def, fmt.Sprintf("%s (env %s)", s.usage, EnvName(s.name)))
	}
	configFile := fs.String("config", "", "optional JSON config file whose keys are these flag names (env EPS_CONFIG)")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: epsbroker [flags]\n\nSettings come from flags, then EPS_* environment variables, then the --config file, then the defaults.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	file := *configFile
	if !explicit["config"] {
		file = getenv("EPS_CONFIG")
	}
	fileVals := map[string]string{}
	if file != "" {
		var err error
		if fileVals, err = readFile(file); err != nil {
			return Config{}, err
		}
	}

	c := Config{ConfigFile: file}
	var errs []error
	for _, s := range settings {
		v, from := s.def, "default"
		if fv, ok := fileVals[s.name]; ok {
			v, from = fv, "config file "+file
		}
		if ev := getenv(EnvName(s.name)); ev != "" {
			v, from = ev, EnvName(s.name)
		}
		if explicit[s.name] {
			v, from = *vals[s.name], "--"+s.name
		}
		if err := s.set(&c, v); err != nil {
			errs = append(errs, fmt.Errorf("%s (from %s): %w", s.name, from, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: not a JSON object: %w", path, err)
	}
	known := map[string]bool{}
	for _, s := range settings {
		known[s.name] = true
	}
	out := make(map[string]string, len(raw))
	var unknown []string
	for k, v := range raw {
		if !known[k] {
			unknown = append(unknown, k)
			continue
		}
		switch v := v.(type) {
		case string:
			out[k] = v
		case float64:
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(v)
		default:
			return nil, fmt.Errorf("config file %s: %s must be a string or a number", path, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("config file %s: unknown settings %s", path, strings.Join(unknown, ", "))
	}
	return out, nil
}

// Validate checks the settings together and says what is wrong with each.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("http-addr %q: want host:port", c.HTTPAddr))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir must not be empty"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.JetStreamSync != SyncAlways {
		d, err := time.ParseDuration(c.JetStreamSync)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("jetstream-sync %q: want 'always' or a positive interval such as 2m", c.JetStreamSync))
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: want 'auto' or 1 to 5", c.Replicas))
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 16<<20 {
		errs = append(errs, fmt.Errorf("max-body %d: want 1024 bytes to 16 MiB (a message and its record must fit in one NATS message)", c.MaxBodyBytes))
	}
	if c.NATSURL == "" && c.NATSClusterListen == "" && c.Replicas > 1 {
		errs = append(errs, fmt.Errorf("replicas %d: the embedded server is a single node; use replicas 1 (or auto), --nats-cluster-listen to make it a cluster node, or --nats-url with a cluster", c.Replicas))
	}
	errs = append(errs, c.validateCluster()...)
	for name, d := range map[string]time.Duration{"http-read-timeout": c.HTTPReadTimeout, "http-write-timeout": c.HTTPWriteTimeout,
		"http-idle-timeout": c.HTTPIdleTimeout, "shutdown-timeout": c.ShutdownTimeout, "idempotency-ttl": c.IdempotencyTTL,
		"scheduler-interval": c.SchedulerEvery} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay > 5*time.Minute {
		errs = append(errs, fmt.Errorf("shutdown-delay %s: want 0 (off) to 5m", c.ShutdownDelay))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key go together"))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, errors.New("nats-tls-cert and nats-tls-key go together"))
	}
	if c.NATSURL != "" && c.NATSListen != "" {
		errs = append(errs, errors.New("nats-listen is for the embedded server; it cannot be used with nats-url"))
	}
	if c.NATSListen != "" {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			errs = append(errs, fmt.Errorf("nats-listen %q: want host:port", c.NATSListen))
		}
	}
	if c.JWTIssuer == "" || c.JWTAudience == "" {
		errs = append(errs, errors.New("jwt-issuer and jwt-audience must not be empty"))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// SyncInterval returns the embedded file store's sync interval and whether
// every write is synced (the safe default).
func (c Config) SyncInterval() (time.Duration, bool) {
	if c.JetStreamSync == SyncAlways {
		return 0, true
	}
	d, _ := time.ParseDuration(c.JetStreamSync)
	return d, false
}
