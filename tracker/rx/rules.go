package rx

import (
	"fmt"
	"strings"
)

// This file holds the prescription rules the services apply around a
// transition: whether the prescription exists, which repeat dispensing
// issue a message is about, whether a message was applied before (the same
// message again changes nothing), the NHS number check (R-5000), the holder
// check and the line items a dispense notification must name. Each is
// written here once; the services call them.

// CodeItemNotFound is Spine's ITEM_NOT_FOUND (EveryItemNamed).
const CodeItemNotFound = "ITEM_NOT_FOUND"

// notFound is the one RESOURCE_NOT_FOUND refusal of the domain core:
// invalid (HTTP 400), as the EPS specification answers a release (and any
// dispensing message) about a prescription it does not know, or knows only
// a cancellation of. Every not found of the core is about such a message;
// a read of an unknown prescription (the tracker's RequestGroup/{id}, 404)
// is the HTTP layer's answer, not a prescription rule.
func notFound(format string, a ...any) *Error {
	return Errorf(KindInvalid, CodeResourceNotFound, format, a...)
}

// NotFound is RESOURCE_NOT_FOUND for a message about prescription id.
func NotFound(id string) *Error { return notFound("prescription %s not found", id) }

// IsNotFound reports whether err is a refusal for want of the prescription
// (any of notFound's).
func IsNotFound(err error) bool { return CodeOf(err) == CodeResourceNotFound }

// NHSNumberMatches reports whether nhs is the NHS number of the
// prescription's patient (record.py check_nhs_number_match).
func (p *Prescription) NHSNumberMatches(nhs string) bool { return p.NHSNumber == nhs }

// SameNHSNumber is R-5000: a withdraw, dispense notification or
// cancellation must name the NHS number of the prescription's patient (when
// the message names one: returns and claims carry none to Spine, so their
// NHS number is not compared and "" passes). The answer is INVALID_VALUE
// with the R-code (Error.RCode).
func SameNHSNumber(p *Prescription, nhs string) error {
	if nhs == "" || p.NHSNumberMatches(nhs) {
		return nil
	}
	return &Error{Kind: KindInvalid, Code: CodeInvalidValue, RCode: RMismatch,
		Message: fmt.Sprintf("%s: the message's NHS number does not match prescription %s", RMismatch, p.ID)}
}

// HeldBy checks that dispenser holds the prescription: INVALID_STATE_TRANSITION
// otherwise. A service checks it before anything else of a dispenser's
// message is compared with the prescription, so that a dispenser cannot
// probe another's prescription (e.g. its NHS number).
func HeldBy(p *Prescription, dispenser string) error {
	return holder(p, dispenser, "this is accepted")
}

// holder is HeldBy's check, in the words of what is refused.
func holder(p *Prescription, dispenser, what string) error {
	if p.Dispenser == "" || p.Dispenser != dispenser {
		return invalidTransition(p, "%s only by the dispenser that holds it", what)
	}
	return nil
}

// EveryItemNamed is Spine's rule (common/prescription/record.py
// compare_line_items_for_dispense): the set of line items a dispense
// notification names must be the set of the issue's line items, no fewer
// and no other (compared without regard to case); ITEM_NOT_FOUND otherwise.
func EveryItemNamed(p *Prescription, lineItems []string) error {
	stored, passed := map[string]bool{}, map[string]bool{}
	for _, it := range p.Items {
		stored[strings.ToLower(it.ID)] = true
	}
	for _, id := range lineItems {
		passed[strings.ToLower(id)] = true
	}
	same := len(stored) == len(passed)
	for id := range passed {
		if !stored[id] {
			same = false
		}
	}
	if same {
		return nil
	}
	return Errorf(KindInvalid, CodeItemNotFound, "the dispense notification must name every line item of prescription %s, and no other (it names %d, the prescription has %d)",
		p.ID, len(passed), len(stored))
}

