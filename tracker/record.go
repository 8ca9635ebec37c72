package tracker

import (
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Prescription is the state of one prescription after an event: what the
// event log carries with every message about it, and what routing, the
// lifecycle and the tracker decide from. It holds no patient name or
// address: those stay in the original message bytes.
type Prescription struct {
	ID               string    `json:"id"`     // short form
	LongID           string    `json:"longId"` // long form UUID
	BundleID         string    `json:"bundleId"`
	NHSNumber        string    `json:"nhsNumber"`
	Prescriber       string    `json:"prescriber"`              // sending organisation (ODS)
	PrescriberOrg    string    `json:"prescriberOrg,omitempty"` // requester's organisation (ODS)
	Nominated        string    `json:"nominated,omitempty"`     // nominated dispenser (ODS); empty when not nominated
	NominationSource string    `json:"nominationSource,omitempty"`
	SiteType         string    `json:"siteType,omitempty"`
	PrescriptionType string    `json:"prescriptionType,omitempty"`
	TherapyType      string    `json:"therapyType"`
	Status           Status    `json:"status"`
	Items            []Item    `json:"items"`
	Dispenser        string    `json:"dispenser,omitempty"` // the dispenser that holds it (ODS)
	Created          time.Time `json:"created"`
	StartDate        time.Time `json:"startDate"`
	ControlledDrug   string    `json:"controlledDrug,omitempty"`
	RepeatsAllowed   int       `json:"repeatsAllowed,omitempty"`
	SupplyDays       int       `json:"supplyDays,omitempty"`
	// OrderSeq is the event log sequence of the accepted order: where its
	// original bytes are.
	OrderSeq uint64 `json:"orderSeq,omitempty"`
	// ExpiresAt is when the prescription's validity ends (6 months after its
	// start unless the order says earlier).
	ExpiresAt time.Time `json:"expiresAt,omitempty"`
	// Pending is a cancellation requested while the prescription was with a
	// dispenser; it takes effect on return or when the item is not dispensed.
	Pending *PendingCancel `json:"pending,omitempty"`
	// Dispenses are the dispense notifications, oldest first; the latest
	// one not withdrawn may be amended or withdrawn.
	Dispenses    []DispenseRecord `json:"dispenses,omitempty"`
	LastDispense time.Time        `json:"lastDispense,omitempty"`
	Completed    time.Time        `json:"completed,omitempty"` // when it became 0006 or 0007
	ClaimID      string           `json:"claimId,omitempty"`
	History      []Event          `json:"history"`
}

// PendingCancel is a cancellation waiting for the dispenser.
type PendingCancel struct {
	Org    string    `json:"org"`
	User   string    `json:"user,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Items  []string  `json:"items"` // line item ids
	Time   time.Time `json:"time"`
}

// DispenseRecord is one dispense notification and the state it replaced, so
// that withdrawing it restores that state.
type DispenseRecord struct {
	ID          string       `json:"id"`
	Time        time.Time    `json:"time"`
	Dispenser   string       `json:"dispenser"`
	Before      Status       `json:"before"`
	BeforeItems []ItemStatus `json:"beforeItems"`
	// BeforePending and BeforeLast are the pending cancellation and the last
	// dispense time before the notification: a withdraw restores them too.
	BeforePending *PendingCancel `json:"beforePending,omitempty"`
	BeforeLast    time.Time      `json:"beforeLast,omitempty"`
	Withdrawn     bool           `json:"withdrawn,omitempty"`
}

// Item is one line item of a prescription.
type Item struct {
	ID     string     `json:"id"`
	Code   string     `json:"code,omitempty"`
	Status ItemStatus `json:"status"`
}

// Event is one entry of a prescription's message history.
type Event struct {
	Time      time.Time `json:"time"`
	Type      string    `json:"type"` // e.g. prescription-order
	MessageID string    `json:"messageId,omitempty"`
	Org       string    `json:"org,omitempty"`
	User      string    `json:"user,omitempty"`
	Status    Status    `json:"status"`
}

// Event types of the message history.
const (
	EventOrder = "prescription-order"
)

// Nomination sources: how the dispenser of a nominated order was found.
const (
	NominationFromOrder    = "order"    // the order named its performer (a one-off nomination)
	NominationFromRegistry = "registry" // the patient's nomination of the order's site type
	NominationNone         = "none"     // nominated site type, but no dispenser could be found
)

// Actor is who caused an event.
type Actor struct {
	User string
	Org  string
}

// Create is the creation transition: the prescription record of a newly
// accepted order. Status 0001, or 9001 when the order's start date is more
// than a day after now; every item 0007. A nominated order (site type P1, P2
// or P3 naming a performer) is nominated to that performer.
func Create(o *fhir.Order, by Actor, now time.Time) *Prescription {
	now = now.UTC()
	start := o.ValidityStart
	if start.IsZero() {
		start = o.AuthoredOn
	}
	if start.IsZero() {
		start = now
	}
	status := StatusToBeDispensed
	if start.Sub(now) > 24*time.Hour {
		status = StatusFuture
	}
	p := &Prescription{
		ID: o.PrescriptionID, LongID: o.LongID, BundleID: o.BundleID, NHSNumber: o.NHSNumber,
		Prescriber: o.Sender, PrescriberOrg: o.PrescriberOrg, SiteType: o.SiteType,
		PrescriptionType: o.PrescriptionType, TherapyType: o.TherapyType, Status: status,
		Created: now, StartDate: start.UTC(), RepeatsAllowed: o.RepeatsAllowed, SupplyDays: o.SupplyDays,
		ControlledDrug: o.ControlledDrug,
	}
	if o.Nominated() && o.Performer != "" {
		p.Nominated, p.NominationSource = o.Performer, NominationFromOrder
	}
	// Validity runs 6 months from the prescription date, or from its
	// arrival when that is later: an order dated further back (the NHS
	// example messages are from 2021-2022) is not expired on arrival. An
	// explicit validity end counts only when it is still ahead.
	from := start
	if now.After(from) {
		from = now
	}
	p.ExpiresAt = from.UTC().AddDate(0, 6, 0)
	if o.ShortValidity() { // Schedule 2-4 controlled drugs: 28 days
		p.ExpiresAt = from.UTC().AddDate(0, 0, 28)
	}
	if !o.ValidityEnd.IsZero() && o.ValidityEnd.After(now) && o.ValidityEnd.Before(p.ExpiresAt) {
		p.ExpiresAt = o.ValidityEnd.UTC()
	}
	p.Items = make([]Item, len(o.Items))
	for i, it := range o.Items {
		p.Items[i] = Item{ID: it.ID, Code: it.MedicationCode, Status: ItemToBeDispensed}
	}
	p.History = []Event{{Time: now, Type: EventOrder, MessageID: o.BundleID, Org: by.Org, User: by.User, Status: status}}
	return p
}

// Ready reports whether the prescription waits in its nominated dispenser's
// queue for a nominated release.
func (p *Prescription) Ready() bool {
	return p.Nominated != "" && p.Status == StatusToBeDispensed
}
