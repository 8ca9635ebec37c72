package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/config"
)

// NATS is the broker's connection to NATS: to its own embedded server, or to
// an external server or cluster.
type NATS struct {
	Conn     *nats.Conn
	Embedded *server.Server // nil when external
}

// ConnectNATS starts the embedded NATS server with JetStream on file storage
// under cfg.DataDir (when cfg.NATSURL is empty) and connects to it, or
// connects to the external servers of cfg.NATSURL.
func ConnectNATS(ctx context.Context, cfg config.Config, log *zap.Logger) (*NATS, error) {
	opts := []nats.Option{
		nats.Name("epsbroker"),
		// Reconnect for ever, backing off (ReconnectDelay): a cluster that
		// lost a node, or a server restarted, is waited for, not given up on.
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(ReconnectDelay),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed by the broker
				log.Warn("NATS disconnected; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", zap.String("server", c.ConnectedUrlRedacted()), zap.String("cluster", c.ConnectedClusterName()))
		}),
		nats.DiscoveredServersHandler(func(c *nats.Conn) {
			log.Info("NATS servers discovered", zap.Strings("servers", redactList(c.DiscoveredServers())))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Error("NATS asynchronous error", zap.String("subscription", subj), zap.Error(err))
		}),
	}
	if cfg.NATSURL != "" {
		if cfg.NATSCreds != "" {
			opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
		}
		if cfg.NATSTLSCA != "" {
			opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
		}
		if cfg.NATSTLSCert != "" {
			opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
		}
		opts = append(opts, linkLiveness()...)
		nc, err := nats.Connect(cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(false))...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS %s: %w", redactURLs(cfg.NATSURL), err)
		}
		log.Info("connected to external NATS", zap.String("server", nc.ConnectedUrlRedacted()),
			zap.String("cluster", nc.ConnectedClusterName()), zap.Strings("known_servers", redactList(nc.Servers())))
		return &NATS{Conn: nc}, nil
	}

	kp, nk, users, err := embeddedAuth(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	srv, err := startEmbedded(cfg, log, nk, users)
	if err != nil {
		return nil, err
	}
	// The broker's connection stays on its own server (in-process), also
	// on a cluster node: the other nodes' client URLs are not for it.
	nc, err := nats.Connect(srv.ClientURL(), append(opts, nats.InProcessServer(srv), nats.IgnoreDiscoveredServers(),
		nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(brokerInbox))...)
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("connect to the embedded NATS server: %w", err)
	}
	return &NATS{Conn: nc, Embedded: srv}, nil
}

// How soon the broker gives up on a link to an external NATS server that
// stopped carrying traffic without closing (packets dropped, a peer gone
// without a reset): nats.go's defaults notice it only after a minute or
// more, and meanwhile every request of the broker waits (see linkLiveness).
const (
	// LinkFlusherTimeout bounds each write of the connection to the
	// socket. nats.go's flusher writes while holding the connection's
	// lock, so a write blocked on full socket buffers holds up every
	// publish. A write blocks only once the kernel's send buffer (and the
	// peer's receive window) is full: a live link drains that in well
	// under a second at data-centre speeds (one 32 KiB buffer, or a 2 MiB
	// message at 100 Mbit/s in 0.2 s), so 3 s trips only a link that moved
	// nothing.
	LinkFlusherTimeout = 3 * time.Second
	// LinkPingInterval and LinkMaxPingsOut: a PING every 5 s and the link
	// declared stale when a third is due with two unanswered, i.e. no
	// PONG for 10 s after a PING (10-15 s after traffic stopped). A server
	// answers PING in its client read loop, ahead of any JetStream work,
	// so a merely busy server or slow link (up to 10 s round trip) is not
	// mistaken for a dead one. The defaults are 2 min and 2.
	LinkPingInterval = 5 * time.Second
	LinkMaxPingsOut  = 2
)

// linkLiveness are the options that notice a dead link to an external
// server and reconnect to another (or the same, once it answers):
// a flusher write that times out now reconnects (nats.go's default only
// records the error and keeps the dead socket), and pings detect a link
// that carries no traffic at all. Not for the embedded server: the
// broker's connection to it is an in-memory pipe to its own process (its
// routes to other nodes are the server's, with their own pings).
func linkLiveness() []nats.Option {
	return []nats.Option{
		nats.FlusherTimeout(LinkFlusherTimeout),
		nats.ReconnectOnFlusherError(),
		nats.PingInterval(LinkPingInterval),
		nats.MaxPingsOutstanding(LinkMaxPingsOut),
	}
}

