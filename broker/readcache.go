package broker

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// recentSlots is how many event log messages recentEvents holds.
const recentSlots = 256

// recentEvents holds the event log messages the store read last, by
// sequence, so that a message read as a prescription's current state is not
// read from the server again when its sequence is asked for next: a
// prescription nothing has happened to since its order has the order as its
// current state, and a release reads the current state and then the order
// (service.Lifecycle's orderOf). An old message costs the server a load of
// its whole block (8 MB, about 1,000 orders) when the block's cache has
// expired. The event log never changes a sequence's message (it denies
// deletes and purges), so a message held here is never stale.
//
// It is direct-mapped (a message goes to the slot of its sequence modulo
// recentSlots, replacing what was there): it is meant for a read followed at
// once by another of the same message, not as a cache of the log, which a
// look-up of random prescriptions would gain nothing from short of holding
// most of it. The zero value is ready; at most recentSlots messages (of up
// to the store's maximum message size) are held.
type recentEvents struct {
	mu    sync.Mutex
	slots [recentSlots]recentMsg
}

// recentMsg is a message as read, decoded again on each use, so that
// callers never share a record.
type recentMsg struct {
	seq     uint64 // 0: empty
	time    time.Time
	subject string
	header  nats.Header
	data    []byte
}

func (r *recentEvents) put(seq uint64, t time.Time, subject string, h nats.Header, data []byte) {
	if seq == 0 {
		return
	}
	r.mu.Lock()
	r.slots[seq%recentSlots] = recentMsg{seq: seq, time: t, subject: subject, header: h, data: data}
	r.mu.Unlock()
}

func (r *recentEvents) get(seq uint64) (recentMsg, bool) {
	if seq == 0 {
		return recentMsg{}, false
	}
	r.mu.Lock()
	m := r.slots[seq%recentSlots]
	r.mu.Unlock()
	return m, m.seq == seq
}
