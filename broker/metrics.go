package broker

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the broker's Prometheus metrics, registered on their own
// registry (so that several brokers can run in one test process).
type Metrics struct {
	Registry         *prometheus.Registry
	HTTPRequests     *prometheus.CounterVec   // route, method, code
	HTTPDuration     *prometheus.HistogramVec // route, method, outcome
	IntakeStage      *prometheus.HistogramVec // stage
	Orders           *prometheus.CounterVec   // outcome
	JetStreamPublish *prometheus.HistogramVec // stream, outcome
	Projected        *prometheus.CounterVec   // projection, outcome
	Notifications    *prometheus.CounterVec   // audience, event
	SelfNominations  *prometheus.CounterVec   // type: self-nominations (issue 11)

	JWKSRefreshes *prometheus.CounterVec // trigger, outcome
	TokenCache    *prometheus.CounterVec // event: the verified-token cache (issue 13)

	ConsumerMessages *prometheus.CounterVec // consumer, outcome (consumer.go)
	ConsumerPending  *prometheus.GaugeVec   // consumer

	// The event log's group commit (commit.go, issue 13).
	CommitQueue     prometheus.Gauge       // writes waiting to be committed
	CommitBatchSize prometheus.Histogram   // writes per commit
	Commits         *prometheus.CounterVec // outcome: batch, single, fallback, split, error
	CommitRefused   prometheus.Counter     // writes refused past --commit-max-pending
	CommitBatching  prometheus.Gauge       // 1 while the group commit commits atomic batches
	CommitUnknown   *prometheus.CounterVec // resolved: stored, duplicate, not_stored, conflict, unresolved
	CommitResolving prometheus.Gauge       // writes without an answer being resolved now
}

// latencyBuckets run from 50 µs to 10 s.
var latencyBuckets = prometheus.ExponentialBucketsRange(0.00005, 10, 22)

// NewMetrics creates and registers the broker's metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "eps_http_request_duration_seconds", Help: "HTTP request latency by route, method and outcome (2xx, 4xx, 5xx).", Buckets: latencyBuckets,
		}, []string{"route", "method", "outcome"}),
		IntakeStage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "eps_intake_stage_duration_seconds", Help: "Time spent in each stage of prescription intake: read, decode, validate, store.", Buckets: latencyBuckets,
		}, []string{"stage"}),
		Orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_orders_total", Help: "Prescription orders by outcome: accepted, resent, duplicate_id, invalid, forbidden, error.",
		}, []string{"outcome"}),
		JetStreamPublish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "eps_jetstream_publish_duration_seconds", Help: "JetStream publish latency (until the stored acknowledgement) by stream and outcome.", Buckets: latencyBuckets,
		}, []string{"stream", "outcome"}),
		Projected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_projection_events_total", Help: "Event log messages applied by each projection, by outcome.",
		}, []string{"projection", "outcome"}),
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_notifications_total", Help: "Notifications published on eps.notify.* by audience and event.",
		}, []string{"audience", "event"}),
	}
	m.SelfNominations = newSelfNominations(m.Registry)
	m.Registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.IntakeStage, m.Orders, m.JetStreamPublish, m.Projected, m.Notifications,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.JWKSRefreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_jwks_refreshes_total", Help: "Loads of the external issuer's JWKS (--jwks) by trigger (start, periodic, unknown_kid) and outcome (ok, failed).",
	}, []string{"trigger", "outcome"})
	m.TokenCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_token_cache_total", Help: "Verified-token cache (--token-cache-size) by event: hit (answered without a full verification), miss (verified in full), eviction (dropped for room) and stale (dropped as expired or no longer signed by a trusted key).",
	}, []string{"event"})
	m.Registry.MustRegister(m.JWKSRefreshes, m.TokenCache)
	m.registerConsumers()
	m.registerCommitter()
	return m
}