// startEmbedded starts the embedded server. Every client authenticates with
// an nkey: the broker's own (in-process only) and the data dir's users
// (on --nats-listen only), each with its permissions; no client is let in
// without one.
func startEmbedded(cfg config.Config, log *zap.Logger, nk []*server.NkeyUser, users []NATSUser) (*server.Server, error) {
	storeDir := filepath.Join(cfg.DataDir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := checkStoreKind(storeDir, cfg.Clustered()); err != nil {
		return nil, err
	}
	name := cfg.NATSServerName
	if name == "" {
		name = "epsbroker-embedded"
	}
	so := &server.Options{
		ServerName:      name,
		JetStream:       true,
		JetStreamDomain: cfg.JetStreamDomain,
		StoreDir:        storeDir,
		NoSigs:          true,
		DontListen:      cfg.NATSListen == "",
		// The broker's own limits: the body limit plus headers.
		MaxPayload: int32(max(cfg.MaxBodyBytes*2, 1<<20)),
		Nkeys:      nk,
	}
	interval, always := cfg.SyncInterval()
	so.SyncAlways = always
	if !always {
		so.SyncInterval = interval
	}
	if cfg.NATSListen != "" {
		host, port, err := net.SplitHostPort(cfg.NATSListen)
		if err != nil {
			return nil, fmt.Errorf("nats-listen: %w", err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("nats-listen port: %w", err)
		}
		so.Host, so.Port = host, p
		if p == 0 {
			so.Port = server.RANDOM_PORT // port 0 picks a free one, as for --http-addr
		}
		if cfg.NATSTLSCert != "" {
			tc, err := serverTLS(cfg.NATSTLSCert, cfg.NATSTLSKey, cfg.NATSTLSCA)
			if err != nil {
				return nil, err
			}
			so.TLSConfig, so.TLS = tc, true
			so.TLSVerify = tc.ClientAuth == tls.RequireAndVerifyClientCert
		}
	} else if cfg.Clustered() {
		// The server starts its routes only once its client listener is up
		// (nats-server does not with DontListen): a cluster node listens
		// on a free loopback port, where only the users file's nkeys get
		// in (the broker's own is for in-process connections only), and
		// does not advertise it to the other nodes' clients.
		so.DontListen = false
		so.Host, so.Port = "127.0.0.1", server.RANDOM_PORT
	} else {
		so.Port = server.RANDOM_PORT // not listened on: DontListen
	}
	if cfg.Clustered() {
		if err := clusterOptions(cfg, so); err != nil {
			return nil, err
		}
		so.Cluster.NoAdvertise = cfg.NATSListen == ""
		// The route address gossiped to the other nodes (they dial it when
		// they learn of this node from a third): behind NAT, a container's
		// port mapping or a proxy it is not the listener's own.
		so.Cluster.Advertise = cfg.NATSClusterAdvertise
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.Named("nats").Sugar()}, false, false, false)
	go srv.Start()
	// Recovering a large store after a crash can take a while.
	if !srv.ReadyForConnections(5 * time.Minute) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS server did not become ready in 5 minutes (see its log lines)")
	}
	log.Info("embedded NATS server started", zap.String("store_dir", storeDir),
		zap.Bool("sync_always", always), zap.Duration("sync_interval", interval),
		zap.String("listen", listenAddr(srv, cfg)), zap.String("server_name", name))
	if cfg.Clustered() {
		log.Info("embedded NATS server is a cluster node", zap.String("cluster", so.Cluster.Name),
			zap.String("route_listen", srv.ClusterAddr().String()), zap.String("route_advertise", cfg.NATSClusterAdvertise), zap.Strings("routes", redactRoutes(so.Routes)),
			zap.Bool("route_tls", so.Cluster.TLSConfig != nil), zap.Bool("route_secret", so.Cluster.Password != ""),
			zap.String("jetstream_domain", cfg.JetStreamDomain))
	}
	if cfg.NATSListen != "" {
		if len(users) == 0 {
			log.Warn("nats-listen: no NATS users yet, so no client can connect; make one with `epsctl nats-user add`",
				zap.String("users_file", NATSUsersPath(cfg.DataDir)))
		} else {
			log.Info("nats-listen: NATS users", zap.String("users", userNames(users)))
		}
	}
	return srv, nil
}

// Clustered reports whether the broker's NATS is a cluster: the embedded
// server is a cluster node, or the external server says it is in one (its
// INFO's cluster name).
func (n *NATS) Clustered(cfg config.Config) bool {
	if n.Embedded != nil {
		return cfg.Clustered()
	}
	return n.Conn.ConnectedClusterName() != ""
}

