package broker

import (
	"testing"

	"github.com/nhs-eps/epsbroker/broker/service/porttest"
)

// The compare-and-set helper (Store.Update, Store.Create) on a real
// (embedded) JetStream: concurrent updates of one prescription all applied
// exactly once, a decided write completed after the client's context ended,
// and the rest of the ports' contract (porttest).
func TestCompareAndSet(t *testing.T) {
	st, _, _ := notifyStore(t, 0, StorageLimits{})
	porttest.CompareAndSet(t, st)
}

// The event log's listing under a message ID on JetStream (porttest).
func TestEventsUnder(t *testing.T) {
	st, _, _ := notifyStore(t, 0, StorageLimits{})
	porttest.EventsUnder(t, st)
}
