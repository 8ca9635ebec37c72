// Package app assembles the broker: NATS (embedded or external), the
// JetStream store, the intake service, the projections and the HTTP API. The
// epsbroker command runs it; end-to-end tests start it in-process.
package app

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/httpapi"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
)

// App is a running broker.
type App struct {
	cfg      config.Config
	log      *zap.Logger
	NATS     *broker.NATS
	Store    *broker.Store
	Metrics  *broker.Metrics
	notifier *broker.Notifier
	// Tracker keeps the tracker's status index.
	Tracker *broker.TrackerProjector
	// Scheduler applies the time-driven transitions.
	Scheduler *service.Scheduler
	verifier  *auth.Verifier
	// IssuerKey is the broker's own token signing key (from the data dir).
	IssuerKey ed25519.PrivateKey
	server    *http.Server
	listener  net.Listener
	unlock    func()

	// NominationReports keeps the nomination changes for the reports.
	NominationReports *broker.NominationReports

	// Quorum moves the connection off a NATS server that cut off from its
	// cluster's majority (external mode only; nil otherwise); stopQuorum
	// ends it.
	Quorum     *broker.QuorumWatch
	stopQuorum context.CancelFunc

	// HTTP limits: the connection cap's and rate limits' metrics, and the
	// metrics listener (--metrics-listen) with its server.
	limitMetrics    *httpapi.LimitMetrics
	metricsServer   *http.Server
	metricsListener net.Listener

	// The debug listener (--debug-listen): net/http/pprof alone, off by
	// default.
	debugServer   *http.Server
	debugListener net.Listener

	// stopping is set when Serve's context ends: /readyz answers 503 and
	// every answer closes its connection for --shutdown-delay, then the
	// server shuts down.
	stopping atomic.Bool
}