// registerCommitter registers the group commit's metrics (commit.go).
func (m *Metrics) registerCommitter() {
	m.CommitQueue = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "eps_commit_queue_depth",
		Help: "Event log writes handed to the group commit and waiting for a commit to take them (bounded by --commit-max-pending).",
	})
	m.CommitBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "eps_commit_batch_size", Help: "Event log writes per commit: 1 for a write published on its own, more for an atomic batch.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	m.Commits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_commits_total",
		Help: "Event log commits by outcome: batch (an atomic batch of several writes stored), single (one write published on its own), fallback (a batch refused whole, its writes then published one by one), split (a batch refused whole for a stale expected sequence or as larger than the server allows, committed again in two halves), error (no answer from JetStream: each write then resolved, see eps_commit_unknown_total).",
	}, []string{"outcome"})
	m.CommitRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "eps_commit_refused_total",
		Help: "Event log writes refused at once, nothing written, because --commit-max-pending writes were already waiting (answered 503 with Retry-After).",
	})
	m.Registry.MustRegister(m.CommitQueue, m.CommitBatchSize, m.Commits, m.CommitRefused)
	m.CommitBatching = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "eps_commit_batching",
		Help: "1 while the group commit commits concurrent event log writes as atomic batches; 0 when every write is published on its own (the event log stream does not take atomic batches: nats-server older than 2.12).",
	})
	m.Registry.MustRegister(m.CommitBatching)
	m.CommitUnknown = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_commit_unknown_total",
		Help: "Event log writes whose commit got no answer (a timeout, the connection lost), by how they were resolved (published again with the same Nats-Msg-Id and expected sequence, and read back): stored (had not landed; stored by the resolution), duplicate (had landed; answered with its sequence), not_stored (refused, e.g. want of space), conflict (another writer came first; decided again), unresolved (no answer within the bound: 503, may or may not be stored).",
	}, []string{"resolved"})
	m.CommitResolving = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "eps_commit_resolving",
		Help: "Event log writes whose commit got no answer and that are being resolved now (see eps_commit_unknown_total); their requests wait for the outcome.",
	})
	m.Registry.MustRegister(m.CommitUnknown, m.CommitResolving)
}

// newSelfNominations registers the count of self-nominations: a dispenser
// nominating its own organisation, by nomination type (P1, P2, P3). Not by
// ODS code, which would make a series per pharmacy: the nomination reports
// say which dispensers.
func newSelfNominations(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_nomination_self_nominations_total",
		Help: "Nomination changes in which a dispenser nominated its own organisation, by nomination type.",
	}, []string{"type"})
	reg.MustRegister(c)
	return c
}

// Storage metrics (issue 11, storelimits): each stream's bytes against its
// limit, read from JetStream at every scrape, and the writes refused for
// want of space.
type storageCollector struct {
	store                                *Store
	alert                                float64
	bytes, limit, used, alertOn, alertAt *prometheus.Desc
	full                                 *prometheus.CounterVec
}

// registerStorage registers the storage metrics of s (replacing those of a
// store opened before on the same metrics) and returns the counter of
// refused writes.
func (m *Metrics) registerStorage(s *Store, alert float64) *prometheus.CounterVec {
	c := &storageCollector{store: s, alert: alert,
		bytes:   prometheus.NewDesc("eps_storage_bytes", "Bytes each stream holds (stream \"jetstream\": the whole JetStream account).", []string{"stream"}, nil),
		limit:   prometheus.NewDesc("eps_storage_limit_bytes", "Each stream's limit in bytes (streams with a limit only; \"jetstream\": the storage JetStream may use).", []string{"stream"}, nil),
		used:    prometheus.NewDesc("eps_storage_used_ratio", "Fraction of its limit each stream uses (streams with a limit only).", []string{"stream"}, nil),
		alertOn: prometheus.NewDesc("eps_storage_alert", "1 when a stream uses at least --storage-alert of its limit, or had a write refused for want of space since its last stored write.", []string{"stream"}, nil),
		alertAt: prometheus.NewDesc("eps_storage_alert_threshold_ratio", "The --storage-alert fraction.", nil, nil),
		full: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_storage_full_total", Help: "Writes refused because a stream or the JetStream storage was full (answered 507), by stream.",
		}, []string{"stream"}),
	}
	if err := m.Registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			m.Registry.Unregister(are.ExistingCollector)
			m.Registry.MustRegister(c)
		}
	}
	return c.full
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.limit
	ch <- c.used
	ch <- c.alertOn
	ch <- c.alertAt
	c.full.Describe(ch)
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.alertAt, prometheus.GaugeValue, c.alert)
	c.full.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	usage, err := c.store.StorageUsage(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.bytes, err)
		return
	}
	for _, u := range usage {
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(u.Bytes), u.Stream)
		if u.Limit <= 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(u.Limit), u.Stream)
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, u.Used(), u.Stream)
		on := 0.0
		if u.Used() >= c.alert && !DropsOldest(u.Stream) || !u.Refused.IsZero() {
			on = 1
		}
		ch <- prometheus.MustNewConstMetric(c.alertOn, prometheus.GaugeValue, on, u.Stream)
	}
}

// registerConsumers registers the consumer runner's metrics (consumer.go).
func (m *Metrics) registerConsumers() {
	m.ConsumerMessages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_consumer_messages_total",
		Help: "Messages each consumer finished, by outcome: applied, retried (redelivered after a backoff), dead (copied to the EPS_DEAD dead letter stream), dead_again (met again, already in EPS_DEAD: not copied twice).",
	}, []string{"consumer", "outcome"})
	m.ConsumerPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "eps_consumer_pending",
		Help: "Messages of its stream a consumer has yet to be delivered (its lag), as of its last delivery.",
	}, []string{"consumer"})
	m.Registry.MustRegister(m.ConsumerMessages, m.ConsumerPending)
}
