package rx

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// This file is the prescription state machine of EPS-DOMAIN.md, written
// once: every legal transition, and the error or R-code of every illegal
// one. Each transition takes the current record and returns a new one (the
// input is never changed), with the event appended to its history. The
// broker writes the result with compare-and-set on the prescription's
// subject, so two transitions of one prescription can never both succeed
// from the same state.

// History event types (besides EventOrder).
const (
	EventRelease          = "release"
	EventNominatedRelease = "nominated-release"
	EventReturn           = "return"
	EventWithdraw         = "withdraw"
	EventDispense         = "dispense-notification"
	EventClaim            = "claim"
	EventCancel           = "prescription-order-update"
	EventSubsequentCancel = "subsequent-cancellation"
	EventExpire           = "expire"
	EventComplete         = "complete"
	EventNoClaim          = "no-claim"
	EventReady            = "ready"
	// EventAwaiting is a repeat dispensing issue becoming the next one
	// (9000 -> 0000) once the issue before it is complete.
	EventAwaiting = "awaiting-release-ready"
	// EventCancelKept is the event log's name for a write that keeps a
	// cancellation for an organisation whose prescription the ID is not
	// (KeepCancellation): nobody is notified of it.
	EventCancelKept = "cancellation-kept"
)

// invalidTransition is INVALID_STATE_TRANSITION with words.
func invalidTransition(p *Prescription, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Code: CodeInvalidStateTransition,
		Message: fmt.Sprintf("prescription %s is %s (%s): ", p.ID, p.Status.Display(), p.Status) + fmt.Sprintf(format, args...)}
}

// clone copies a record deeply enough for a transition to change it.
func (p *Prescription) clone() *Prescription {
	c := *p
	c.Issue = p.Issue.clone()
	if p.Others != nil {
		c.Others = make([]Issue, len(p.Others))
		for i := range p.Others {
			c.Others[i] = p.Others[i].clone()
		}
	}
	c.History = slices.Clone(p.History)
	return &c
}

func (is *Issue) clone() Issue {
	c := *is
	c.Items = slices.Clone(is.Items)
	c.Dispenses = slices.Clone(is.Dispenses)
	for i := range c.Dispenses {
		c.Dispenses[i].BeforeItems = slices.Clone(is.Dispenses[i].BeforeItems)
		c.Dispenses[i].BeforePending = is.Dispenses[i].BeforePending.clone()
	}
	c.Pending = is.Pending.clone()
	return c
}

// issue returns issue n of p (nil when there is none): the current one or
// one of the others, to change in place.
func (p *Prescription) issue(n int) *Issue {
	if n == p.IssueNumber() || n == 0 {
		return &p.Issue
	}
	for i := range p.Others {
		if p.Others[i].Number == n {
			return &p.Others[i]
		}
	}
	return nil
}

// nextIssue is the repeat dispensing issue after the current one, nil when
// there is none.
func (p *Prescription) nextIssue() *Issue {
	if !p.RepeatDispensing() {
		return nil
	}
	return p.issue(p.IssueNumber() + 1)
}