// New starts everything but the HTTP server: NATS, the streams and buckets,
// the projections and the token verifier. Now is the clock (time.Now when nil).
func New(ctx context.Context, cfg config.Config, log *zap.Logger, now func() time.Time) (*App, error) {
	if now == nil {
		now = time.Now
	}
	a := &App{cfg: cfg, log: log, Metrics: broker.NewMetrics()}
	if cfg.DebugListen != "" {
		// Refused before anything starts: pprof serves the process's memory.
		if err := httpapi.CheckDebugAddr(cfg.DebugListen, cfg.DebugListenAny); err != nil {
			return nil, err
		}
	}
	var err error
	ok := false
	defer func() {
		if !ok {
			a.closeBackend()
		}
	}()

	if a.unlock, err = broker.LockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	key, err := auth.LoadOrCreateIssuerKey(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	a.IssuerKey = key
	a.verifier, err = auth.NewVerifier(ctx, auth.VerifierConfig{
		Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience,
		LocalKey: key.Public().(ed25519.PublicKey), JWKS: cfg.JWKS,
		MaxLifetime: cfg.TokenMaxLifetime, JWKSRefresh: cfg.JWKSRefresh, JWKSCAFile: cfg.JWKSCA,
		JWKSRefreshes: a.Metrics.JWKSRefreshes, Logger: log.Named("auth"),
		TokenCacheSize: cfg.TokenCacheSize, TokenCacheEvents: a.Metrics.TokenCache,
	})
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}

	if a.NATS, err = broker.ConnectNATS(ctx, cfg, log); err != nil {
		return nil, err
	}
	// On a cluster (embedded or external) JetStream answers once a meta
	// leader is elected: start-up waits for it, up to --nats-cluster-wait.
	clustered := a.NATS.Clustered(cfg)
	waitUntil := time.Now().Add(cfg.NATSClusterWait)
	if clustered || a.NATS.Embedded == nil {
		if err := a.NATS.WaitJetStream(ctx, cfg.NATSClusterWait, log); err != nil {
			return nil, err
		}
	}
	replicas := a.NATS.Replicas(cfg)
	log.Info("JetStream replicas of the broker's streams and buckets", zap.Int("replicas", replicas),
		zap.Bool("auto", cfg.Replicas == 0), zap.Bool("cluster", clustered))
	// From here on the settings carry the replicas chosen, not auto (0):
	// whatever else makes a stream or bucket makes it alike.
	cfg.Replicas, a.cfg.Replicas = replicas, replicas
	maxMsg := int32(max(cfg.MaxBodyBytes*2, 1<<20))
	if a.NATS.Embedded == nil {
		maxMsg = int32(min(int64(maxMsg), a.NATS.Conn.MaxPayload()))
		if int64(maxMsg) < cfg.MaxBodyBytes+64<<10 {
			log.Warn("the NATS server's max_payload is close to --max-body: the largest orders will be refused with 413",
				zap.Int64("max_payload", a.NATS.Conn.MaxPayload()), zap.Int64("max_body", cfg.MaxBodyBytes))
		}
		if replicas < 3 {
			log.Warn("external NATS with fewer than 3 replicas: durability rests on that server's own sync policy (set jetstream { sync_interval: always })",
				zap.Int("replicas", replicas))
		}
	}
	pseudonyms, err := broker.LoadOrCreatePseudonymKey(cfg.DataDir, cfg.PseudonymKey)
	if err != nil {
		return nil, err
	}
	limits := broker.StorageLimits{Events: cfg.EventsMaxBytes, Audit: cfg.AuditMaxBytes,
		Requests: cfg.RequestsMaxBytes, Sessions: cfg.SessionsMaxBytes, Nominations: cfg.NominationsMaxBytes, Notify: cfg.NotifyMaxBytes, Dead: cfg.DeadMaxBytes, Alert: cfg.StorageAlert}
	if a.NATS.Embedded != nil {
		if jsc := a.NATS.Embedded.JetStreamConfig(); jsc != nil {
			limits.Budget = jsc.MaxStore
		}
	}
	storeCfg := broker.StoreConfig{
		Replicas: replicas, IdempotencyTTL: cfg.IdempotencyTTL, MaxMessage: maxMsg, Pseudonyms: pseudonyms, Limits: limits,
		NotifyMaxAge: cfg.NotifyMaxAge, CommitMaxPending: cfg.CommitMaxPending,
		Logger: log.Named("commit"), QuorumGrace: cfg.NATSQuorumGrace,
	}
	shared := clustered || a.NATS.Embedded == nil
	if a.Store, err = openStore(ctx, a.NATS.Conn, storeCfg, a.Metrics, shared, waitUntil, log); err != nil {
		return nil, err
	}
	if shared {
		// A create or update that timed out during an election has been
		// tried again by openStore; the consumers, the tracker and the
		// lease below start once every stream has a leader.
		if err := untilPlaced(ctx, shared, waitUntil, log, "waiting for a leader of each of the broker's streams", cfg.Replicas, func() error {
			return a.Store.Quorate(ctx)
		}); err != nil {
			return nil, err
		}
	}
	// The consumers below are made as the streams are: tried again while
	// an election leaves a stream or the cluster without a leader (seen: a
	// three-node start under load lost quorum for seconds; the tracker
	// index's consumer timed out and the node stopped with its broker).
	startRetry := func(msg string, open func() error) error {
		return untilPlaced(ctx, shared, waitUntil, log, msg, cfg.Replicas, open)
	}
	if a.NATS.Embedded == nil {
		// An embedded node's broker stays on its own server (in-process):
		// cut off from the majority it stays not ready, having no other.
		a.Quorum = broker.NewQuorumWatch(a.Store, a.NATS.Conn, log.Named("quorum"))
		qctx, cancel := context.WithCancel(context.Background())
		a.stopQuorum = cancel
		go a.Quorum.Run(qctx)
	}
	if a.NATS.Embedded != nil && clustered {
		a.Metrics.RegisterNodeCurrent(a.Store, a.NATS.Embedded.Name())
	}
	if a.NATS.Embedded != nil {
		// The durable notification consumers of the embedded server's
		// dispenser and prescriber users (issue 12, notify).
		users, err := broker.LoadNATSUsers(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		if err := startRetry("waiting for the cluster to create the notification consumers", func() error {
			return broker.EnsureNotifyConsumers(ctx, a.Store, users, log)
		}); err != nil {
			return nil, err
		}
	}
	// The ready queues are kept in memory (the tracker index): the stream
	// that held them before is removed.
	broker.RemoveLegacyQueue(ctx, a.Store, log)
	if err := startRetry("waiting for the cluster to create the notifier's consumer", func() (err error) {
		a.notifier, err = broker.StartNotifier(ctx, a.Store, a.Metrics, log)
		return err
	}); err != nil {
		return nil, err
	}
	if err := startRetry("waiting for the cluster to create the tracker index's consumer", func() (err error) {
		a.Tracker, err = broker.StartTrackerProjector(ctx, a.Store, a.Metrics, log, cfg.DataDir)
		return err
	}); err != nil {
		return nil, err
	}
	if err := startRetry("waiting for the cluster to create the nomination reports' consumer", func() (err error) {
		a.NominationReports, err = broker.StartNominationReports(ctx, a.Store, a.Metrics, log)
		return err
	}); err != nil {
		return nil, err
	}

	lifecycle := service.NewLifecycle(a.Store, a.Tracker, log, now)
	intake := service.NewIntake(a.Store, a.Store, a.Metrics, log, now)
	intake.Lifecycle = lifecycle
	a.Scheduler = service.NewScheduler(lifecycle, a.Store, a.Tracker.Index, log, now)
	// The lease bucket is made as the streams are: tried again while the
	// cluster forms (one timeout must not stop the broker, nor its node).
	leaseRetry := func(open func() error) error {
		return startRetry("waiting for the cluster to create the lease bucket", open)
	}
	if err := broker.SingleActiveScheduler(ctx, a.Scheduler, a.Store, cfg.Replicas, cfg.SchedulerLease, a.Metrics, log.Named("scheduler"), leaseRetry); err != nil {
		return nil, err
	}
	a.Scheduler.Start(cfg.SchedulerEvery)
	a.limitMetrics = httpapi.NewLimitMetrics(a.Metrics.Registry)
	handler := httpapi.NewHandler(httpapi.Deps{
		Intake:           intake,
		Releases:         lifecycle,
		Dispensing:       lifecycle,
		Requests:         a.Store,
		Sessions:         a.Store,
		Audit:            a.Store,
		Tracker:          a.Tracker.Index,
		Records:          a.Store,
		TrackerMustReach: a.Tracker.MustReach,
		Nominations:      a.Store,
		Registry:         broker.NewRegistry(a.Store, now),
		Storage:          a.Store,
		StorageFull:      httpapi.StorageFull{Full: broker.IsStorageFull, Stream: broker.FullStream},
		Unavailable:      broker.IsUnavailable,
		Verifier:         a.verifier,
		Metrics: httpapi.Metrics{Registry: a.Metrics.Registry, Requests: a.Metrics.HTTPRequests,
			Duration: a.Metrics.HTTPDuration, IntakeStage: a.Metrics.IntakeStage},
		Log:     log,
		Ready:   a.Ready,
		MaxBody: cfg.MaxBodyBytes,
		Now:     now,

		NominationReports: a.NominationReports,

		Limits: httpapi.Limits{UserRate: cfg.RateLimit, UserBurst: cfg.RateBurst,
			AddressRate: cfg.RateLimitIP, AddressBurst: cfg.RateBurstIP, SessionsPerUser: cfg.SessionsPerUser},
		LimitMetrics:     a.limitMetrics,
		MetricsElsewhere: cfg.MetricsListen != "",
	})
	a.server = &http.Server{
		Handler:           a.closeWhenStopping(handler),
		ReadTimeout:       cfg.HTTPReadTimeout,
		ReadHeaderTimeout: min(cfg.HTTPReadTimeout, 10*time.Second),
		WriteTimeout:      cfg.HTTPWriteTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
		ConnContext:       httpapi.ConnContext,
	}
	if cfg.MetricsListen != "" {
		a.metricsServer = &http.Server{
			Handler:           httpapi.MetricsHandler(a.Metrics.Registry),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       cfg.HTTPReadTimeout,
			WriteTimeout:      cfg.HTTPWriteTimeout,
			IdleTimeout:       cfg.HTTPIdleTimeout,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          zap.NewStdLog(log.Named("metrics-http")),
		}
	}
	if cfg.DebugListen != "" {
		a.debugServer = &http.Server{
			Handler:           httpapi.DebugHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       cfg.HTTPReadTimeout,
			// No write timeout: a CPU profile or trace answers after the
			// seconds its caller asks for (pprof refuses longer ones than
			// the write timeout), and ends when the caller goes away.
			IdleTimeout:    cfg.HTTPIdleTimeout,
			MaxHeaderBytes: 16 << 10,
			ErrorLog:       zap.NewStdLog(log.Named("debug-http")),
		}
	}
	ok = true
	return a, nil
}

// openStore opens the store; on a cluster or an external server (shared:
// other brokers may be starting too) it tries again, until waitUntil, while
// JetStream cannot place or answer for the streams yet (an R3 stream needs
// three nodes up; a meta leader may change while the nodes start) or
// another broker made a stream between this one's update and create.
func openStore(ctx context.Context, nc *nats.Conn, cfg broker.StoreConfig, m *broker.Metrics, shared bool, waitUntil time.Time, log *zap.Logger) (*broker.Store, error) {
	var st *broker.Store
	err := untilPlaced(ctx, shared, waitUntil, log, "waiting for the cluster to create the broker's streams (each needs as many nodes up as its replicas)", cfg.Replicas, func() (err error) {
		st, err = broker.OpenStore(ctx, nc, cfg, m)
		return err
	})
	return st, err
}

// untilPlaced runs open, and on a shared server tries it again, until
// waitUntil, while it fails for want of JetStream (unavailable, a stream
// without a leader yet, or a stream another broker made meanwhile): the
// start of the streams, the wait for their leaders and the lease bucket
// alike.
func untilPlaced(ctx context.Context, shared bool, waitUntil time.Time, log *zap.Logger, msg string, replicas int, open func() error) error {
	for attempt := 1; ; attempt++ {
		err := open()
		// Brokers starting together race to create each stream: the
		// loser's create finds it made ("name already in use") and its
		// next try updates it.
		retry := broker.IsUnavailable(err) || errors.Is(err, broker.ErrNoLeader) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse)
		if err == nil || !shared || !retry || time.Now().After(waitUntil) {
			return err
		}
		log.Info(msg, zap.Int("replicas", replicas), zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(broker.ReconnectDelay(attempt)*4, time.Until(waitUntil)+time.Millisecond)):
		}
	}
}

