package rx

import "time"

// This file holds the decisions a service makes from what a prescription
// ID holds before it calls a transition: what an arriving order does, whether
// a cancellation cancels or is kept, and whether a ready-queue entry may
// still be handed over by a nominated release. Each is written here once;
// the services call them.

// OrderOutcome is what an order does to what its prescription ID holds.
type OrderOutcome int

const (
	// OrderStored: the ID held nothing; the order is stored.
	OrderStored OrderOutcome = iota
	// OrderAfterCancellation: the ID held only cancellations kept before
	// their prescription arrived; the order is stored with them applied
	// (ApplyEarlyCancellations).
	OrderAfterCancellation
	// OrderResent: the ID holds this order (the same Bundle identifier):
	// the same message again, nothing is stored and it is accepted.
	OrderResent
	// OrderDuplicateID: the ID holds another prescription message; Spine
	// refuses it as DUPLICATE_PRESCRIPTION_ID.
	OrderDuplicateID
)

// AcceptOrder decides what the order whose record is created does to cur,
// what its prescription ID holds (nil: nothing): the record to store (nil
// for OrderResent and OrderDuplicateID) and the outcome.
func AcceptOrder(cur, created *Prescription, now time.Time) (*Prescription, OrderOutcome) {
	switch {
	case cur == nil:
		return created, OrderStored
	case cur.IsEarlyCancellation():
		return ApplyEarlyCancellations(cur, created, now), OrderAfterCancellation
	case cur.BundleID == created.BundleID:
		return nil, OrderResent
	}
	return nil, OrderDuplicateID
}

// CancelOrKeep decides a cancellation by by.Org of prescription id, whose
// current record is cur (nil: nothing stored): a prescription of that
// organisation is cancelled (Cancel: the event EventCancel and Cancel's
// R-code); anything else (nothing, only kept cancellations, another
// organisation's prescription) keeps the cancellation for that
// organisation (KeepCancellation: the event EventCancelKept, which
// notifies nobody, and R-0008). next is nil when there is nothing to
// write.
func CancelOrKeep(cur *Prescription, id string, by Actor, in CancelInput, now time.Time) (next *Prescription, event string, code CancelCode) {
	if cur == nil || cur.IsEarlyCancellation() || cur.Prescriber != by.Org {
		return KeepCancellation(cur, id, by, in, now), EventCancelKept, RNotFound
	}
	next, code = Cancel(cur, by, in, now)
	return next, EventCancel, code
}

// QueuedFor reports whether p may still be handed over to dispenser by a
// nominated release: it is ready (To Be Dispensed, nominated) and nominated
// to dispenser. A nominated release passes over a queue entry that is not
// (taken, returned, or changed since it was queued), where Release would
// refuse it.
func QueuedFor(p *Prescription, dispenser string) bool {
	return p.Ready() && p.Nominated == dispenser
}