// Replicas is the number of replicas of the broker's streams and buckets:
// --replicas, or for auto (0) 3 on a cluster and 1 on a single server.
func (n *NATS) Replicas(cfg config.Config) int {
	if cfg.Replicas > 0 {
		return cfg.Replicas
	}
	if n.Clustered(cfg) {
		return 3
	}
	return 1
}

// WaitJetStream waits, up to wait, for JetStream to answer an account
// info request: on a cluster, for a meta leader to be elected once enough
// nodes are up (they start in any order). It logs what it waits for every
// few seconds and returns the last error when the wait runs out.
func (n *NATS) WaitJetStream(ctx context.Context, wait time.Duration, log *zap.Logger) error {
	nc := n.Conn
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(wait)
	lastLog := start
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.AccountInfo(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("JetStream answers", zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
			}
			return nil
		}
		if !IsUnavailable(err) {
			return fmt.Errorf("JetStream: %w", err)
		}
		why := n.noMetaLeader()
		if time.Now().After(deadline) {
			return fmt.Errorf("JetStream did not answer in %v (nats-cluster-wait): %v: %w", wait, why, err)
		}
		if time.Since(lastLog) >= 5*time.Second || attempt == 1 {
			fields := append(why.fields(), zap.Duration("waited", time.Since(start).Round(time.Second)), zap.Duration("wait", wait), zap.Error(err))
			log.Info("waiting for JetStream: "+why.why, fields...)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(ReconnectDelay(attempt), time.Until(deadline)+time.Millisecond)):
		}
	}
}

// The reasons WaitJetStream gives for a JetStream without a meta leader.
// nats-server (raft.go, runAsCandidate; the meta group is started with
// Recovering set, so the relaxed rules of a new stream's group do not
// apply) elects a meta leader when the votes of nodes whose meta log is
// not empty reach the quorum (a majority of the group), or when every node
// of the group has voted. A node whose meta log is empty (a new cluster's,
// or a node whose store is new or was wiped) counts only in the second
// way: empty logs never make a majority among themselves (nats-server's
// "empty log protection", nats-io/nats-server#7038: a node whose disk was
// reset must not help elect a leader that lacks what the cluster
// acknowledged; only the votes of every node prove that no node holds
// more). The first start of a new cluster, where every log is empty, thus
// needs every node of the meta group. A new node sizes its meta group (raft.go, bootstrapRaftNode)
// as the larger of 2, the JetStream servers it already knows, and the URLs
// of its routes (its own URL counted when listed, as the README asks).
const (
	// WaitEveryNode: this node's meta log is empty (a new cluster).
	WaitEveryNode = "no JetStream meta leader: this node's meta log is empty (a new cluster, or a new or wiped store), " +
		"and nats-server elects a leader from empty logs only with the votes of every node of the meta group " +
		"(its size is the number of --nats-routes URLs, this node's own counted): start every node of --nats-routes"
	// WaitMajority: this node has the cluster's meta state.
	WaitMajority = "no JetStream meta leader: a majority of the cluster's nodes that hold its meta state must be up and routed " +
		"(a node with a new or wiped store counts only once every node is up)"
	// WaitAnswer: a meta leader was elected since JetStream last failed
	// to answer.
	WaitAnswer = "a JetStream meta leader is elected; JetStream has not answered yet"
	// WaitCluster: an external server, or an embedded one whose meta
	// group is not set up yet.
	WaitCluster = "no JetStream meta leader: a majority of the cluster's nodes must be up and routed " +
		"(the first start of a new cluster: every node of its routes)"
)

// metaWait is why JetStream has no meta leader, as far as the embedded
// server knows: its meta group's size and quorum, whether its meta log is
// empty, and how many JetStream nodes it knows (itself counted).
type metaWait struct {
	why                         string
	known                       bool // the counts below are the server's
	size, quorum, nodes, routes int
	empty                       bool
}

func (w metaWait) fields() []zap.Field {
	if !w.known {
		return nil
	}
	return []zap.Field{zap.Int("meta_group_size", w.size), zap.Int("quorum", w.quorum),
		zap.Bool("meta_log_empty", w.empty), zap.Int("nodes_known", w.nodes), zap.Int("routes", w.routes)}
}

// String is the reason with the counts, for an error.
func (w metaWait) String() string {
	if !w.known {
		return w.why
	}
	return fmt.Sprintf("%s (meta group of %d nodes, quorum %d; %d known to this node, itself counted)", w.why, w.size, w.quorum, w.nodes)
}

