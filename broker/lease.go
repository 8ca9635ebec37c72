package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
)

const (
	// BucketLeases holds the leases that make work single-active among the
	// broker instances sharing a NATS server or cluster: key LeaseScheduler
	// names the instance that runs the scheduler's passes. Each write
	// carries a per-message TTL (Nats-TTL), so an entry its holder stops
	// renewing is removed by the server when the TTL runs out, measured
	// by the server from when it stored it (no instance's wall clock is
	// compared with another's).
	BucketLeases = "EPS_LEASES"
	// LeaseScheduler is the scheduler's lease key.
	LeaseScheduler = "scheduler"
	// leasesMaxBytes bounds the bucket: one small entry per lease, and
	// the markers the server leaves when one lapses.
	leasesMaxBytes = 64 << 10
	// leaseMarkerTTL is how long the server keeps the marker of a lease
	// that lapsed (watchers of the bucket see the lapse).
	leaseMarkerTTL = time.Minute
)

// ErrLeaseUnsupported is a NATS server without per-message TTLs (older
// than 2.11): leases cannot lapse by themselves there.
var ErrLeaseUnsupported = errors.New("the NATS server does not support per-message TTLs (nats-server 2.11 or later)")

// LeaseConfig names a lease and its holder.
type LeaseConfig struct {
	// Key is the lease's key in BucketLeases.
	Key string
	// Holder names this instance in the lease ("": the host name, the
	// process ID and a random suffix). Two instances must not share one.
	Holder string
	// TTL is how long the lease lasts without renewal: whole seconds, at
	// least 1s (the server counts TTLs in seconds; a fraction is dropped).
	TTL time.Duration
	// Replicas of the bucket (as the broker's other streams).
	Replicas int
}

// KVLease is a service.Lease on a key of BucketLeases: an acquisition
// creates the key (only if absent, or deleted, or lapsed), a renewal
// writes it again only if it is still at the revision this instance wrote
// (Nats-Expected-Last-Subject-Sequence), each write with the lease's TTL.
// A write whose answer was lost is read back: a key that names this
// instance is still its lease.
type KVLease struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	key     string
	subject string
	holder  string
	ttl     time.Duration

	mu  sync.Mutex
	rev uint64 // the revision this instance wrote last (0: not held)
}

// OpenLease creates (or opens) BucketLeases and returns the lease cfg
// names. ErrLeaseUnsupported when the server cannot expire it.
func OpenLease(ctx context.Context, js jetstream.JetStream, cfg LeaseConfig) (*KVLease, error) {
	ttl := cfg.TTL.Truncate(time.Second)
	if ttl < time.Second {
		return nil, fmt.Errorf("lease %s: TTL %v, want at least 1s", cfg.Key, cfg.TTL)
	}
	holder := cfg.Holder
	if holder == "" {
		host, _ := os.Hostname()
		var r [4]byte
		_, _ = rand.Read(r[:])
		holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(r[:]))
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         BucketLeases,
		Description:    "Leases of single-active work among broker instances (key scheduler: who runs the scheduler's passes); each entry lapses after its TTL unless renewed",
		Storage:        jetstream.FileStorage,
		Replicas:       max(cfg.Replicas, 1),
		History:        1,
		MaxBytes:       leasesMaxBytes,
		LimitMarkerTTL: leaseMarkerTTL,
	})
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		return nil, fmt.Errorf("bucket %s: %w", BucketLeases, ErrLeaseUnsupported)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketLeases, err)
	}
	return &KVLease{js: js, kv: kv, key: cfg.Key, subject: "$KV." + BucketLeases + "." + cfg.Key, holder: holder, ttl: ttl}, nil
}

// Holder is the name this instance holds the lease under.
func (l *KVLease) Holder() string { return l.holder }

// TTL is how long the lease lasts without renewal.
func (l *KVLease) TTL() time.Duration { return l.ttl }

// Acquire creates the lease's key when it is absent (never written,
// released, or lapsed), or renews it when this instance holds it.
func (l *KVLease) Acquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev != 0 {
		return l.renew(ctx, true)
	}
	rev, err := l.kv.Create(ctx, l.key, []byte(l.holder), jetstream.KeyTTL(l.ttl))
	switch {
	case err == nil:
		l.rev = rev
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists), isWrongLastSequence(err):
		// Another holds it, or another took it first, or an earlier
		// acquisition of this instance was stored without its answer.
		return l.readBack(ctx)
	default:
		return false, err
	}
}

// Renew writes the lease again with a new TTL, only if it is still at the
// revision this instance wrote.
func (l *KVLease) Renew(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renew(ctx, true)
}