// DispenseOutcomes are the dispense outcomes of a notification stating
// line item statuses stated: an item it states cancelled (0005) must be
// cancelled in the issue (INVALID_STATE_TRANSITION otherwise); it is not a
// dispense outcome, and it changes nothing, so it is left out.
func DispenseOutcomes(p *Prescription, stated map[string]ItemStatus) (map[string]ItemStatus, error) {
	items := map[string]ItemStatus{}
	for id, st := range stated {
		if st == ItemCancelled {
			for _, it := range p.Items {
				if it.ID == id && it.Status != ItemCancelled {
					return nil, Errorf(KindInvalid, CodeInvalidStateTransition, "line item %s is not cancelled", id)
				}
			}
			continue
		}
		items[id] = st
	}
	return items, nil
}

// The same message again changes nothing: these say whether a message was
// applied before.

// ReleasedTo reports whether the issue was released to dispenser and is
// still with it, untouched since (0002): a release by ID from that
// dispenser again is a retry, answered with the prescription again.
func (is *Issue) ReleasedTo(dispenser string) bool {
	return is.Status == StatusWithDispenser && is.Dispenser == dispenser
}

// HasDispense reports whether dispense notification id was applied to the
// issue.
func (is *Issue) HasDispense(id string) bool {
	for _, d := range is.Dispenses {
		if d.ID == id {
			return true
		}
	}
	return false
}

// HasClaim reports whether claim id is the issue's claim.
func (is *Issue) HasClaim(id string) bool { return is.ClaimID != "" && is.ClaimID == id }

// Which issue of a repeat dispensing prescription a message is about.

// issueAbout is the issue of a repeat dispensing prescription a message is
// about: the one it names; when it names none, the latest issue that the
// message fits (about says so), so that a message about issue n still
// finds it after issue n + 1 has become current; else the current issue
// (0). For any other prescription, the number it names (which OnIssue
// ignores).
func (p *Prescription) issueAbout(named int, about func(is *Issue) bool) int {
	if named != 0 || !p.RepeatDispensing() {
		return named
	}
	issues := p.Issues()
	for i := len(issues) - 1; i >= 0; i-- {
		if about(&issues[i]) {
			return issues[i].Number
		}
	}
	return 0
}

// ReturnIssue is the issue a return from dispenser is about (named: the
// issue the message names, 0 when none): the latest issue with that
// dispenser (0002).
func ReturnIssue(p *Prescription, named int, dispenser string) int {
	return p.issueAbout(named, func(is *Issue) bool { return is.ReleasedTo(dispenser) })
}

// WithdrawIssue is the issue a withdraw of dispense notification
// notification is about: the issue holding that notification.
func WithdrawIssue(p *Prescription, named int, notification string) int {
	return p.issueAbout(named, func(is *Issue) bool { return is.HasDispense(notification) })
}

// DispenseIssue is the issue dispense notification id (amending
// replacementOf, "" when none) from dispenser is about: the issue holding
// the notification or the one it amends, else the latest issue with that
// dispenser (0002 or 0003).
func DispenseIssue(p *Prescription, named int, dispenser, id, replacementOf string) int {
	return p.issueAbout(named, func(is *Issue) bool {
		return is.HasDispense(id) || (replacementOf != "" && is.HasDispense(replacementOf)) ||
			(is.Dispenser == dispenser && (is.Status == StatusWithDispenser || is.Status == StatusWithDispenserActive))
	})
}

// ClaimIssue is the issue claim id (amending replacementOf, "" when none)
// from dispenser is about: the issue the claim or the one it amends is of,
// else the latest issue that dispenser dispensed (0006) or did not (0007).
func ClaimIssue(p *Prescription, named int, dispenser, id, replacementOf string) int {
	return p.issueAbout(named, func(is *Issue) bool {
		return is.HasClaim(id) || is.HasClaim(replacementOf) ||
			(is.Dispenser == dispenser && (is.Status == StatusDispensed || is.Status == StatusNotDispensed))
	})
}