func (n *NATS) noMetaLeader() metaWait {
	if n.Embedded == nil {
		return metaWait{why: WaitCluster}
	}
	if rz := n.Embedded.Raftz(&server.RaftzOptions{GroupFilter: metaGroup}); rz != nil {
		for _, groups := range *rz {
			if g, ok := groups[metaGroup]; ok {
				w := metaWait{why: WaitMajority, known: true, size: g.Size, quorum: g.QuorumNeeded, empty: g.PIndex == 0,
					nodes: len(n.Embedded.ActivePeers()), routes: n.Embedded.NumRoutes()}
				switch {
				case g.Leader != "":
					w.why = WaitAnswer
				case w.empty:
					w.why = WaitEveryNode
				}
				return w
			}
		}
	}
	return metaWait{why: WaitCluster}
}

// metaGroup is the raft group of nats-server's JetStream meta layer.
const metaGroup = "_meta_"

// ErrStoreKind is a data dir whose JetStream store was written by a single
// node and is opened by a cluster node, or the other way round.
var ErrStoreKind = errors.New("JetStream store of another kind")

// checkStoreKind refuses a store written as a single node when the server
// is to be a cluster node, and a cluster node's store when it is to be a
// single node. A cluster node finds a single node's streams in no
// assignment of the cluster's meta layer and deletes them as orphans
// (nats-server's checkForOrphans: every acknowledged prescription gone);
// a single node would serve a replica that may be behind the cluster's
// as if it were the whole truth.
func checkStoreKind(storeDir string, clustered bool) error {
	js := filepath.Join(storeDir, "jetstream")
	_, err := os.Stat(filepath.Join(js, "$SYS", "_js_", "_meta_"))
	clusterStore := err == nil
	streams, _ := filepath.Glob(filepath.Join(js, "*", "streams", "*"))
	switch {
	case clustered && !clusterStore && len(streams) > 0:
		return fmt.Errorf("%w: %s holds the streams of a single-node broker; as a cluster node the server would delete them "+
			"as orphans (they are in no assignment of the cluster). Start the cluster nodes on new data dirs and move the "+
			"streams into the cluster (e.g. nats stream backup on the single node, nats stream restore on the cluster), "+
			"or start this data dir without --nats-cluster-listen", ErrStoreKind, storeDir)
	case !clustered && clusterStore:
		return fmt.Errorf("%w: %s is a cluster node's store (its replicas may be behind the cluster's); start it with its "+
			"cluster settings (--nats-cluster-listen, --nats-routes, the same --nats-server-name)", ErrStoreKind, storeDir)
	}
	return nil
}

// RouteUser is the user name of the routes' shared secret
// (--nats-cluster-secret-file); the secret is the password.
const RouteUser = "eps-route"

