package broker

import (
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// The JetStream adapter implements the service ports (broker/service).
var (
	_ service.Prescriptions = (*Store)(nil)
	_ service.ReadyQueues   = (*Store)(nil)
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

// The services' names as the HTTP layer knew them before the services moved
// to broker/service, so that it compiles unchanged; new code names
// service.Outcome, service.Released, service.Intake, service.Lifecycle.
type (
	Outcome   = service.Outcome
	Released  = service.Released
	Intake    = service.Intake
	Lifecycle = service.Lifecycle
)