// Complete reports whether an issue in status s is over, so that the next
// repeat dispensing issue may follow: dispensed, not dispensed, claimed,
// no-claimed, expired or cancelled.
func Complete(s Status) bool {
	switch s {
	case StatusDispensed, StatusNotDispensed, StatusClaimed, StatusNoClaimed, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// noIssue is the error of a message naming an issue the prescription does
// not have.
func noIssue(p *Prescription, n int) *Error {
	return &Error{Kind: KindInvalid, Code: CodeInvalidValue,
		Message: fmt.Sprintf("prescription %s has %d issues; the message names issue %d (Extension-EPS-RepeatInformation.numberOfRepeatsIssued)", p.ID, p.IssueCount(), n)}
}

// OnIssue applies transition t to issue n of a repeat dispensing
// prescription (n 0: the current issue) and returns the result with the
// current issue as before, unless t sent the current issue back to the
// future (a withdraw of the issue before it), when issue n is current
// again. For any other prescription n is ignored: it has one issue.
func OnIssue(p *Prescription, n int, t func(*Prescription) (*Prescription, error)) (*Prescription, error) {
	if !p.RepeatDispensing() || n == 0 || n == p.IssueNumber() {
		return t(p)
	}
	v, ok := p.AtIssue(n)
	if !ok {
		return nil, noIssue(p, n)
	}
	r, err := t(v)
	if err != nil || r == nil {
		return r, err
	}
	if was := r.issue(p.IssueNumber()); was != nil && was.Status == StatusRepeatFuture {
		return r, nil
	}
	back, _ := r.AtIssue(p.IssueNumber())
	return back, nil
}

func (pc *PendingCancel) clone() *PendingCancel {
	if pc == nil {
		return nil
	}
	c := *pc
	c.Items = slices.Clone(pc.Items)
	c.By = maps.Clone(pc.By)
	return &c
}

func (p *Prescription) record(event, messageID string, by Actor, now time.Time) {
	p.recordFor(&p.Issue, event, messageID, by, now)
}

// recordFor adds an event about issue is to the history.
func (p *Prescription) recordFor(is *Issue, event, messageID string, by Actor, now time.Time) {
	p.History = append(p.History, Event{Time: now.UTC(), Type: event, MessageID: messageID, Org: by.Org, User: by.User,
		Status: is.Status, Issue: is.Number})
}

// itemIndex is the index of line item id in p, compared as EPS compares
// line item ids (GUIDs, which it upper-cases: dispense-notification.ts
// mapMedicationDispenses): without regard to case. The record keeps each
// item's id as the order gave it, and stores that id wherever it names an
// item (a pending cancellation), whatever case a later message uses.
func (p *Issue) itemIndex(id string) int {
	return slices.IndexFunc(p.Items, func(it Item) bool { return strings.EqualFold(it.ID, id) })
}

// hasID reports whether ids holds id, without regard to case.
func hasID(ids []string, id string) bool {
	return slices.ContainsFunc(ids, func(x string) bool { return strings.EqualFold(x, id) })
}

func (p *Issue) itemStatuses() []ItemStatus {
	out := make([]ItemStatus, len(p.Items))
	for i, it := range p.Items {
		out[i] = it.Status
	}
	return out
}

// Release hands the prescription to dispenser: 0001 -> 0002, items 0007 ->
// 0008. nominated says it came from the dispenser's ready queue.
func Release(p *Prescription, dispenser string, by Actor, messageID string, nominated bool, now time.Time) (*Prescription, error) {
	if p.IsEarlyCancellation() {
		// Only a cancellation is known: the prescription itself is not.
		return nil, NotFound(p.ID)
	}
	switch p.Status {
	case StatusToBeDispensed:
		if nominated && p.Nominated != dispenser {
			return nil, invalidTransition(p, "it is not nominated to %s", dispenser)
		}
		if !p.ExpiresAt.IsZero() && !now.Before(p.ExpiresAt) {
			// Its expiry is overdue (the scheduler has yet to apply it): Spine
			// checks the issue's expiry date on release (record.py
			// return_details_for_release) and expires it first
			// (handle_overdue_expiry). A nominated release passes it over, as
			// it passes over any queue entry that is no longer there.
			if nominated {
				return nil, notFound("prescription %s is no longer ready: it expired on %s", p.ID, p.ExpiresAt.Format("2006-01-02"))
			}
			return nil, invalidTransition(p, "it expired on %s", p.ExpiresAt.Format("2006-01-02"))
		}
	case StatusWithDispenser, StatusWithDispenserActive:
		if p.Dispenser != dispenser {
			// The answer names the holder in a contained Organization.
			return nil, &Error{Kind: KindInvalid, Code: CodePrescriptionWithAnother,
				Message: fmt.Sprintf("prescription %s is with another dispenser (%s)", p.ID, p.Dispenser),
				Org:     p.Dispenser}
		}
		return nil, invalidTransition(p, "it has already been released to %s", dispenser)
	case StatusRepeatFuture, StatusAwaitingReleaseReady:
		if p.RepeatDispensing() {
			return nil, invalidTransition(p, "issue %d of %d is not yet available: it becomes available from %s, once issue %d is complete",
				p.IssueNumber(), p.IssueCount(), p.AvailableAt.Format("2006-01-02"), p.IssueNumber()-1)
		}
		return nil, invalidTransition(p, "only a prescription To Be Dispensed (0001) can be released")
	default:
		return nil, invalidTransition(p, "only a prescription To Be Dispensed (0001) can be released")
	}
	n := p.clone()
	n.Status, n.Dispenser, n.Released = StatusWithDispenser, dispenser, now.UTC()
	for i := range n.Items {
		if n.Items[i].Status == ItemToBeDispensed {
			n.Items[i].Status = ItemWithDispenser
		}
	}
	ev := EventRelease
	if nominated {
		ev = EventNominatedRelease
	}
	n.record(ev, messageID, by, now)
	return n, nil
}

// Return gives the prescription back: 0002 -> 0001, items 0008 -> 0007,
// the nominated dispenser cleared (it leaves every queue and can then only
// be released by ID). A pending cancellation takes effect.
func Return(p *Prescription, dispenser string, by Actor, messageID string, now time.Time) (*Prescription, error) {
	if p.Status != StatusWithDispenser {
		return nil, invalidTransition(p, "only a prescription With Dispenser (0002) can be returned")
	}
	if err := holder(p, dispenser, "it can be returned"); err != nil {
		return nil, err
	}
	n := p.clone()
	n.Status, n.Dispenser, n.Nominated, n.NominationSource, n.Released = StatusToBeDispensed, "", "", "", time.Time{}
	for i := range n.Items {
		if n.Items[i].Status == ItemWithDispenser {
			n.Items[i].Status = ItemToBeDispensed
		}
	}
	n.record(EventReturn, messageID, by, now)
	if n.Pending != nil {
		pc := n.Pending
		for _, id := range pc.Items {
			if i := n.itemIndex(id); i >= 0 && n.Items[i].Status == ItemToBeDispensed {
				n.Items[i].cancel(pc.Reason)
			}
		}
		n.Pending = nil
		n.settleCancelled()
		n.record(EventSubsequentCancel, "", Actor{User: pc.User, Org: pc.Org}, now)
	}
	return n, nil
}

// settleCancelled, after a line item of the issue was cancelled, makes the
// issue Cancelled (0005) when no item is still active (0007, 0008, 0003 or
// 0004: statuses.py LineItemStatus.ACTIVE_STATES), whether it was current or
// still to come: record.py process_line_cancellation cancels the instance
// when no other line item is active, so an item dispensed (0001), not
// dispensed (0002) or expired (0006) beside the cancelled ones does not keep
// it open (process_instance_cancellation; Spine's 9005 is only the record of
// a cancellation that arrived before its prescription,
// set_pending_cancellation).
func (p *Issue) settleCancelled() {
	cancelled := false
	for _, it := range p.Items {
		switch it.Status {
		case ItemToBeDispensed, ItemWithDispenser, ItemPartiallyDispensed, ItemNotDispensedOwing:
			return
		case ItemCancelled:
			cancelled = true
		}
	}
	if cancelled {
		p.Status = StatusCancelled
	}
}

// DispenseInput is what a dispense notification says.
type DispenseInput struct {
	ID            string                // the notification's Bundle.identifier
	ReplacementOf string                // the notification it amends, if any
	Items         map[string]ItemStatus // line item id -> 0001..0004
	Status        Status                // the prescription status it states (0003, 0006, 0007), or ""
	// Lines and NonDispensingReason are what it says for the tracker to
	// show (DispensedLines), kept with its DispenseRecord.
	Lines               []DispensedLine
	NonDispensingReason string
}

// Dispense applies a dispense notification (or an amendment of the latest
// one): items to 0001-0004, the prescription to 0003, 0006 or 0007. An item
// marked not dispensed while its cancellation is pending becomes Cancelled.
func Dispense(p *Prescription, dispenser string, by Actor, in DispenseInput, now time.Time) (*Prescription, error) {
	if err := holder(p, dispenser, "dispense notifications are accepted"); err != nil {
		return nil, err
	}
	if p.Status == StatusClaimed || p.Status == StatusNoClaimed {
		return nil, invalidTransition(p, "a claimed prescription's dispensing cannot be changed")
	}
	n := p.clone()
	before, beforeItems, beforePending, beforeLast := p.Status, p.itemStatuses(), p.Pending.clone(), p.LastDispense
	if in.ReplacementOf != "" {
		last := n.latestDispense()
		if last < 0 || n.Dispenses[last].ID != in.ReplacementOf {
			return nil, invalidTransition(p, "only the latest dispense notification can be amended, and %s is not it", in.ReplacementOf)
		}
		d := n.Dispenses[last]
		before, beforeItems, beforePending, beforeLast = d.Before, d.BeforeItems, d.BeforePending.clone(), d.BeforeLast
		n.Dispenses[last].Withdrawn = true // replaced by the amendment
		n.Status, n.Pending, n.LastDispense = before, beforePending.clone(), beforeLast
		for i := range n.Items {
			n.Items[i].Status = beforeItems[i]
		}
	}
	if n.Status != StatusWithDispenser && n.Status != StatusWithDispenserActive {
		return nil, invalidTransition(p, "dispense notifications are accepted only while it is with the dispenser (0002 or 0003)")
	}
	if len(in.Items) == 0 {
		return nil, invalidTransition(p, "the notification names no line item")
	}
	for id, st := range in.Items {
		i := n.itemIndex(id)
		switch {
		case i < 0:
			return nil, invalidTransition(p, "it has no line item %s", id)
		case st != ItemFullyDispensed && st != ItemNotDispensed && st != ItemPartiallyDispensed && st != ItemNotDispensedOwing:
			return nil, invalidTransition(p, "line item status %s is not a dispense outcome (0001-0004)", st)
		case n.Items[i].Status == ItemCancelled:
			return nil, invalidTransition(p, "line item %s is cancelled", id)
		}
		n.Items[i].Status = st
		id := n.Items[i].ID // the record's own id of the item
		if n.Pending != nil && hasID(n.Pending.Items, id) {
			if st == ItemNotDispensed {
				n.Items[i].cancel(n.Pending.Reason) // the pending cancellation takes effect
			}
			if st != ItemNotDispensedOwing {
				// Cancelled now, or dispensed: the pending request is settled.
				n.Pending.Items = slices.DeleteFunc(n.Pending.Items, func(x string) bool { return strings.EqualFold(x, id) })
			}
		}
	}
	if n.Pending != nil && len(n.Pending.Items) == 0 {
		n.Pending = nil
	}
	// The prescription takes the status the message states, as Spine's
	// record takes it (record.py update_for_dispense), even when its line
	// items would make another; the items decide only when it states none.
	// (Edited by helper "dispense" for issue 10.)
	switch in.Status {
	case "":
		n.Status = dispensedStatus(n.Items)
	case StatusWithDispenserActive, StatusDispensed, StatusNotDispensed:
		n.Status = in.Status
	default:
		return nil, invalidTransition(p, "a dispense notification may state 0003, 0006 or 0007, not %s", in.Status)
	}
	// The status stated stands (above) unless every item is now cancelled
	// (pending cancellations the notification let take effect): a
	// dispense notification is not a cancellation, so process_line_cancellation's
	// rule (settleCancelled) is not applied here.
	if !slices.ContainsFunc(n.Items, func(it Item) bool { return it.Status != ItemCancelled }) {
		n.Status = StatusCancelled
	}
	if err := n.recallNext(p, EventDispense, in.ID, by, now); err != nil {
		return nil, err
	}
	n.Dispenses = append(n.Dispenses, DispenseRecord{ID: in.ID, Time: now.UTC(), Dispenser: dispenser, Before: before, BeforeItems: beforeItems,
		BeforePending: beforePending, BeforeLast: beforeLast, Lines: in.Lines, NonDispensingReason: in.NonDispensingReason})
	n.LastDispense = now.UTC()
	n.Completed = time.Time{}
	if n.Status == StatusDispensed || n.Status == StatusNotDispensed {
		n.Completed = now.UTC()
	}
	n.record(EventDispense, in.ID, by, now)
	return n, nil
}

// dispensedStatus is the prescription status its items make: any item still
// owed (0003, 0004) or not yet dispensed (0008) keeps it With Dispenser -
// Active; otherwise Not Dispensed when nothing was dispensed, else Dispensed.
func dispensedStatus(items []Item) Status {
	dispensed := false
	for _, it := range items {
		switch it.Status {
		case ItemPartiallyDispensed, ItemNotDispensedOwing, ItemWithDispenser:
			return StatusWithDispenserActive
		case ItemFullyDispensed:
			dispensed = true
		}
	}
	if dispensed {
		return StatusDispensed
	}
	return StatusNotDispensed
}

func (p *Issue) latestDispense() int {
	for i := len(p.Dispenses) - 1; i >= 0; i-- {
		if !p.Dispenses[i].Withdrawn {
			return i
		}
	}
	return -1
}

// Withdraw takes back the latest dispense notification: the prescription
// returns to the state before it (for repeat dispensing no further back
// than With Dispenser - Active).
func Withdraw(p *Prescription, dispenser string, by Actor, notificationID, messageID string, now time.Time) (*Prescription, error) {
	if err := holder(p, dispenser, "a dispense notification can be withdrawn"); err != nil {
		return nil, err
	}
	if p.Status == StatusClaimed || p.Status == StatusNoClaimed {
		return nil, invalidTransition(p, "a claimed prescription's notifications cannot be withdrawn")
	}
	last := p.latestDispense()
	if last < 0 || p.Dispenses[last].ID != notificationID {
		return nil, invalidTransition(p, "only the latest dispense notification can be withdrawn, and %s is not it", notificationID)
	}
	n := p.clone()
	d := &n.Dispenses[last]
	d.Withdrawn = true
	n.Status, n.Pending, n.LastDispense = d.Before, d.BeforePending.clone(), d.BeforeLast
	// A record the broker wrote has a status before the notification for
	// every item; one it did not write (a foreign message on the log) may
	// not, and its items without one keep their status.
	for i := range min(len(n.Items), len(d.BeforeItems)) {
		n.Items[i].Status = d.BeforeItems[i]
	}
	if n.TherapyType == TherapyRepeatDispensing && n.Status == StatusWithDispenser {
		n.Status = StatusWithDispenserActive
	}
	n.Completed = time.Time{}
	if err := n.recallNext(p, EventWithdraw, messageID, by, now); err != nil {
		return nil, err
	}
	n.record(EventWithdraw, messageID, by, now)
	return n, nil
}

// recallNext keeps the rule that a repeat dispensing issue follows only a
// complete one: when a withdraw or an amended notification leaves n's
// current issue open again, the next issue, if it already followed and no
// dispenser has it yet (0000 or 0001), goes back to the future (9000; it
// leaves any queue, and OnIssue makes this issue current again); if a
// dispenser has it, the change is refused.
func (n *Prescription) recallNext(orig *Prescription, event, messageID string, by Actor, now time.Time) error {
	next := n.nextIssue()
	if next == nil || Complete(n.Status) {
		return nil
	}
	switch next.Status {
	case StatusAwaitingReleaseReady, StatusToBeDispensed:
		next.Status, next.Dispenser = StatusRepeatFuture, ""
		n.recordFor(next, event, messageID, by, now)
	case StatusWithDispenser, StatusWithDispenserActive, StatusDispensed, StatusNotDispensed, StatusClaimed, StatusNoClaimed:
		return invalidTransition(orig, "issue %d has already been released (%s): issue %d's dispensing can no longer be reopened",
			next.Number, next.Status, orig.IssueNumber())
	}
	return nil
}

// Claim sends the claim for reimbursement: 0006/0007 -> 0008; a claim
// amendment (replacing the current claim) keeps 0008.
func Claim(p *Prescription, dispenser string, by Actor, claimID, replacementOf string, now time.Time) (*Prescription, error) {
	if err := holder(p, dispenser, "it can be claimed"); err != nil {
		return nil, err
	}
	switch {
	case replacementOf != "":
		if p.Status != StatusClaimed || p.ClaimID != replacementOf {
			return nil, invalidTransition(p, "only the current claim can be amended, and %s is not it", replacementOf)
		}
	case p.Status != StatusDispensed && p.Status != StatusNotDispensed:
		return nil, invalidTransition(p, "only a Dispensed (0006) or Not Dispensed (0007) prescription can be claimed")
	}
	n := p.clone()
	n.Status, n.ClaimID = StatusClaimed, claimID
	n.record(EventClaim, claimID, by, now)
	return n, nil
}

// CancelInput is what a cancellation (prescription-order-update) says.
type CancelInput struct {
	MessageID  string
	NHSNumber  string
	LineItemID string
	Reason     string
}

// Cancel applies a cancellation of one line item and returns the R-code of
// the answer and the new record (nil when nothing changes). Only R-0001
// (cancelled) is a success; R-0002/R-0003 change the record too: the item is
// marked for cancellation, which takes effect when the dispenser returns
// the prescription or marks the item not dispensed.
//
// Cancelling a repeat dispensing prescription cancels the item in its
// current issue (or, when that is complete, in the next issue) and in every
// issue after it: those become Cancelled future instances (9005) when all
// their items are cancelled.
func Cancel(p *Prescription, by Actor, in CancelInput, now time.Time) (*Prescription, CancelCode) {
	if !p.RepeatDispensing() {
		return cancelIssue(p, by, in, now)
	}
	target := p.IssueNumber()
	if next := p.nextIssue(); next != nil && Complete(p.Status) && next.Status == StatusRepeatFuture {
		target = next.Number // the course goes on from the next issue: that is what is cancelled
	}
	var code CancelCode
	n, _ := OnIssue(p, target, func(v *Prescription) (*Prescription, error) {
		var r *Prescription
		r, code = cancelIssue(v, by, in, now)
		return r, nil
	})
	switch code {
	case RCancelled, RPendingWith, RPendingActive:
		if n == nil {
			return nil, code // asked again: marked already, the later issues cancelled then
		}
		// The later issues' events go before the target's, so that the last
		// event (which notifications follow) is about the issue a
		// dispenser may hold.
		ev := n.History[len(n.History)-1]
		n.History = n.History[:len(n.History)-1]
		n.cancelLater(target, by, in, now)
		n.History = append(n.History, ev)
		return n, code
	case RDispensed, RNotDispensed, RAlreadyCancelled:
		// The item is over in this issue, but the course goes on: it is
		// cancelled in every issue still to come.
		n = p.clone()
		switch cancelled, open := n.cancelLater(target, by, in, now); {
		case cancelled > 0:
			return n, RCancelled
		case open == 0 && n.hasLater(target, in.LineItemID):
			return nil, RAlreadyCancelled
		}
		return nil, code
	}
	return n, code
}

// cancelLater cancels line item in.LineItemID in every issue after target
// still to come (9000 or 0000): how many it cancelled, and how many later
// issues have the item in another state that is not cancelled.
func (n *Prescription) cancelLater(target int, by Actor, in CancelInput, now time.Time) (cancelled, open int) {
	for _, is := range n.issues() {
		k := is.itemIndex(in.LineItemID)
		if is.Number <= target || k < 0 {
			continue
		}
		switch {
		case is.Items[k].Status == ItemToBeDispensed && (is.Status == StatusRepeatFuture || is.Status == StatusAwaitingReleaseReady):
			is.Items[k].cancel(in.Reason)
			is.settleCancelled()
			n.recordFor(is, EventCancel, in.MessageID, by, now)
			cancelled++
		case is.Items[k].Status != ItemCancelled:
			open++
		}
	}
	return cancelled, open
}

// hasLater reports whether an issue after target has line item id.
func (p *Prescription) hasLater(target int, id string) bool {
	for _, is := range p.issues() {
		if is.Number > target && is.itemIndex(id) >= 0 {
			return true
		}
	}
	return false
}

// cancelIssue is Cancel of the current issue. A cancellation names a line
// item, and Spine answers from that item's status (eps-spine-shared
// record.py: check_current_instance_to_cancel_by_li_id,
// check_current_instance_w_dispenser_by_li_id,
// return_error_for_invalid_cancel_by_li_id, and for an item with the
// dispenser return_error_for_invalid_cancel_by_pr_id):
//
//	item 0007 (to be dispensed)         R-0001, cancelled
//	item 0008 or 0003 (with dispenser)  marked for cancellation: R-0002 when
//	                                    the prescription is 0002, R-0003 when 0003
//	item 0001 (dispensed)               R-0004
//	item 0002 (not dispensed)           R-0010
//	item 0005 (cancelled)               R-0006
//	item 0006 (expired)                 R-0005
//	item 0004 (not dispensed, owing)    R-0003, not marked
//	no such item                        R-0008
//
// A cancellation of an item already marked answers R-0007 when another
// organisation asked for it (check_pending_cancellation_unique_w_disp), and
// otherwise the same answer again, changing nothing.
func cancelIssue(p *Prescription, by Actor, in CancelInput, now time.Time) (*Prescription, CancelCode) {
	if !p.NHSNumberMatches(in.NHSNumber) {
		return nil, RMismatch
	}
	i := p.itemIndex(in.LineItemID)
	if i < 0 {
		return nil, RNotFound // "Prescription/item not found"
	}
	switch p.Items[i].Status {
	case ItemToBeDispensed:
		switch p.Status {
		case StatusAwaitingReleaseReady, StatusToBeDispensed, StatusRepeatFuture, StatusFuture:
		default:
			return nil, RInvalid
		}
		n := p.clone()
		n.Items[i].cancel(in.Reason)
		n.settleCancelled()
		n.record(EventCancel, in.MessageID, by, now)
		return n, RCancelled
	case ItemWithDispenser, ItemPartiallyDispensed:
		code := RPendingWith
		if p.Status == StatusWithDispenserActive {
			code = RPendingActive
		}
		id := p.Items[i].ID // the record's own id of the item
		if p.Pending != nil && hasID(p.Pending.Items, id) {
			if p.Pending.orgOf(id) != by.Org {
				return nil, RRequestedByAnother
			}
			return nil, code // asked again: already marked, nothing changes
		}
		n := p.clone()
		if n.Pending == nil {
			n.Pending = &PendingCancel{Org: by.Org, User: by.User, Reason: in.Reason, Time: now.UTC()}
		} else if by.Org != n.Pending.Org {
			if n.Pending.By == nil {
				n.Pending.By = map[string]string{}
			}
			n.Pending.By[id] = by.Org
		}
		n.Pending.Items = append(n.Pending.Items, id)
		n.record(EventCancel, in.MessageID, by, now)
		return n, code
	case ItemFullyDispensed:
		return nil, RDispensed
	case ItemNotDispensed:
		return nil, RNotDispensed
	case ItemCancelled:
		return nil, RAlreadyCancelled
	case ItemExpired:
		return nil, RExpired
	}
	return nil, RPendingActive // 0004: still owed by the dispenser
}

// EarlyCancellation is the record kept for a cancellation that arrived
// before its prescription: status 9005, the cancelled line item pending, no
// order yet (BundleID is empty), of the cancelling organisation
// (Prescriber). ApplyEarlyCancellations applies it when that organisation's
// prescription arrives.
func EarlyCancellation(id string, by Actor, in CancelInput, now time.Time) *Prescription {
	p := &Prescription{ID: id, NHSNumber: in.NHSNumber, Prescriber: by.Org, Created: now.UTC(), StartDate: now.UTC(),
		Issue: Issue{Status: StatusCancelledFuture, ExpiresAt: now.UTC().AddDate(0, 6, 0),
			Pending: &PendingCancel{Org: by.Org, User: by.User, Reason: in.Reason, Items: []string{in.LineItemID}, Time: now.UTC()}}}
	p.record(EventCancel, in.MessageID, by, now)
	return p
}

// AddEarlyCancellation adds another early cancellation of the record's own
// organisation to a kept record. A line item already kept, or one beyond
// MaxKeptItems, changes nothing (nil).
func AddEarlyCancellation(p *Prescription, by Actor, in CancelInput, now time.Time) *Prescription {
	if hasID(p.Pending.Items, in.LineItemID) || len(p.Pending.Items) >= MaxKeptItems {
		return nil
	}
	n := p.clone()
	n.Pending = n.Pending.clone()
	n.Pending.Items = append(n.Pending.Items, in.LineItemID)
	n.record(EventCancel, in.MessageID, by, now)
	return n
}

// MaxKeptItems bounds the line items one organisation's kept cancellations
// of one prescription ID name (an order has at most 4), so that no
// organisation can grow another's record.
const MaxKeptItems = 16

// KeepCancellation is the rule for a cancellation naming a prescription ID
// that is not a prescription of the cancelling organisation (by.Org): cur
// is what the ID's subject holds (nil: nothing; a record kept for early
// cancellations; or another organisation's prescription). Spine keeps a
// cancellation that arrives before its prescription and answers it R-0008
// (record.py set_pending_cancellation); the broker keeps it for the
// cancelling organisation alone, whatever else the subject holds, and the
// answer is always R-0008, so that it tells nothing of another
// organisation's prescriptions or cancellations. The decision depends only
// on what that organisation kept before: the record to write, or nil when
// there is nothing new to keep (a line item it kept already, or one beyond
// MaxKeptItems).
func KeepCancellation(cur *Prescription, id string, by Actor, in CancelInput, now time.Time) *Prescription {
	switch {
	case cur == nil:
		return EarlyCancellation(id, by, in, now)
	case cur.IsEarlyCancellation() && cur.Prescriber == by.Org:
		return AddEarlyCancellation(cur, by, in, now)
	}
	i := slices.IndexFunc(cur.Kept, func(k KeptCancel) bool { return k.Org == by.Org })
	var k KeptCancel
	if i >= 0 {
		k = cur.Kept[i]
		if hasID(k.Items, in.LineItemID) || len(k.Items) >= MaxKeptItems {
			return nil
		}
	} else {
		k = KeptCancel{Org: by.Org, NHSNumber: in.NHSNumber, User: by.User, Reason: in.Reason, Time: now.UTC()}
	}
	k.Items = append(slices.Clone(k.Items), in.LineItemID)
	k.History = append(slices.Clone(k.History), Event{Time: now.UTC(), Type: EventCancel, MessageID: in.MessageID,
		Org: by.Org, User: by.User, Status: StatusCancelledFuture})
	n := cur.clone()
	n.Kept = slices.Clone(cur.Kept)
	if i >= 0 {
		n.Kept[i] = k
	} else {
		n.Kept = append(n.Kept, k)
	}
	return n
}

// IsEarlyCancellation reports whether p is only a kept cancellation, with
// no prescription yet.
func (p *Prescription) IsEarlyCancellation() bool {
	return p.BundleID == "" && p.Status == StatusCancelledFuture
}

// keptCancellations are every cancellation kept on record p, one per
// organisation: the early record's own (its Prescriber's) first.
func (p *Prescription) keptCancellations() []KeptCancel {
	var out []KeptCancel
	if p.IsEarlyCancellation() && p.Pending != nil {
		out = append(out, KeptCancel{Org: p.Prescriber, NHSNumber: p.NHSNumber, User: p.Pending.User, Reason: p.Pending.Reason,
			Items: p.Pending.Items, Time: p.Pending.Time, History: p.History})
	}
	return append(out, p.Kept...)
}

// ApplyEarlyCancellations makes the record of an arriving order over a
// record of kept cancellations: the order's record, with the cancellations
// its own organisation (created.Prescriber, the organisation that sent the
// order) kept for the same patient applied: their events first in its
// history and the cancelled items at 0005 (the prescription Cancelled when
// all are). Cancellations kept by any other organisation stay kept for that
// organisation (never applied, never in the history); the order's own
// organisation's naming another patient are dropped.
func ApplyEarlyCancellations(kept, created *Prescription, now time.Time) *Prescription {
	n := created.clone()
	var own []Event
	n.Kept = nil
	for _, k := range kept.keptCancellations() {
		if k.Org != n.Prescriber {
			n.Kept = append(n.Kept, k)
			continue
		}
		own = append(own, k.History...)
		if k.NHSNumber != n.NHSNumber {
			continue
		}
		by := Actor{User: k.User, Org: k.Org}
		for _, is := range n.issues() { // every issue of a repeat dispensing prescription
			applied := false
			for _, id := range k.Items {
				if i := is.itemIndex(id); i >= 0 && is.Items[i].Status == ItemToBeDispensed {
					is.Items[i].cancel(k.Reason)
					applied = true
				}
			}
			if applied {
				is.settleCancelled()
				n.recordFor(is, EventSubsequentCancel, "", by, now)
			}
		}
	}
	slices.SortStableFunc(own, func(a, b Event) int { return a.Time.Compare(b.Time) })
	n.History = append(own, n.History...)
	return n
}

// issues are pointers to every issue of p, in issue order, to change in
// place.
func (p *Prescription) issues() []*Issue {
	out := make([]*Issue, 0, p.IssueCount())
	out = append(out, &p.Issue)
	for i := range p.Others {
		out = append(out, &p.Others[i])
	}
	slices.SortStableFunc(out, func(a, b *Issue) int { return a.Number - b.Number })
	return out
}

// Scheduled is the time-driven transition due for a prescription at now, if
// any (the first, when several are): EventReady (a post-dated prescription
// whose date has come, or a repeat dispensing issue whose nominated download
// date has), EventAwaiting (the next repeat dispensing issue, once the
// current one is complete), EventExpire (validity ended), EventNoClaim (not
// claimed in time); "" when none is due. Each issue's next activity and its
// date are Spine's (next_activity_generator.py, see issueNext).
func Scheduled(p *Prescription, now time.Time) string {
	ev, _ := due(p, now)
	return ev
}

// due is the first scheduled transition due at now and the issue it is of.
func due(p *Prescription, now time.Time) (string, int) {
	if next := p.nextIssue(); next != nil && next.Status == StatusRepeatFuture && Complete(p.Status) {
		// record.py release_next_instance: the issue after a completed one
		// follows whatever its dates (its own next activity then decides).
		return EventAwaiting, next.Number
	}
	for _, is := range p.issues() {
		if ev, at := issueNext(p, is); ev != "" && !now.Before(at) {
			return ev, is.Number
		}
	}
	return "", 0
}

// issueNext is the next activity of issue is and the time it falls due
// (the start of its date: Spine's next activity dates are dates, done by
// the batch on that day), "" when it has none (next_activity_generator.py
// next_activity_date; record.py _include_next_activity_for_instance):
//
//	9001              ready on the prescription date, unless that is not
//	                  before its expiry: then it expires (future_dated)
//	0000              ready on its nominated download date, unless that is
//	                  not before its expiry: then it expires
//	                  (awaiting_nominated_release)
//	0001, 0002, 9000  expires on its expiry date (un_dispensed)
//	0003              with a dispense notification: no-claim (0009) on the
//	                  last dispense date + 180 days; without one (a repeat
//	                  dispensing issue whose notifications were withdrawn):
//	                  expires (to 0006) on the earlier of that date, counted
//	                  from its release, and its expiry (part_dispensed)
//	0006              no-claim (0009) on its completion date + 180 days
//	                  (dispensed)
//	0007, 0004, 0005, 0008, 0009, 9005: none (their next activity is
//	                  Spine's deletion of the record, which the broker keeps)
//
// Of a repeat dispensing prescription only the current issue has these;
// issues before it only their no-claim, issues after it none (they follow
// the current one: release_next_instance, and an expiry expires them too).
func issueNext(p *Prescription, is *Issue) (string, time.Time) {
	cur := p.IssueNumber()
	if p.RepeatDispensing() && is.Number > cur {
		return "", time.Time{}
	}
	past := p.RepeatDispensing() && is.Number < cur
	readyOrExpire := func(ready time.Time) (string, time.Time) {
		if ready = Day(ready); ready.Before(is.ExpiresAt) {
			return EventReady, ready
		}
		return EventExpire, is.ExpiresAt
	}
	switch is.Status {
	case StatusFuture:
		if !past {
			return readyOrExpire(p.StartDate)
		}
	case StatusAwaitingReleaseReady:
		if !past {
			return readyOrExpire(is.AvailableAt)
		}
	case StatusToBeDispensed, StatusWithDispenser, StatusRepeatFuture:
		if !past && !is.ExpiresAt.IsZero() {
			return EventExpire, is.ExpiresAt
		}
	case StatusWithDispenserActive:
		if is.latestDispense() >= 0 {
			return EventNoClaim, WithDispenserLimit(is.LastDispense)
		}
		if past {
			break
		}
		last := is.LastDispense
		if last.IsZero() {
			last = is.Released
		}
		at := is.ExpiresAt
		if limit := WithDispenserLimit(last); !last.IsZero() && (at.IsZero() || limit.Before(at)) {
			at = limit
		}
		if !at.IsZero() {
			return EventExpire, at
		}
	case StatusDispensed:
		if !is.Completed.IsZero() {
			return EventNoClaim, NoClaimAt(is.Completed)
		}
	}
	return "", time.Time{}
}

// NextDue is the earliest time a scheduled transition may become due for p
// (zero when none can): the scheduler looks only at prescriptions whose
// time has come.
func NextDue(p *Prescription) time.Time {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if next := p.nextIssue(); next != nil && next.Status == StatusRepeatFuture && Complete(p.Status) {
		earliest(p.Created) // due now
	}
	for _, is := range p.issues() {
		if ev, t := issueNext(p, is); ev != "" {
			earliest(t)
		}
	}
	return at
}

// NominationChange is the patient's nomination as it was last changed:
// the dispenser (ODS, "" when the nomination was removed) and when. Repeat
// dispensing issues that become available after the change follow it.
type NominationChange struct {
	ODS  string
	Time time.Time
}

// ApplyScheduled applies every transition Scheduled says is due (so a
// prescription that fell due while no broker ran catches up in one write);
// nil when none is (so a scheduler that runs twice, or on two brokers,
// changes nothing the second time). follow, when not nil, is the patient's
// latest nomination change: a repeat dispensing issue that becomes
// available goes to that dispenser if the change is newer than the
// prescription.
func ApplyScheduled(p *Prescription, now time.Time, follow *NominationChange) *Prescription {
	var n *Prescription
	cur := p
	for range 2*cur.IssueCount() + 8 { // each step moves an issue on; bounded all the same
		ev, num := due(cur, now)
		if ev == "" {
			break
		}
		next := applyDue(cur, ev, num, now, follow)
		if next == nil {
			break // a damaged record names an issue it does not hold
		}
		cur, n = next, next
	}
	return n
}

// systemActor is who applies the scheduled transitions.
var systemActor = Actor{User: "epsbroker", Org: "EPS"}

// applyDue applies scheduled transition ev to issue num; nil when the
// record does not hold issue num (only a damaged or foreign record).
func applyDue(p *Prescription, ev string, num int, now time.Time, follow *NominationChange) *Prescription {
	switch ev {
	case EventAwaiting:
		// The next issue becomes the current one.
		n, ok := p.AtIssue(num)
		if !ok {
			return nil
		}
		n.Status = StatusAwaitingReleaseReady
		n.record(ev, "", systemActor, now)
		return n
	case EventExpire:
		return expireFrom(p, num, now)
	}
	n := p.clone()
	is := n.issue(num)
	if is == nil {
		return nil
	}
	switch ev {
	case EventReady:
		is.Status = StatusToBeDispensed
		if n.RepeatDispensing() && is.Number > 1 && follow != nil && follow.Time.After(n.Created) && follow.ODS != is.Nominated {
			// The patient changed their nomination since the prescription
			// was made: this issue goes to the new dispenser.
			is.Nominated, is.NominationSource = follow.ODS, NominationFromRegistry
			if follow.ODS == "" {
				is.NominationSource = NominationNone
			}
		}
	case EventNoClaim:
		// record.py _create_no_claim: No-Claimed, items as they are, and the
		// issue complete (a part-dispensed one too).
		is.Status = StatusNoClaimed
		is.Completed = now.UTC()
	}
	n.recordFor(is, ev, "", systemActor, now)
	return n
}

// expireFrom expires issue num and every issue after it, and makes the last
// issue the current one, as Spine expires a repeat dispensing prescription
// (record.py perform_instance_specific_updates, NEXTACTIVITY_EXPIRE: "we
// must expire all subsequent issues as well"; issue.py expire). The later
// issues' events go first, so that the last event is about the issue a
// dispenser may hold.
func expireFrom(p *Prescription, num int, now time.Time) *Prescription {
	n := p.clone()
	target := n.issue(num)
	if target == nil {
		return nil
	}
	for _, is := range n.issues() {
		if is != target && is.Number > target.Number && is.expire(now) {
			n.recordFor(is, EventExpire, "", systemActor, now)
		}
	}
	target.expire(now)
	n.recordFor(target, EventExpire, "", systemActor, now)
	if last := n.IssueCount(); n.RepeatDispensing() && last > n.IssueNumber() {
		n, _ = n.AtIssue(last)
	}
	return n
}

// expire moves the issue to its expired status and its line items to
// theirs (statuses.py PrescriptionStatus.EXPIRY_LOOKUP and
// LineItemStatus.EXPIRY_LOOKUP): 0000, 0001, 0002, 9000, 9001 and 9005
// become Expired (0004), a part-dispensed issue (0003) Dispensed (0006);
// items to be dispensed or with the dispenser become Expired (0006), a
// partly dispensed item Dispensed (0001), an owed one Not Dispensed (0002).
// A completed issue keeps its status. It reports whether the status changed.
func (is *Issue) expire(now time.Time) bool {
	was := is.Status
	switch was {
	case StatusAwaitingReleaseReady, StatusToBeDispensed, StatusWithDispenser, StatusRepeatFuture, StatusFuture, StatusCancelledFuture:
		is.Status = StatusExpired
	case StatusWithDispenserActive:
		is.Status = StatusDispensed
		is.Completed = now.UTC()
	}
	for i := range is.Items {
		switch is.Items[i].Status {
		case ItemToBeDispensed, ItemWithDispenser:
			is.Items[i].Status = ItemExpired
		case ItemPartiallyDispensed:
			is.Items[i].Status = ItemFullyDispensed
		case ItemNotDispensedOwing:
			is.Items[i].Status = ItemNotDispensed
		}
	}
	if is.Status != was {
		is.Pending = nil // nothing is left to cancel
	}
	return is.Status != was
}
