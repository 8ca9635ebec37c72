package rx

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestNotFound(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"NotFound", NotFound("X"), true},
		{"wrapped", fmt.Errorf("release: %w", NotFound("X")), true},
		{"a release of an early cancellation", func() error { _, err := Release(earlyCancelled(), "FA565", pharmacy, "r", false, t0); return err }(), true},
		{"invalid state transition", invalidTransition(fresh(), "no"), false},
		{"another error", errors.New("prescription X not found"), false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsNotFound(tc.err); got != tc.want {
				t.Errorf("IsNotFound(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// Every RESOURCE_NOT_FOUND of the domain core is one refusal: invalid
// (HTTP 400), as the EPS specification answers a message about a
// prescription it does not know (or is not ready to release from a queue).
func TestNotFoundOneRefusal(t *testing.T) {
	fresh := fresh()
	overdue := func() error {
		_, err := Release(fresh, "FA565", pharmacy, "x", true, fresh.ExpiresAt)
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		kind Kind
		msg  string
	}{
		{"a message about it: NotFound", NotFound("X"), KindInvalid, "prescription X not found"},
		{"a release by ID of an early cancellation", func() error { _, err := Release(earlyCancelled(), "FA565", pharmacy, "r", false, t0); return err }(),
			KindInvalid, "prescription 24F5DA-A83008-7EFE6Z not found"},
		{"a nominated release of an overdue one (passed over)", overdue(),
			KindInvalid, "prescription " + fresh.ID + " is no longer ready: it expired on " + fresh.ExpiresAt.Format("2006-01-02")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *Error
			if !errors.As(tc.err, &e) {
				t.Fatalf("%v: not an *Error", tc.err)
			}
			if e.Kind != tc.kind || e.Code != CodeResourceNotFound || e.Message != tc.msg {
				t.Errorf("%+v, want kind %d RESOURCE_NOT_FOUND %q", e, tc.kind, tc.msg)
			}
		})
	}
}

// earlyCancelled is the record of a cancellation that came before its order.
func earlyCancelled() *Prescription {
	return KeepCancellation(nil, "24F5DA-A83008-7EFE6Z", gp, CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}, t0)
}

// R-5000: a message naming an NHS number must name the patient's; one that
// names none (a return, a claim) is not compared.
func TestSameNHSNumber(t *testing.T) {
	p := fresh()
	for _, tc := range []struct {
		name, nhs string
		refused   bool
	}{
		{"the patient's", "9449305552", false},
		{"none named", "", false},
		{"another patient's", "9449304130", true},
		{"not an NHS number", "x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := SameNHSNumber(p, tc.nhs)
			if (err != nil) != tc.refused {
				t.Fatalf("SameNHSNumber(%q) = %v, want refused %v", tc.nhs, err, tc.refused)
			}
			var e *Error
			if tc.refused && (!errors.As(err, &e) || e.Kind != KindInvalid || e.Code != CodeInvalidValue || e.RCode != RMismatch) {
				t.Errorf("refusal %+v, want INVALID_VALUE with R-5000", err)
			}
		})
	}
	// A cancellation always names one (the facade requires it), compared
	// the same way: R-5000 as its answer.
	if _, code := Cancel(p, gp, CancelInput{MessageID: "c", NHSNumber: "9449304130", LineItemID: "i1", Reason: "0001"}, t0); code != RMismatch {
		t.Errorf("cancel for another patient: %s, want R-5000", code)
	}
}

func TestHeldBy(t *testing.T) {
	r := released(t)
	for _, tc := range []struct {
		name      string
		p         *Prescription
		dispenser string
		ok        bool
	}{
		{"the holder", r, "FA565", true},
		{"another dispenser", r, "FCG71", false},
		{"nobody holds it", fresh(), "FA565", false},
		{"nobody, asked by nobody", fresh(), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := HeldBy(tc.p, tc.dispenser)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantInvalid(t, err)
		})
	}
}