// clusterOptions makes so a cluster node: its route listener, its routes
// and their authentication (mutual TLS, the shared secret, or both; config
// refuses neither).
func clusterOptions(cfg config.Config, so *server.Options) error {
	host, port, err := net.SplitHostPort(cfg.NATSClusterListen)
	if err != nil {
		return fmt.Errorf("nats-cluster-listen: %w", err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("nats-cluster-listen port: %w", err)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	so.Cluster = server.ClusterOpts{Name: cfg.NATSClusterName, Host: host, Port: p,
		// Retry the routes for ever (the nodes start in any order) with a
		// growing delay.
		ConnectRetries: -1, ConnectBackoff: true}
	var secret string
	if cfg.NATSClusterSecretFile != "" {
		b, err := os.ReadFile(cfg.NATSClusterSecretFile)
		if err != nil {
			return fmt.Errorf("nats-cluster-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
		if len(secret) < 16 {
			return fmt.Errorf("nats-cluster-secret-file %s: the secret must be at least 16 characters (e.g. openssl rand -hex 32)", cfg.NATSClusterSecretFile)
		}
		so.Cluster.Username, so.Cluster.Password = RouteUser, secret
	}
	if cfg.NATSClusterTLSCert != "" {
		tc, err := serverTLS(cfg.NATSClusterTLSCert, cfg.NATSClusterTLSKey, cfg.NATSClusterTLSCA)
		if err != nil {
			return fmt.Errorf("nats-cluster-tls: %w", err)
		}
		// The same configuration verifies the peers this node dials (the
		// server's certificate) and those that dial it (the client's).
		tc.RootCAs = tc.ClientCAs
		so.Cluster.TLSConfig = tc
		so.Cluster.TLSTimeout = 5
		// A peer is accepted as a route only if its certificate (of the
		// CA) carries a DNS name that is the host of one of --nats-routes:
		// without it any certificate of the CA (a client's, say) would
		// join as a node and read and write every stream. nats-server
		// then accepts an incoming route on its certificate alone and
		// does not check the route secret, which still goes with this
		// node's own dials.
		so.Cluster.TLSCheckKnownURLs = true
	}
	if so.Cluster.Password == "" && so.Cluster.TLSConfig == nil {
		return errors.New("nats-cluster-listen: the cluster's routes must authenticate: set nats-cluster-tls-cert, nats-cluster-tls-key and nats-cluster-tls-ca (mutual TLS), or nats-cluster-secret-file (a shared secret), or both")
	}
	for _, r := range strings.Split(cfg.NATSRoutes, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("nats-routes %q: %w", r, err)
		}
		// A route dials with the URL's user and password: the secret goes
		// there (server.ClusterOpts checks the peers' against it).
		u.Scheme = "nats-route"
		if secret != "" {
			u.User = url.UserPassword(RouteUser, secret)
		}
		so.Routes = append(so.Routes, u)
	}
	return nil
}

// redactRoutes are route URLs without their passwords, for logs.
func redactRoutes(routes []*url.URL) []string {
	out := make([]string, len(routes))
	for i, u := range routes {
		out[i] = u.Redacted()
	}
	return out
}

func redactList(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redactURLs(u)
	}
	return out
}

// ReconnectDelay is the wait before the attempt-th pass over the servers
// after a disconnect: 100 ms doubling to 5 s, each with up to half of it
// added at random, so that many brokers losing the same server do not all
// come back at once.
func ReconnectDelay(attempts int) time.Duration {
	d := 5 * time.Second
	if attempts < 6 {
		d = min(100*time.Millisecond<<max(attempts-1, 0), d)
	}
	return d + rand.N(d/2+1)
}

// listenAddr is the address the embedded server accepts clients on ("" when
// in-process only).
func listenAddr(srv *server.Server, cfg config.Config) string {
	if cfg.NATSListen == "" {
		return ""
	}
	if a, ok := srv.Addr().(*net.TCPAddr); ok {
		return a.String()
	}
	return cfg.NATSListen
}

func serverTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("nats TLS certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("nats TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats TLS CA %s: no certificates", caFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// redactURLs hides credentials in NATS URLs (scheme://user:pass@host or
// user:pass@host) for logs and errors.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			start := 0
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				start = scheme + 3
			}
			parts[i] = p[:start] + "[REDACTED]" + p[at:]
		}
	}
	return strings.Join(parts, ",")
}

// natsLogger sends the embedded server's log to zap: notices at debug (the
// server is chatty on start), warnings and errors as such.
type natsLogger struct{ s *zap.SugaredLogger }

func (l natsLogger) Noticef(format string, v ...any) { l.s.Debugf(format, v...) }
func (l natsLogger) Warnf(format string, v ...any)   { l.s.Warnf(format, v...) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.s.Errorf(format, v...) }
func (l natsLogger) Errorf(format string, v ...any)  { l.s.Errorf(format, v...) }
func (l natsLogger) Debugf(format string, v ...any)  { l.s.Debugf(format, v...) }
func (l natsLogger) Tracef(format string, v ...any)  {}

// lameDuckBound is the longest a cluster node's lame duck stop lasts
// before the server is shut down anyway: its leaders are handed over in
// about a second; clients of --nats-listen still connected are not waited
// for through the server's lame duck duration (minutes).
const lameDuckBound = 5 * time.Second

// Close drains the connection and stops the embedded server, if any, cleanly
// (flushing JetStream to disk). An embedded cluster node first goes into
// lame duck mode: it hands the leadership of the meta layer and of every
// stream and consumer it leads to another node, so that the cluster does
// not wait for an election timeout to take writes again; bounded by
// lameDuckBound.
func (n *NATS) Close() {
	if n.Conn != nil {
		_ = n.Conn.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !n.Conn.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		n.Conn.Close()
	}
	if n.Embedded != nil {
		// A single node does not listen (DontListen), and nats-server's
		// lame duck then does nothing: only a cluster node (which has a
		// route listener, and a client one on loopback) goes through it.
		if n.Embedded.ClusterAddr() != nil {
			done := make(chan struct{})
			go func() {
				n.Embedded.LameDuckShutdown()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(lameDuckBound):
			}
		}
		n.Embedded.Shutdown()
		n.Embedded.WaitForShutdown()
	}
}
