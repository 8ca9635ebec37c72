package rx

import (
	"slices"
	"time"
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
	SiteType         string    `json:"siteType,omitempty"`
	PrescriptionType string    `json:"prescriptionType,omitempty"`
	TherapyType      string    `json:"therapyType"`
	Created          time.Time `json:"created"`
	StartDate        time.Time `json:"startDate"`
	ControlledDrug   string    `json:"controlledDrug,omitempty"`
	RepeatsAllowed   int       `json:"repeatsAllowed,omitempty"`
	SupplyDays       int       `json:"supplyDays,omitempty"`
	// OrderSeq is the event log sequence of the accepted order: where its
	// original bytes are.
	OrderSeq uint64 `json:"orderSeq,omitempty"`
	// Issue is the current issue: the one a release takes, and the one any
	// message that names no issue acts on. A prescription that is not
	// repeat dispensing has only this one (its Number is 0). For repeat
	// dispensing it is the latest issue that has become available (or issue
	// 1), and Others holds every other issue, in issue order.
	Issue
	Others  []Issue `json:"otherIssues,omitempty"`
	History []Event `json:"history"`
	// Kept are cancellations kept for organisations other than the one
	// this record is of (Prescriber): sent before any order of theirs with
	// this ID arrived, or naming another organisation's prescription. Each
	// is its sender's alone: it applies only to an order that its
	// organisation sends (KeepCancellation, ApplyEarlyCancellations), and
	// nothing of it is shown or answered to anyone else.
	Kept []KeptCancel `json:"kept,omitempty"`
}

// KeptCancel is one organisation's cancellations of line items of a
// prescription ID that is not (yet) a prescription of that organisation.
type KeptCancel struct {
	Org       string    `json:"org"`
	NHSNumber string    `json:"nhsNumber"` // the patient its first cancellation named
	User      string    `json:"user,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Items     []string  `json:"items"` // line item ids
	Time      time.Time `json:"time"`
	// History is the organisation's cancellation events, shown in the
	// prescription's history only if they are applied.
	History []Event `json:"history"`
}

// Issue is the state of one issue of a prescription: everything a
// dispenser changes. A repeat dispensing prescription has one per issue
// (numberOfRepeatsAllowed + 1); any other prescription has one.
type Issue struct {
	// Number is the issue number, 1..N, of a repeat dispensing issue; 0 for
	// a prescription that is not repeat dispensing.
	Number           int    `json:"issue,omitempty"`
	Status           Status `json:"status"`
	Items            []Item `json:"items"`
	Nominated        string `json:"nominated,omitempty"` // nominated dispenser (ODS); empty when not nominated
	NominationSource string `json:"nominationSource,omitempty"`
	Dispenser        string `json:"dispenser,omitempty"` // the dispenser that holds it (ODS)
	// Released is when the dispenser that holds it released it: Spine's
	// last dispense date of an issue no notification is left on (record.py
	// create_release_history_entry).
	Released time.Time `json:"released,omitempty"`
	// ExpiresAt is when the issue's validity ends (IssueExpiresAt: 6 months
	// after the prescription date; 28 days for Schedule 2-4 controlled drugs;
	// 12 months for later repeat dispensing issues).
	ExpiresAt time.Time `json:"expiresAt,omitempty"`
	// AvailableAt is when a later repeat dispensing issue may become
	// downloadable: prescription date + days supply x (issue - 1) - 7 days
	// (and not before the previous issue is complete).
	AvailableAt time.Time `json:"availableAt,omitempty"`
	// Pending is a cancellation requested while the issue was with a
	// dispenser; it takes effect on return or when the item is not dispensed.
	Pending *PendingCancel `json:"pending,omitempty"`
	// Dispenses are the dispense notifications, oldest first; the latest
	// one not withdrawn may be amended or withdrawn.
	Dispenses    []DispenseRecord `json:"dispenses,omitempty"`
	LastDispense time.Time        `json:"lastDispense,omitempty"`
	Completed    time.Time        `json:"completed,omitempty"` // when it became 0006 or 0007
	ClaimID      string           `json:"claimId,omitempty"`
}

// PendingCancel is a cancellation waiting for the dispenser.
type PendingCancel struct {
	Org    string    `json:"org"`
	User   string    `json:"user,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Items  []string  `json:"items"` // line item ids
	Time   time.Time `json:"time"`
	// By names, for a line item whose cancellation another organisation
	// than Org asked for, that organisation (line item id -> ODS).
	By map[string]string `json:"by,omitempty"`
}

