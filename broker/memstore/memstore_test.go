package memstore

import (
	"testing"

	"github.com/nhs-eps/epsbroker/broker/service/porttest"
)

// The fake keeps the compare-and-set contract that the JetStream adapter
// keeps (the same tests run on both).
func TestCompareAndSet(t *testing.T) {
	porttest.CompareAndSet(t, New(nil))
}

func TestEventsUnder(t *testing.T) {
	porttest.EventsUnder(t, New(nil))
}
