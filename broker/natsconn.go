package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", zap.String("server", c.ConnectedUrlRedacted())) }),
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
		nc, err := nats.Connect(cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(false))...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS %s: %w", redactURLs(cfg.NATSURL), err)
		}
		log.Info("connected to external NATS", zap.String("server", nc.ConnectedUrlRedacted()))
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
	nc, err := nats.Connect(srv.ClientURL(), append(opts, nats.InProcessServer(srv),
		nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(brokerInbox))...)
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("connect to the embedded NATS server: %w", err)
	}
	return &NATS{Conn: nc, Embedded: srv}, nil
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
	so := &server.Options{
		ServerName: "epsbroker-embedded",
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		DontListen: cfg.NATSListen == "",
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
	} else {
		so.Port = server.RANDOM_PORT // not listened on: DontListen
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
		zap.String("listen", listenAddr(srv, cfg)))
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

// Close drains the connection and stops the embedded server, if any, cleanly
// (flushing JetStream to disk).
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
		n.Embedded.Shutdown()
		n.Embedded.WaitForShutdown()
	}
}
