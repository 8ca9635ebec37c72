package broker

import (
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
	m.Registry.MustRegister(m.JWKSRefreshes)
	return m
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