// orgOf is the organisation that asked for the pending cancellation of
// line item id.
func (pc *PendingCancel) orgOf(id string) string {
	if org, ok := pc.By[id]; ok {
		return org
	}
	return pc.Org
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
	// Lines are what the notification says of each item, one per
	// MedicationDispense (several for one line item dispensed as several
	// products), and NonDispensingReason the prescription's non-dispensing
	// reason (Extension-DM-PrescriptionNonDispensingReason): what the
	// tracker shows of it. Records from before they were kept have none.
	Lines               []DispensedLine `json:"lines,omitempty"`
	NonDispensingReason string          `json:"nonDispensingReason,omitempty"`
}

// DispensedLine is one MedicationDispense of a dispense notification.
type DispensedLine struct {
	LineItem string     `json:"lineItem"` // the line item id
	Status   ItemStatus `json:"status"`   // medicationdispense-type
	// Reason is the item's non-dispensing reason
	// (statusReasonCodeableConcept, medicationdispense-status-reason).
	Reason     string  `json:"reason,omitempty"`
	Code       string  `json:"code,omitempty"`       // dm+d code of the product supplied
	Medication string  `json:"medication,omitempty"` // its name
	Quantity   float64 `json:"quantity,omitempty"`
	Unit       string  `json:"unit,omitempty"`
}

// Item is one line item of a prescription.
type Item struct {
	ID     string     `json:"id"`
	Code   string     `json:"code,omitempty"`
	Status ItemStatus `json:"status"`
	// CancelReason is the cancellation reason (medicationrequest-status-
	// reason, 0001-0009) of a cancelled item; records from before it was
	// kept have none.
	CancelReason string `json:"cancelReason,omitempty"`
}

// cancel cancels the item for the given reason.
func (it *Item) cancel(reason string) {
	it.Status, it.CancelReason = ItemCancelled, reason
}