// renew is Renew with l.mu held; readBack says whether a lost
// compare-and-set is read back (once).
func (l *KVLease) renew(ctx context.Context, readBack bool) (bool, error) {
	if l.rev == 0 {
		return false, nil
	}
	ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: l.subject, Data: []byte(l.holder)},
		jetstream.WithExpectLastSequencePerSubject(l.rev), jetstream.WithMsgTTL(l.ttl))
	switch {
	case err == nil:
		l.rev = ack.Sequence
		return true, nil
	case isWrongLastSequence(err) && readBack:
		return l.readBack(ctx)
	case isWrongLastSequence(err):
		l.rev = 0
		return false, nil
	default:
		// No answer: the write may be stored; the next call finds out.
		return false, err
	}
}

// readBack reads the key after a lost compare-and-set: when it names this
// instance (a write of its own whose answer was lost), the lease is renewed
// from that revision, so that its TTL runs from now.
func (l *KVLease) readBack(ctx context.Context) (bool, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		l.rev = 0
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if string(e.Value()) != l.holder {
		l.rev = 0
		return false, nil
	}
	l.rev = e.Revision()
	return l.renew(ctx, false)
}

// Release deletes the lease's key if it is still at the revision this
// instance wrote, so that another instance acquires it at its next try.
func (l *KVLease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return nil
	}
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
	if err != nil && !isWrongLastSequence(err) {
		return err
	}
	l.rev = 0 // released, or no longer this instance's
	return nil
}

// SchedulerMetrics are the scheduler's metrics (service.SchedulerMetrics).
type SchedulerMetrics struct {
	leader  prometheus.Gauge
	lease   *prometheus.CounterVec
	passes  prometheus.Counter
	applied prometheus.Counter
}

// RegisterScheduler registers the scheduler's metrics.
func (m *Metrics) RegisterScheduler() *SchedulerMetrics {
	s := &SchedulerMetrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eps_scheduler_leader",
			Help: "1 while this instance runs the scheduler's passes (it holds the scheduler lease in " + BucketLeases + ", or runs without one); 0 while another instance does.",
		}),
		lease: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_scheduler_lease_total",
			Help: "Changes of this instance's hold on the scheduler lease: acquired, lost (it lapsed or another took it), released (on a graceful stop).",
		}, []string{"event"}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eps_scheduler_passes_total", Help: "Scheduler passes this instance ran (only while it holds the scheduler lease).",
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eps_scheduler_transitions_total", Help: "Time-driven transitions (post-dated becoming ready, expiry, no-claim, ...) this instance's scheduler passes applied.",
		}),
	}
	for _, e := range []string{"acquired", "lost", "released"} {
		s.lease.WithLabelValues(e)
	}
	m.Registry.MustRegister(s.leader, s.lease, s.passes, s.applied)
	return s
}

// SchedulerLeading sets eps_scheduler_leader.
func (s *SchedulerMetrics) SchedulerLeading(on bool) {
	if on {
		s.leader.Set(1)
	} else {
		s.leader.Set(0)
	}
}

// CountLease counts a change of the hold on the lease.
func (s *SchedulerMetrics) CountLease(event string) { s.lease.WithLabelValues(event).Inc() }

// CountPass counts a pass and its transitions.
func (s *SchedulerMetrics) CountPass(applied int) {
	s.passes.Inc()
	s.applied.Add(float64(applied))
}

// SingleActiveScheduler gives sched its metrics and makes it single-active
// on the scheduler lease (ttl) in BucketLeases, with the store's replicas.
// On a NATS server that cannot expire a lease (ErrLeaseUnsupported) it
// logs a warning and leaves every instance running the passes, which stays
// correct (each transition is a compare-and-set write).
//
// retry, when not nil, runs the bucket's creation and tries it again while
// the cluster cannot answer for it yet (app's untilPlaced, as for the
// streams); nil tries once.
func SingleActiveScheduler(ctx context.Context, sched *service.Scheduler, st *Store, replicas int, ttl time.Duration, m *Metrics, log *zap.Logger, retry func(open func() error) error) error {
	if retry == nil {
		retry = func(open func() error) error { return open() }
	}
	var lease *KVLease
	err := retry(func() (err error) {
		lease, err = OpenLease(ctx, st.JetStream(), LeaseConfig{Key: LeaseScheduler, TTL: ttl, Replicas: max(replicas, st.Replicas())})
		return err
	})
	sched.CountWith(m.RegisterScheduler())
	if errors.Is(err, ErrLeaseUnsupported) {
		log.Warn("scheduler lease unavailable: every broker instance runs the scheduler's passes (each transition still applies once)", zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("scheduler lease: %w", err)
	}
	// Readiness requires the bucket's leader too (Healthy): without one no
	// instance can take or renew the lease, and no scheduled work runs.
	st.AddHealthStream("KV_" + BucketLeases)
	log.Info("scheduler lease", zap.String("holder", lease.Holder()), zap.Duration("ttl", lease.TTL()))
	sched.UseLease(lease, service.LeaseOptions{})
	return nil
}
