package broker

import (
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// The JetStream adapter implements the service ports (broker/service).
var (
	_ service.Prescriptions = (*Store)(nil)
	_ service.ReadyQueues   = (*TrackerProjector)(nil)
	_ service.Nominations   = (*Store)(nil)
	_ service.Metrics       = (*Metrics)(nil)
)

// CountOrder counts a prescription order by outcome (eps_orders_total).
func (m *Metrics) CountOrder(outcome string) { m.Orders.WithLabelValues(outcome).Inc() }

// ObserveStage records one intake stage's time
// (eps_intake_stage_duration_seconds).
func (m *Metrics) ObserveStage(stage string, d time.Duration) {
	m.IntakeStage.WithLabelValues(stage).Observe(d.Seconds())
}