// Ready reports whether the broker can serve requests.
func (a *App) Ready(ctx context.Context) error {
	if a.stopping.Load() {
		return errors.New("stopping: this instance is shutting down; send requests to another")
	}
	// A reconnect (the server the broker was on lost) counts against the
	// quorum grace with the streams' leaders (Store.Healthy): the client
	// is on another server within a second or so.
	if st := a.NATS.Conn.Status(); st != nats.CONNECTED && st != nats.RECONNECTING {
		return fmt.Errorf("NATS connection %s", st)
	}
	if err := a.Store.Healthy(ctx); err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}
	if !a.notifier.Running() {
		return errors.New("notifier stopped")
	}
	if !a.Tracker.Running() {
		return errors.New("tracker index stopped")
	}
	// Until the tracker index (and the ready queues it holds) has caught
	// up with the event log as it was at the start, nominated releases and
	// searches answer 503 after waiting for it: the instance is not ready,
	// so that a load balancer sends them to another. Intake and the other
	// endpoints are served meanwhile (readiness only steers traffic).
	if !a.Tracker.CaughtUp() {
		return fmt.Errorf("tracker index and ready queues catching up: event %d of %d",
			a.Tracker.Index.Applied(), a.Tracker.StartTarget())
	}
	return nil
}

// Listen binds the HTTP address (cfg.HTTPAddr; port 0 picks a free one),
// and the metrics address when one is set.
func (a *App) Listen() error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http-addr: %w", err)
	}
	if a.metricsServer != nil {
		if a.metricsListener, err = net.Listen("tcp", a.cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("metrics-listen: %w", err)
		}
	}
	if a.debugServer != nil {
		if err := a.listenDebug(); err != nil {
			ln.Close()
			if a.metricsListener != nil {
				a.metricsListener.Close()
			}
			return err
		}
	}
	// The connection cap counts TCP connections: it goes under TLS.
	ln = httpapi.LimitConnections(ln, a.cfg.HTTPMaxConns, a.limitMetrics)
	if a.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(a.cfg.TLSCert, a.cfg.TLSKey)
		if err != nil {
			ln.Close()
			if a.metricsListener != nil {
				a.metricsListener.Close()
			}
			if a.debugListener != nil {
				a.debugListener.Close()
			}
			return fmt.Errorf("tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	a.listener = ln
	return nil
}

// Addr is the address the HTTP API listens on (after Listen).
func (a *App) Addr() string { return a.listener.Addr().String() }

// MetricsAddr is the address /metrics is served on alone (after Listen),
// or "" when it is served on the API listener.
func (a *App) MetricsAddr() string {
	if a.metricsListener == nil {
		return ""
	}
	return a.metricsListener.Addr().String()
}

// DebugMutexFraction is the mutex profile's sampling while the debug
// listener is up: one contention event in this many is recorded.
const DebugMutexFraction = 100

// listenDebug binds --debug-listen, and checks that a loopback name such as
// localhost did bind the loopback interface.
func (a *App) listenDebug() error {
	ln, err := net.Listen("tcp", a.cfg.DebugListen)
	if err != nil {
		return fmt.Errorf("debug-listen: %w", err)
	}
	if tcp, isTCP := ln.Addr().(*net.TCPAddr); !a.cfg.DebugListenAny && (!isTCP || !tcp.IP.IsLoopback()) {
		ln.Close()
		return fmt.Errorf("debug-listen %q bound %s, not a loopback address; set --debug-listen-any to allow it", a.cfg.DebugListen, ln.Addr())
	}
	a.debugListener = ln
	return nil
}

// DebugAddr is the address the pprof profiles are served on (after
// Listen), or "" without --debug-listen.
func (a *App) DebugAddr() string {
	if a.debugListener == nil {
		return ""
	}
	return a.debugListener.Addr().String()
}

// Config is the configuration the broker runs with.
func (a *App) Config() config.Config { return a.cfg }

// Handler is the HTTP API.
func (a *App) Handler() http.Handler { return a.server.Handler }

// Serve answers HTTP requests until ctx ends, then drains: /readyz answers
// 503 and requests are still served (each answer closing its connection)
// for the shutdown delay, then no new requests are taken and in-flight ones
// finish (within the shutdown timeout), the projections stop and NATS
// closes cleanly. It returns nil after a clean drain.
func (a *App) Serve(ctx context.Context) error {
	if a.listener == nil {
		if err := a.Listen(); err != nil {
			a.closeBackend()
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- a.server.Serve(a.listener) }()
	scheme := "http"
	if a.cfg.TLSCert != "" {
		scheme = "https"
	}
	a.log.Info("epsbroker serving", zap.String("addr", scheme+"://"+a.Addr()))
	if a.metricsListener != nil {
		go func() {
			if err := a.metricsServer.Serve(a.metricsListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics listener stopped", zap.Error(err))
			}
		}()
		a.log.Info("metrics served apart", zap.String("addr", "http://"+a.MetricsAddr()+"/metrics"))
	}
	if a.debugListener != nil {
		go func() {
			if err := a.debugServer.Serve(a.debugListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("debug listener stopped", zap.Error(err))
			}
		}()
		// Contended mutexes are sampled (one event in DebugMutexFraction)
		// while the listener is up, so /debug/pprof/mutex has something to
		// show; the block profile stays off (it costs on every wait).
		prevMutex := runtime.SetMutexProfileFraction(DebugMutexFraction)
		defer runtime.SetMutexProfileFraction(prevMutex)
		tcp, _ := a.debugListener.Addr().(*net.TCPAddr)
		a.log.Warn("debug listener serving Go runtime profiles without authentication; heap profiles can hold patient data",
			zap.String("addr", "http://"+a.DebugAddr()+"/debug/pprof/"), zap.Bool("loopback", tcp != nil && tcp.IP.IsLoopback()))
	}
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
		a.drainDelay(errc)
		a.log.Info("draining: no new requests; waiting for in-flight ones", zap.Duration("timeout", a.cfg.ShutdownTimeout))
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
		if err := a.server.Shutdown(sctx); err != nil {
			// Requests still running after the timeout are cut off; what they
			// had acknowledged is stored, what they had not was not answered.
			a.log.Warn("drain timed out; closing the remaining connections", zap.Error(err))
			_ = a.server.Close()
		}
		cancel()
		if e := <-errc; !errors.Is(e, http.ErrServerClosed) && serveErr == nil {
			serveErr = e
		}
	}
	if a.metricsServer != nil {
		_ = a.metricsServer.Close() // scrapes need no drain
	}
	if a.debugServer != nil {
		_ = a.debugServer.Close() // a profile being taken is cut off
	}
	a.closeBackend()
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	a.log.Info("epsbroker stopped", zap.Error(serveErr))
	return serveErr
}

// drainDelay is the first step of a stop: /readyz answers 503 ("stopping")
// at once, and the instance keeps serving for --shutdown-delay, every
// answer with Connection: close, so that load balancers that probe
// /readyz stop sending it requests, and connections kept alive are closed
// after an answer rather than under a request that races the close. It
// returns early if the server stops by itself (errc is then left for the
// caller to read again: it is put back).
func (a *App) drainDelay(errc chan error) {
	a.stopping.Store(true)
	if a.cfg.ShutdownDelay <= 0 {
		return
	}
	a.log.Info("stopping: /readyz answers 503; serving on until the shutdown delay ends", zap.Duration("delay", a.cfg.ShutdownDelay))
	t := time.NewTimer(a.cfg.ShutdownDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case err := <-errc:
		errc <- err
	}
}

// closeWhenStopping makes every answer close its connection once the
// instance is stopping (Connection: close; over HTTP/2, Go's server sends
// GOAWAY for it).
func (a *App) closeWhenStopping(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.stopping.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func (a *App) closeBackend() {
	if a.stopQuorum != nil {
		a.stopQuorum()
		a.stopQuorum = nil
	}
	if a.Scheduler != nil {
		a.Scheduler.Stop()
		a.Scheduler = nil
	}
	if a.notifier != nil {
		a.notifier.Stop()
	}
	if a.Tracker != nil {
		a.Tracker.Stop()
	}
	if a.NominationReports != nil {
		a.NominationReports.Stop()
	}
	if a.NATS != nil {
		a.NATS.Close()
	}
	if a.verifier != nil {
		_ = a.verifier.Close()
	}
	if a.unlock != nil {
		a.unlock()
		a.unlock = nil
	}
}

// Notifier is the consumer that stores the notifications (its applied
// sequence and state).
func (a *App) Notifier() *broker.Notifier { return a.notifier }