// Event is one entry of a prescription's message history.
type Event struct {
	Time      time.Time `json:"time"`
	Type      string    `json:"type"` // e.g. prescription-order
	MessageID string    `json:"messageId,omitempty"`
	Org       string    `json:"org,omitempty"`
	User      string    `json:"user,omitempty"`
	Status    Status    `json:"status"`
	// Issue is the repeat dispensing issue the event is about (0: the
	// prescription as a whole, or one that is not repeat dispensing).
	Issue int `json:"issue,omitempty"`
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
// accepted order, as Spine creates it (eps-spine-shared record.py
// create_initial_record, set_initial_prescription_status; Spine refuses no
// order for its dates except an eRD validity end in the past or more than 12
// months ahead, validation/create.py check_repeat_dispense_window, which
// intake checks). Status 0001, or 9001 when the prescription date is more
// than a day after now; every item 0007. A nominated order (site type P1, P2
// or P3 naming a performer) is nominated to that performer. A repeat
// dispensing order gets all its issues: issue 1 as above, issues 2..N at
// 9000 with their availability dates.
//
// Every issue's expiry counts from the prescription date, never from the
// arrival (next_activity_generator.py _calculate_expiry_date): issue 1 6
// months on (28 days for a Schedule 2-4 controlled drug), later issues 12
// months on. An order that arrives after its expiry is created and expires
// at once, as Spine's overdue expiry does (record.py handle_overdue_expiry;
// the next-activity batch), so it is never dispensable.
func Create(o *Order, by Actor, now time.Time) *Prescription {
	now = now.UTC()
	start := PrescriptionDate(o, now)
	status := StatusToBeDispensed
	if PostDated(start, now) {
		status = StatusFuture
	}
	p := &Prescription{
		ID: o.PrescriptionID, LongID: o.LongID, BundleID: o.BundleID, NHSNumber: o.NHSNumber,
		Prescriber: o.Sender, PrescriberOrg: o.PrescriberOrg, SiteType: o.SiteType,
		PrescriptionType: o.PrescriptionType, TherapyType: o.TherapyType,
		Created: now, StartDate: start, RepeatsAllowed: o.RepeatsAllowed, SupplyDays: o.SupplyDays,
		ControlledDrug: o.ControlledDrug,
	}
	p.Status = status
	if o.Nominated() && o.Performer != "" {
		p.Nominated, p.NominationSource = o.Performer, NominationFromOrder
	}
	p.ExpiresAt = p.IssueExpiresAt(1)
	p.Items = make([]Item, len(o.Items))
	for i, it := range o.Items {
		p.Items[i] = Item{ID: it.ID, Code: it.MedicationCode, Status: ItemToBeDispensed}
	}
	if p.RepeatDispensing() {
		p.Number = 1
		for n := 2; n <= p.RepeatsAllowed+1; n++ {
			later := Issue{Number: n, Status: StatusRepeatFuture, Items: slices.Clone(p.Items),
				Nominated: p.Nominated, NominationSource: p.NominationSource,
				AvailableAt: p.IssueAvailableAt(n), ExpiresAt: p.IssueExpiresAt(n)}
			p.Others = append(p.Others, later)
		}
	}
	p.History = []Event{{Time: now, Type: EventOrder, MessageID: o.BundleID, Org: by.Org, User: by.User, Status: status}}
	if !now.Before(p.ExpiresAt) {
		// Past its expiry on arrival: the overdue expiry applies at once.
		return expireFrom(p, p.Number, now)
	}
	return p
}

// RepeatDispensing reports whether the prescription is electronic repeat
// dispensing: several issues from one prescription.
func (p *Prescription) RepeatDispensing() bool {
	return p.TherapyType == TherapyRepeatDispensing
}

// IssueCount is the number of issues: numberOfRepeatsAllowed + 1 for
// repeat dispensing, otherwise 1.
func (p *Prescription) IssueCount() int { return len(p.Others) + 1 }

// IssueNumber is the current issue's number (1 when there is one issue).
func (p *Prescription) IssueNumber() int { return max(p.Number, 1) }

// Issues lists every issue in issue order (copies).
func (p *Prescription) Issues() []Issue {
	out := make([]Issue, 0, p.IssueCount())
	out = append(out, p.Others...)
	out = append(out, p.Issue)
	slices.SortStableFunc(out, func(a, b Issue) int { return a.Number - b.Number })
	return out
}

// AtIssue is a copy of the prescription with issue n as its current issue:
// what a transition of issue n acts on, and what the tracker shows of it.
// n 0 is the current issue. It is false when there is no issue n.
func (p *Prescription) AtIssue(n int) (*Prescription, bool) {
	c := p.clone()
	if n == 0 || n == p.IssueNumber() {
		return c, true
	}
	i := slices.IndexFunc(c.Others, func(is Issue) bool { return is.Number == n })
	if i < 0 {
		return nil, false
	}
	c.Others[i], c.Issue = c.Issue, c.Others[i]
	slices.SortStableFunc(c.Others, func(a, b Issue) int { return a.Number - b.Number })
	return c, true
}

// Ready reports whether the prescription waits in its nominated dispenser's
// queue for a nominated release.
func (p *Prescription) Ready() bool {
	return p.Nominated != "" && p.Status == StatusToBeDispensed
}

// Nominate sets the nominated dispenser of the current issue and of every
// issue still to come.
func (p *Prescription) Nominate(ods, source string) {
	p.Nominated, p.NominationSource = ods, source
	for i := range p.Others {
		if p.Others[i].Number > p.IssueNumber() {
			p.Others[i].Nominated, p.Others[i].NominationSource = ods, source
		}
	}
}