// compare_line_items_for_dispense: exactly the issue's line items, without
// regard to case.
func TestEveryItemNamed(t *testing.T) {
	p := fresh() // items i1, i2
	for _, tc := range []struct {
		name  string
		items []string
		ok    bool
	}{
		{"every item", []string{"i1", "i2"}, true},
		{"in another order", []string{"i2", "i1"}, true},
		{"in another case", []string{"I1", "i2"}, true},
		{"one named twice", []string{"i1", "i2", "I2"}, true},
		{"one missing", []string{"i1"}, false},
		{"another item", []string{"i1", "i3"}, false},
		{"one more", []string{"i1", "i2", "i3"}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := EveryItemNamed(p, tc.items)
			var e *Error
			switch {
			case tc.ok && err != nil:
				t.Fatal(err)
			case !tc.ok && (!errors.As(err, &e) || e.Code != CodeItemNotFound || e.Kind != KindInvalid):
				t.Fatalf("err = %v, want ITEM_NOT_FOUND", err)
			}
		})
	}
}

// An item a notification states cancelled must be cancelled, and is left
// out of the outcomes.
func TestDispenseOutcomes(t *testing.T) {
	r := released(t)
	cancelled, _ := Cancel(fresh(), gp, CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: "i2", Reason: "0001"}, t0)
	cancelled = must(Release(cancelled, "FA565", pharmacy, "r", true, t0))
	for _, tc := range []struct {
		name   string
		p      *Prescription
		stated map[string]ItemStatus
		want   map[string]ItemStatus // nil: refused
	}{
		{"outcomes only", r, map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemNotDispensed}, map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemNotDispensed}},
		{"a cancelled item stated cancelled: left out", cancelled, map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemCancelled}, map[string]ItemStatus{"i1": ItemFullyDispensed}},
		{"an item stated cancelled that is not", r, map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemCancelled}, nil},
		{"an unknown item stated cancelled: left out", r, map[string]ItemStatus{"i1": ItemFullyDispensed, "i9": ItemCancelled}, map[string]ItemStatus{"i1": ItemFullyDispensed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DispenseOutcomes(tc.p, tc.stated)
			if tc.want == nil {
				wantInvalid(t, err)
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("%v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

// The same message again changes nothing: what says that a message was
// applied before.
func TestReplays(t *testing.T) {
	r := released(t)
	d := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn1", Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemFullyDispensed}}, t0.Add(2*time.Hour)))
	c := must(Claim(d, "FA565", pharmacy, "c1", "", t0.Add(3*time.Hour)))
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"released to it: a release again is a retry", r.ReleasedTo("FA565"), true},
		{"released to another", r.ReleasedTo("FCG71"), false},
		{"dispensing began: no longer a retry", d.ReleasedTo("FA565"), false},
		{"not released", fresh().ReleasedTo("FA565"), false},
		{"the notification applied", d.HasDispense("dn1"), true},
		{"another notification", d.HasDispense("dn2"), false},
		{"no notification yet", r.HasDispense("dn1"), false},
		{"the claim applied", c.HasClaim("c1"), true},
		{"another claim", c.HasClaim("c2"), false},
		{"no claim yet", d.HasClaim("c1"), false},
		{"no claim, no id", d.HasClaim(""), false},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// Which issue of a repeat dispensing prescription a message is about: the
// one it names; else the latest the message fits (so that a message about
// issue 1 finds it after issue 2 has become current); else the current one
// (0). Any other prescription: the number named.
func TestWhichIssue(t *testing.T) {
	one := dispensed(erd(3, 28), t0.Add(time.Hour)) // issue 1 dispensed by FA565
	dn1 := one.Dispenses[0].ID
	two := must(Release(ApplyScheduled(one, t0.AddDate(0, 0, 21), nil), "FA565", pharmacy, "rel2", true, t0.AddDate(0, 0, 21)))
	claimed := must(OnIssue(two, 1, func(cur *Prescription) (*Prescription, error) {
		return Claim(cur, "FA565", pharmacy, "c1", "", t0.AddDate(0, 0, 22))
	}))
	acute := released(t)
	if two.IssueNumber() != 2 || two.Status != StatusWithDispenser {
		t.Fatalf("setup: issue %d %s, want issue 2 with dispenser", two.IssueNumber(), two.Status)
	}
	for _, tc := range []struct {
		name string
		got  int
		want int
	}{
		{"return: the issue with the dispenser", ReturnIssue(two, 0, "FA565"), 2},
		{"return from another dispenser: the current issue", ReturnIssue(two, 0, "FCG71"), 0},
		{"return naming issue 3", ReturnIssue(two, 3, "FA565"), 3},
		{"return of an acute prescription", ReturnIssue(acute, 0, "FA565"), 0},
		{"return of an acute prescription naming an issue", ReturnIssue(acute, 7, "FA565"), 7},
		{"withdraw: the issue holding the notification", WithdrawIssue(two, 0, dn1), 1},
		{"withdraw of an unknown notification", WithdrawIssue(two, 0, "dn-x"), 0},
		{"withdraw naming issue 2", WithdrawIssue(two, 2, dn1), 2},
		{"dispense: the issue with the dispenser", DispenseIssue(two, 0, "FA565", "dn-new", ""), 2},
		{"dispense again: the issue holding it", DispenseIssue(two, 0, "FCG71", dn1, ""), 1},
		{"the latest fitting issue first: the one with the dispenser", DispenseIssue(two, 0, "FA565", dn1, ""), 2},
		{"amendment: the issue holding the one amended", DispenseIssue(two, 0, "FCG71", "dn-new", dn1), 1},
		{"dispense from another dispenser", DispenseIssue(two, 0, "FCG71", "dn-new", ""), 0},
		{"claim: the issue the dispenser dispensed", ClaimIssue(two, 0, "FA565", "c1", ""), 1},
		{"claim again: the issue claimed", ClaimIssue(claimed, 0, "FCG71", "c1", ""), 1},
		{"claim amendment: the issue of the claim amended", ClaimIssue(claimed, 0, "FCG71", "c2", "c1"), 1},
		{"claim from another dispenser", ClaimIssue(two, 0, "FCG71", "c1", ""), 0},
		{"claim naming issue 3", ClaimIssue(two, 3, "FA565", "c1", ""), 3},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: issue %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestCancelCodes(t *testing.T) {
	for _, tc := range []struct {
		code    CancelCode
		display string
		refusal bool
	}{
		{RCancelled, "Prescription/item was cancelled", false},
		{RPendingWith, "Prescription/item was not cancelled. With dispenser. Marked for cancellation", false},
		{RPendingActive, "Prescription/item was not cancelled. With dispenser active. Marked for cancellation", false},
		{RDispensed, "Prescription/item was not cancelled. Prescription has been dispensed.", false},
		{RExpired, "Prescription/item has expired", false},
		{RAlreadyCancelled, "Prescription/item had already been cancelled", false},
		{RRequestedByAnother, "Prescription/item cancellation requested by another prescriber", false},
		{RNotFound, "Prescription/item not found", true},
		{RDisabled, "Cancellation functionality disabled in SPINE", true},
		{RNotDispensed, "Prescription/item was not cancelled. Prescription has been not dispensed.", false},
		{RMismatch, "Unable to process message. Information missing or invalid - Mismatch between prescription and cancellation NHSNumber", true},
		{RInvalid, "Invalid Message.", true},
		{"R-9999", "", false},
	} {
		if tc.code.Display() != tc.display || tc.code.Refusal() != tc.refusal || tc.code.Valid() != (tc.display != "") {
			t.Errorf("%s: %q refusal %v, want %q refusal %v", tc.code, tc.code.Display(), tc.code.Refusal(), tc.display, tc.refusal)
		}
	}
}
