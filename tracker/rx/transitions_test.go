package rx

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

var (
	t0       = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	gp       = Actor{User: "gp", Org: "A83008"}
	pharmacy = Actor{User: "pharmacist", Org: "FA565"}
	other    = Actor{User: "other", Org: "FCG71"}
)

// fresh is a new nominated prescription of two items, To Be Dispensed.
func fresh() *Prescription {
	o := &Order{PrescriptionID: "24F5DA-A83008-7EFE6Z", BundleID: "b1", NHSNumber: "9449305552", Sender: "A83008",
		SiteType: "P1", Performer: "FA565", ValidityStart: t0, TherapyType: TherapyAcute,
		Items: []OrderItem{{ID: "i1"}, {ID: "i2"}}}
	return Create(o, gp, t0)
}

// must is the record of a transition that must succeed (a failure panics,
// which fails the test with the error).
func must(p *Prescription, err error) *Prescription {
	if err != nil {
		panic(err)
	}
	return p
}

func released(_ *testing.T) *Prescription {
	return must(Release(fresh(), "FA565", pharmacy, "rel-1", true, t0.Add(time.Hour)))
}

func items(p *Prescription) string {
	s := ""
	for _, it := range p.Items {
		s += string(it.Status) + " "
	}
	return s[:len(s)-1]
}

func wantInvalid(t *testing.T, err error) {
	t.Helper()
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != CodeInvalidStateTransition || fe.Kind != KindInvalid {
		t.Fatalf("err = %v, want INVALID_STATE_TRANSITION", err)
	}
}

// snapshotJSON lets tests check that a transition never changes its input.
func snapshotJSON(p *Prescription) string { b, _ := json.Marshal(p); return string(b) }

func TestRelease(t *testing.T) {
	p := fresh()
	before := snapshotJSON(p)
	r := must(Release(p, "FA565", pharmacy, "rel-1", true, t0))
	if r.Status != StatusWithDispenser || r.Dispenser != "FA565" || items(r) != "0008 0008" || r.History[1].Type != EventNominatedRelease {
		t.Errorf("released: %s %s %s %+v", r.Status, r.Dispenser, items(r), r.History)
	}
	if snapshotJSON(p) != before {
		t.Error("Release changed its input")
	}
	if _, err := Release(p, "FCG71", other, "x", true, t0); err == nil {
		t.Error("nominated release by a dispenser it is not nominated to")
	}
	byID := must(Release(p, "FCG71", other, "x", false, t0))
	if byID.Dispenser != "FCG71" || byID.History[1].Type != EventRelease {
		t.Errorf("release by ID: %+v", byID)
	}
	_, err := Release(r, "FCG71", other, "x", false, t0)
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != CodePrescriptionWithAnother || fe.Org != "FA565" || fe.Kind != KindInvalid {
		t.Errorf("release held by another: %v", err)
	}
	// The answer names the holder in a contained Organization: fhir
	// TestRxErrorOutcome.
	wantInvalid(t, func() error { _, err := Release(r, "FA565", pharmacy, "x", false, t0); return err }())
	for _, st := range []Status{StatusCancelled, StatusExpired, StatusFuture, StatusDispensed, StatusClaimed, StatusRepeatFuture} {
		q := fresh()
		q.Status = st
		_, err := Release(q, "FA565", pharmacy, "x", false, t0)
		wantInvalid(t, err)
	}
}

func TestReturn(t *testing.T) {
	r := released(t)
	back := must(Return(r, "FA565", pharmacy, "ret-1", t0))
	if back.Status != StatusToBeDispensed || back.Nominated != "" || back.Dispenser != "" || items(back) != "0007 0007" || back.Ready() {
		t.Errorf("returned: %s nominated %q dispenser %q %s ready %v", back.Status, back.Nominated, back.Dispenser, items(back), back.Ready())
	}
	_, err := Return(r, "FCG71", other, "x", t0)
	wantInvalid(t, err)
	_, err = Return(fresh(), "FA565", pharmacy, "x", t0)
	wantInvalid(t, err)
	// After a return it can only be released by ID, by anyone.
	if _, err := Release(back, "FA565", pharmacy, "x", true, t0); err == nil {
		t.Error("nominated release after a return")
	}
	must(Release(back, "FCG71", other, "x", false, t0))
}

func TestDispenseAmendWithdraw(t *testing.T) {
	r := released(t)
	part := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn-1", Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemNotDispensedOwing}}, t0))
	if part.Status != StatusWithDispenserActive || items(part) != "0001 0004" {
		t.Errorf("partial: %s %s", part.Status, items(part))
	}
	full := must(Dispense(part, "FA565", pharmacy, DispenseInput{ID: "dn-2", Items: map[string]ItemStatus{"i2": ItemFullyDispensed}}, t0.Add(time.Hour)))
	if full.Status != StatusDispensed || items(full) != "0001 0001" || full.Completed.IsZero() {
		t.Errorf("complete: %s %s", full.Status, items(full))
	}
	// Amend the latest: i2 not dispensed after all.
	amended := must(Dispense(full, "FA565", pharmacy, DispenseInput{ID: "dn-3", ReplacementOf: "dn-2", Items: map[string]ItemStatus{"i2": ItemNotDispensed}}, t0))
	if amended.Status != StatusDispensed || items(amended) != "0001 0002" {
		t.Errorf("amended: %s %s", amended.Status, items(amended))
	}
	_, err := Dispense(amended, "FA565", pharmacy, DispenseInput{ID: "dn-4", ReplacementOf: "dn-1", Items: map[string]ItemStatus{"i1": ItemNotDispensed}}, t0)
	wantInvalid(t, err) // not the latest
	// Withdraw the latest (dn-3): back to the state before dn-2 (part dispensed).
	w := must(Withdraw(amended, "FA565", pharmacy, "dn-3", "wd-1", t0))
	if w.Status != StatusWithDispenserActive || items(w) != "0001 0004" {
		t.Errorf("withdrawn: %s %s", w.Status, items(w))
	}
	_, err = Withdraw(w, "FA565", pharmacy, "dn-3", "wd-2", t0)
	wantInvalid(t, err) // already withdrawn
	w2 := must(Withdraw(w, "FA565", pharmacy, "dn-1", "wd-3", t0))
	if w2.Status != StatusWithDispenser || items(w2) != "0008 0008" {
		t.Errorf("withdrawn to release: %s %s", w2.Status, items(w2))
	}
	// Not dispensed at all: 0007.
	nd := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn-9", Items: map[string]ItemStatus{"i1": ItemNotDispensed, "i2": ItemNotDispensed}}, t0))
	if nd.Status != StatusNotDispensed {
		t.Errorf("not dispensed: %s", nd.Status)
	}
	// Illegal: before release, by another dispenser, unknown item, bad status.
	for name, f := range map[string]func() error{
		"before release": func() error {
			_, err := Dispense(fresh(), "FA565", pharmacy, DispenseInput{ID: "x", Items: map[string]ItemStatus{"i1": "0001"}}, t0)
			return err
		},
		"another": func() error {
			_, err := Dispense(r, "FCG71", other, DispenseInput{ID: "x", Items: map[string]ItemStatus{"i1": "0001"}}, t0)
			return err
		},
		"unknown item": func() error {
			_, err := Dispense(r, "FA565", pharmacy, DispenseInput{ID: "x", Items: map[string]ItemStatus{"i9": "0001"}}, t0)
			return err
		},
		"not an outcome": func() error {
			_, err := Dispense(r, "FA565", pharmacy, DispenseInput{ID: "x", Items: map[string]ItemStatus{"i1": "0007"}}, t0)
			return err
		},
		"no items":         func() error { _, err := Dispense(r, "FA565", pharmacy, DispenseInput{ID: "x"}, t0); return err },
		"withdraw unknown": func() error { _, err := Withdraw(part, "FA565", pharmacy, "nope", "x", t0); return err },
	} {
		t.Run(name, func(t *testing.T) { wantInvalid(t, f()) })
	}
}

func TestWithdrawRepeatDispensingStopsAtActive(t *testing.T) {
	p := fresh()
	p.TherapyType = TherapyRepeatDispensing
	r := must(Release(p, "FA565", pharmacy, "x", true, t0))
	d := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn-1", Items: map[string]ItemStatus{"i1": "0001", "i2": "0001"}}, t0))
	w := must(Withdraw(d, "FA565", pharmacy, "dn-1", "wd", t0))
	if w.Status != StatusWithDispenserActive {
		t.Errorf("eRD withdraw went back to %s, want 0003", w.Status)
	}
}

func TestClaim(t *testing.T) {
	d := must(Dispense(released(t), "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": "0001", "i2": "0001"}}, t0))
	c := must(Claim(d, "FA565", pharmacy, "claim-1", "", t0))
	if c.Status != StatusClaimed || c.ClaimID != "claim-1" {
		t.Errorf("claimed: %s", c.Status)
	}
	c2 := must(Claim(c, "FA565", pharmacy, "claim-2", "claim-1", t0))
	if c2.ClaimID != "claim-2" || c2.Status != StatusClaimed {
		t.Errorf("amended claim: %+v", c2)
	}
	for name, f := range map[string]func() error{
		"before dispense":     func() error { _, err := Claim(released(t), "FA565", pharmacy, "c", "", t0); return err },
		"by another":          func() error { _, err := Claim(d, "FCG71", other, "c", "", t0); return err },
		"twice":               func() error { _, err := Claim(c, "FA565", pharmacy, "c3", "", t0); return err },
		"amend not the claim": func() error { _, err := Claim(c, "FA565", pharmacy, "c3", "nope", t0); return err },
		"withdraw after claim": func() error {
			_, err := Withdraw(c, "FA565", pharmacy, "dn", "w", t0)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) { wantInvalid(t, f()) })
	}
}

func TestCancel(t *testing.T) {
	in := func(item string) CancelInput {
		return CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: item, Reason: "0001"}
	}
	// Before release: R-0001, item by item; the prescription is Cancelled
	// when both are.
	one, code := Cancel(fresh(), gp, in("i1"), t0)
	if code != RCancelled || items(one) != "0005 0007" || one.Status != StatusToBeDispensed {
		t.Fatalf("first item: %s %v", code, one)
	}
	both, code := Cancel(one, gp, in("i2"), t0)
	if code != RCancelled || both.Status != StatusCancelled || both.Ready() {
		t.Errorf("second item: %s %s", code, both.Status)
	}
	if _, code := Cancel(both, gp, in("i1"), t0); code != RAlreadyCancelled {
		t.Errorf("twice: %s", code)
	}
	// Post-dated: Cancelled (0005) as any other (record.py
	// process_instance_cancellation; 9005 is only a cancellation that came
	// before its prescription).
	fut := fresh()
	fut.Status = StatusFuture
	fut, _ = Cancel(fut, gp, in("i1"), t0)
	fut, _ = Cancel(fut, gp, in("i2"), t0)
	if fut.Status != StatusCancelled {
		t.Errorf("future: %s", fut.Status)
	}
	// With the dispenser: R-0002, marked; applied on return.
	r := released(t)
	marked, code := Cancel(r, gp, in("i1"), t0)
	if code != RPendingWith || marked.Pending == nil || marked.Status != StatusWithDispenser {
		t.Fatalf("after release: %s %+v", code, marked)
	}
	// record.py check_pending_cancellation_unique_w_disp: the same line
	// item asked for by another organisation is R-0007; another line item
	// is a cancellation of its own; the organisation counts, not the user.
	if _, code := Cancel(marked, other, in("i1"), t0); code != RRequestedByAnother {
		t.Errorf("another organisation, the same item: %s", code)
	}
	if n, code := Cancel(marked, other, in("i2"), t0); code != RPendingWith || n == nil || n.Pending.orgOf("i2") != other.Org || n.Pending.orgOf("i1") != gp.Org {
		t.Errorf("another organisation, another item: %s", code)
	} else if _, code := Cancel(n, gp, in("i2"), t0); code != RRequestedByAnother {
		t.Errorf("the first organisation asking for the other's item: %s", code)
	}
	if again, code := Cancel(marked, Actor{User: "another-gp", Org: gp.Org}, in("i1"), t0); code != RPendingWith || again != nil {
		t.Errorf("another prescriber of the same practice: %s", code)
	}
	if again, code := Cancel(marked, gp, in("i1"), t0); code != RPendingWith || again != nil {
		t.Errorf("the same cancellation again must change nothing: %s %v", code, again != nil)
	}
	back := must(Return(marked, "FA565", pharmacy, "ret", t0))
	if items(back) != "0005 0007" || back.Pending != nil || back.History[len(back.History)-1].Type != EventSubsequentCancel {
		t.Errorf("return applies the cancellation: %s %+v", items(back), back.History)
	}
	// ... or when the item is marked not dispensed.
	nd := must(Dispense(marked, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": ItemNotDispensed, "i2": ItemFullyDispensed}}, t0))
	if items(nd) != "0005 0001" || nd.Pending != nil || nd.Status != StatusDispensed {
		t.Errorf("not dispensed applies it: %s %s", items(nd), nd.Status)
	}
	part := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": ItemPartiallyDispensed}}, t0))
	if _, code := Cancel(part, gp, in("i2"), t0); code != RPendingActive {
		t.Errorf("part dispensed: %s", code)
	}
	if n, code := Cancel(part, gp, in("i1"), t0); code != RPendingActive || n == nil || !slices.Contains(n.Pending.Items, "i1") {
		t.Errorf("a partly dispensed item: %s, want R-0003 and marked", code)
	}
	full := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": "0001", "i2": "0001"}}, t0))
	if _, code := Cancel(full, gp, in("i1"), t0); code != RDispensed {
		t.Errorf("dispensed: %s", code)
	}
	notd := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": "0002", "i2": "0002"}}, t0))
	if _, code := Cancel(notd, gp, in("i1"), t0); code != RNotDispensed {
		t.Errorf("not dispensed: %s", code)
	}
	exp := ApplyScheduled(fresh(), fresh().ExpiresAt, nil)
	if _, code := Cancel(exp, gp, in("i1"), t0); code != RExpired {
		t.Errorf("expired: %s", code)
	}
	if _, code := Cancel(fresh(), gp, CancelInput{NHSNumber: "5839945242", LineItemID: "i1"}, t0); code != RMismatch {
		t.Errorf("other NHS number: %s", code)
	}
	if _, code := Cancel(fresh(), gp, in("i9"), t0); code != RNotFound {
		t.Errorf("unknown item: %s", code)
	}
}

func TestScheduled(t *testing.T) {
	p := fresh() // dated t0 (09:00), expires on the date 6 months on
	if ev := Scheduled(p, Day(t0).AddDate(0, 6, 0).Add(-time.Second)); ev != "" {
		t.Errorf("before expiry: %q", ev)
	}
	exp := ApplyScheduled(p, p.ExpiresAt, nil)
	if exp == nil || exp.Status != StatusExpired || items(exp) != "0006 0006" {
		t.Fatalf("expired: %+v", exp)
	}
	if ApplyScheduled(exp, p.ExpiresAt.Add(time.Hour), nil) != nil {
		t.Error("a second run changed an expired prescription")
	}
	done := must(Dispense(released(t), "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": "0001", "i2": "0001"}}, t0))
	noClaim := Day(t0).AddDate(0, 0, 180)
	if ev := Scheduled(done, noClaim.Add(-time.Second)); ev != "" {
		t.Errorf("no-claim before its date: %q", ev)
	}
	if nc := ApplyScheduled(done, noClaim, nil); nc == nil || nc.Status != StatusNoClaimed {
		t.Errorf("no-claimed: %+v", nc)
	}
	fut := fresh()
	fut.Status, fut.StartDate = StatusFuture, t0.Add(72*time.Hour)
	if Scheduled(fut, Day(t0).Add(72*time.Hour-time.Second)) != "" || Scheduled(fut, Day(t0).Add(72*time.Hour)) != EventReady {
		t.Error("post-dated becomes due on its date")
	}
	if r := ApplyScheduled(fut, t0.Add(72*time.Hour), nil); r.Status != StatusToBeDispensed || !r.Ready() {
		t.Errorf("ready: %s", r.Status)
	}
}

// A cancellation before its prescription is kept (9005) and applied when
// the order arrives; one naming another patient is not.
func TestEarlyCancellation(t *testing.T) {
	in := CancelInput{MessageID: "c1", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}
	kept := EarlyCancellation("24F5DA-A83008-7EFE6Z", gp, in, t0)
	if !kept.IsEarlyCancellation() || kept.Status != StatusCancelledFuture || kept.Ready() {
		t.Fatalf("kept: %+v", kept)
	}
	kept = AddEarlyCancellation(kept, gp, CancelInput{MessageID: "c2", NHSNumber: "9449305552", LineItemID: "i2"}, t0)
	rec := ApplyEarlyCancellations(kept, fresh(), t0.Add(time.Hour))
	if rec.Status != StatusCancelled || items(rec) != "0005 0005" || rec.IsEarlyCancellation() || len(rec.History) != 4 {
		t.Errorf("arrived: %s %s history %d", rec.Status, items(rec), len(rec.History))
	}
	one := ApplyEarlyCancellations(EarlyCancellation("24F5DA-A83008-7EFE6Z", gp, in, t0), fresh(), t0)
	if one.Status != StatusToBeDispensed || items(one) != "0005 0007" {
		t.Errorf("one item: %s %s", one.Status, items(one))
	}
	other := EarlyCancellation("24F5DA-A83008-7EFE6Z", gp, CancelInput{NHSNumber: "5839945242", LineItemID: "i1"}, t0)
	if r := ApplyEarlyCancellations(other, fresh(), t0); items(r) != "0007 0007" {
		t.Errorf("another patient's cancellation applied: %s", items(r))
	}
}

// Review findings: no dispensing change after a claim; a withdraw restores
// the pending cancellation; a pending cancellation of every item makes the
// prescription Cancelled; a stated status is taken as stated.
func TestDispenseEdgeRules(t *testing.T) {
	r := released(t)
	all := map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemFullyDispensed}
	d := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn-1", Items: all}, t0))
	c := must(Claim(d, "FA565", pharmacy, "c1", "", t0))
	_, err := Dispense(c, "FA565", pharmacy, DispenseInput{ID: "dn-2", ReplacementOf: "dn-1", Items: all}, t0)
	wantInvalid(t, err)

	in := func(item string) CancelInput {
		return CancelInput{MessageID: "c-" + item, NHSNumber: "9449305552", LineItemID: item}
	}
	marked, _ := Cancel(r, gp, in("i1"), t0)
	marked, _ = Cancel(marked, gp, in("i2"), t0)
	nd := must(Dispense(marked, "FA565", pharmacy, DispenseInput{ID: "dn-3", Items: map[string]ItemStatus{"i1": ItemNotDispensed, "i2": ItemNotDispensed}}, t0))
	if nd.Status != StatusCancelled || items(nd) != "0005 0005" || nd.Pending != nil {
		t.Errorf("every pending item not dispensed: %s %s", nd.Status, items(nd))
	}
	part := must(Dispense(marked, "FA565", pharmacy, DispenseInput{ID: "dn-4", Items: map[string]ItemStatus{"i1": ItemNotDispensed}}, t0))
	w := must(Withdraw(part, "FA565", pharmacy, "dn-4", "wd", t0))
	if w.Pending == nil || len(w.Pending.Items) != 2 || items(w) != "0008 0008" {
		t.Errorf("withdraw must restore the pending cancellation: %+v %s", w.Pending, items(w))
	}
	// A stated status the items would not make is taken, as Spine takes it
	// (record.py update_for_dispense; issue 10, helper "dispense").
	stated := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn-5", Status: StatusDispensed,
		Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemNotDispensedOwing}}, t0))
	if stated.Status != StatusDispensed || items(stated) != "0001 0004" {
		t.Errorf("stated Dispensed with an item owed: %s %s", stated.Status, items(stated))
	}
}

// Every line item and prescription status a cancellation can meet, and
// Spine's answer (eps-spine-shared record.py; statuses.py
// ITEM_CANCELLABLE_STATES, ITEM_WITH_DISPENSER_STATES).
func TestCancelAnswers(t *testing.T) {
	in := func(item string) CancelInput {
		return CancelInput{MessageID: "c-" + item, NHSNumber: "9449305552", LineItemID: item}
	}
	const (
		byLI   = "record.py return_error_for_invalid_cancel_by_li_id"
		byPR   = "record.py return_error_for_invalid_cancel_by_pr_id"
		toCncl = "record.py check_current_instance_to_cancel_by_li_id"
	)
	dn := func(p *Prescription, st ...ItemStatus) *Prescription {
		return must(Dispense(p, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{"i1": st[0], "i2": st[1]}}, t0))
	}
	at := func(p *Prescription, s Status) *Prescription { p.Status = s; return p }
	for _, tc := range []struct {
		name, ref string
		rec       *Prescription
		item      string
		want      CancelCode
		marked    bool // the item is marked for cancellation after
		cancelled bool // the item is 0005 after
	}{
		{"0001, item 0007", toCncl, fresh(), "i1", RCancelled, false, true},
		{"9001, item 0007", toCncl, at(fresh(), StatusFuture), "i1", RCancelled, false, true},
		{"0000, item 0007", toCncl, at(fresh(), StatusAwaitingReleaseReady), "i1", RCancelled, false, true},
		{"9000, item 0007", toCncl, at(fresh(), StatusRepeatFuture), "i1", RCancelled, false, true},
		{"0002, item 0008: marked", byPR, released(t), "i1", RPendingWith, true, false},
		{"0003, item 0003 (part dispensed): marked", byPR + " (item 0003 is with the dispenser)", dn(released(t), ItemPartiallyDispensed, ItemFullyDispensed), "i1", RPendingActive, true, false},
		{"0003, item 0004 (owed): R-0003, not marked", byLI + " (else branch)", dn(released(t), ItemNotDispensedOwing, ItemFullyDispensed), "i1", RPendingActive, false, false},
		{"0003, item 0001", byLI, dn(released(t), ItemNotDispensedOwing, ItemFullyDispensed), "i2", RDispensed, false, false},
		{"0006, item 0001", byLI, dn(released(t), ItemFullyDispensed, ItemNotDispensed), "i1", RDispensed, false, false},
		{"0006, item 0002", byLI, dn(released(t), ItemFullyDispensed, ItemNotDispensed), "i2", RNotDispensed, false, false},
		{"0007, item 0002", byLI, dn(released(t), ItemNotDispensed, ItemNotDispensed), "i1", RNotDispensed, false, false},
		{"0008, item 0001", byLI, must(Claim(dn(released(t), ItemFullyDispensed, ItemNotDispensed), "FA565", pharmacy, "cl", "", t0)), "i1", RDispensed, false, false},
		{"0008, item 0002", byLI, must(Claim(dn(released(t), ItemFullyDispensed, ItemNotDispensed), "FA565", pharmacy, "cl", "", t0)), "i2", RNotDispensed, false, false},
		{"0009, item 0001", byLI, ApplyScheduled(dn(released(t), ItemFullyDispensed, ItemFullyDispensed), t0.AddDate(1, 0, 0), nil), "i1", RDispensed, false, false},
		{"0004, item 0006", byLI, ApplyScheduled(fresh(), t0.AddDate(1, 0, 0), nil), "i1", RExpired, false, false},
		{"0005, item 0005", byLI, func() *Prescription {
			p, _ := Cancel(fresh(), gp, in("i1"), t0)
			p, _ = Cancel(p, gp, in("i2"), t0)
			return p
		}(), "i1", RAlreadyCancelled, false, false},
		{"0001, item 0005", byLI, func() *Prescription { p, _ := Cancel(fresh(), gp, in("i1"), t0); return p }(), "i1", RAlreadyCancelled, false, false},
		{"no such item", byLI + " (PRESCRIPTION_NOT_FOUND)", fresh(), "i9", RNotFound, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotJSON(tc.rec)
			n, code := Cancel(tc.rec, gp, in(tc.item), t0)
			if code != tc.want {
				t.Fatalf("answered %s, want %s (%s)", code, tc.want, tc.ref)
			}
			if snapshotJSON(tc.rec) != before {
				t.Fatal("Cancel changed its input")
			}
			changed := tc.marked || tc.cancelled
			if (n != nil) != changed {
				t.Fatalf("record changed %v, want %v", n != nil, changed)
			}
			if !changed {
				return
			}
			marked := n.Pending != nil && slices.Contains(n.Pending.Items, tc.item)
			if marked != tc.marked {
				t.Errorf("marked for cancellation %v, want %v", marked, tc.marked)
			}
			if k := n.itemIndex(tc.item); (n.Items[k].Status == ItemCancelled) != tc.cancelled {
				t.Errorf("item %s, cancelled %v wanted", n.Items[k].Status, tc.cancelled)
			}
		})
	}
}

// A part-dispensed item marked for cancellation (R-0003): the dispenser
// marking it not dispensed cancels it; a return is no longer possible
// (0003); the cancellation stays marked while the item is still owed.
func TestCancelPartDispensed(t *testing.T) {
	part := must(Dispense(released(t), "FA565", pharmacy, DispenseInput{ID: "dn-1",
		Items: map[string]ItemStatus{"i1": ItemPartiallyDispensed, "i2": ItemFullyDispensed}}, t0))
	marked, code := Cancel(part, gp, CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: "i1"}, t0)
	if code != RPendingActive || marked == nil || marked.Status != StatusWithDispenserActive {
		t.Fatalf("%s %+v", code, marked)
	}
	owed := must(Dispense(marked, "FA565", pharmacy, DispenseInput{ID: "dn-2",
		Items: map[string]ItemStatus{"i1": ItemNotDispensedOwing, "i2": ItemFullyDispensed}}, t0))
	if owed.Pending == nil || !slices.Contains(owed.Pending.Items, "i1") {
		t.Error("still owed: the cancellation must stay marked")
	}
	nd := must(Dispense(marked, "FA565", pharmacy, DispenseInput{ID: "dn-2",
		Items: map[string]ItemStatus{"i1": ItemNotDispensed, "i2": ItemFullyDispensed}}, t0))
	if items(nd) != "0005 0001" || nd.Status != StatusDispensed || nd.Pending != nil {
		t.Errorf("not dispensed: %s %s %+v", items(nd), nd.Status, nd.Pending)
	}
}

// Each status's next activity and its date (next_activity_generator.py
// next_activity_date; record.py _include_next_activity_for_instance,
// perform_instance_specific_updates): what falls due, when, and the state
// after.
func TestNextActivity(t *testing.T) {
	const nag = "next_activity_generator.py "
	d0 := Day(t0)
	last := t0.AddDate(0, 2, 0) // a dispense two months after the prescription date
	dn := func(p *Prescription, when time.Time, st ...ItemStatus) *Prescription {
		return must(Dispense(p, "FA565", pharmacy, DispenseInput{ID: "dn-" + when.Format(time.RFC3339),
			Items: map[string]ItemStatus{"i1": st[0], "i2": st[1]}}, when))
	}
	part := dn(released(t), last, ItemPartiallyDispensed, ItemFullyDispensed)
	// An eRD issue whose only notification was withdrawn: 0003 without one.
	erdPart := func(released time.Time) *Prescription {
		p := must(Release(erd(2, 28), "FA565", pharmacy, "rel", true, released))
		p = dn(p, released.Add(time.Hour), ItemPartiallyDispensed, ItemFullyDispensed)
		return must(Withdraw(p, "FA565", pharmacy, p.Dispenses[0].ID, "wd", released.Add(2*time.Hour)))
	}
	lateRelease := d0.AddDate(0, 5, 0) // released a month before issue 1's expiry
	future := fresh()
	future.Status, future.StartDate = StatusFuture, t0.AddDate(0, 0, 3)
	for _, tc := range []struct {
		name, ref  string
		rec        *Prescription
		event      string
		at         time.Time
		status     Status // the current issue's status after (the issue the event is about for acute)
		itemsAfter string
	}{
		{"9001: ready on its date", nag + "future_dated", future, EventReady, d0.AddDate(0, 0, 3), StatusToBeDispensed, "0007 0007"},
		{"0001: expires on its expiry date", nag + "un_dispensed", fresh(), EventExpire, d0.AddDate(0, 6, 0), StatusExpired, "0006 0006"},
		{"0002: expires on its expiry date", nag + "un_dispensed", released(t), EventExpire, d0.AddDate(0, 6, 0), StatusExpired, "0006 0006"},
		{"0003 with a notification: no-claim 180 days after the last dispense, even past the expiry", nag + "part_dispensed (createNoClaim); record.py _create_no_claim",
			dn(released(t), d0.AddDate(0, 5, 0), ItemPartiallyDispensed, ItemFullyDispensed), EventNoClaim, d0.AddDate(0, 5, 180), StatusNoClaimed, "0003 0001"},
		{"0003 with a notification, dispensed early: no-claim 180 days after", nag + "part_dispensed (createNoClaim)", part, EventNoClaim, Day(last).AddDate(0, 0, 180), StatusNoClaimed, "0003 0001"},
		{"0003 without a notification: to 0006 180 days after its release", nag + "part_dispensed (expire); statuses.py EXPIRY_LOOKUP",
			erdPart(t0.Add(time.Hour)), EventExpire, d0.AddDate(0, 0, 180), StatusDispensed, "0006 0006"},
		{"0003 without a notification: to 0006 at the prescription's expiry when that is earlier", nag + "part_dispensed (min of both)",
			erdPart(lateRelease), EventExpire, d0.AddDate(0, 6, 0), StatusDispensed, "0006 0006"},
		{"0006: no-claim 180 days after completion", nag + "dispensed", dn(released(t), last, ItemFullyDispensed, ItemNotDispensed), EventNoClaim, Day(last).AddDate(0, 0, 180), StatusNoClaimed, "0001 0002"},
		{"0007: none (never no-claimed)", nag + "not_dispensed (delete only)", dn(released(t), last, ItemNotDispensed, ItemNotDispensed), "", time.Time{}, StatusNotDispensed, "0002 0002"},
		{"0008: none", nag + "completed (delete only)", must(Claim(dn(released(t), last, ItemFullyDispensed, ItemFullyDispensed), "FA565", pharmacy, "cl", "", last)), "", time.Time{}, StatusClaimed, "0001 0001"},
		{"0004: none", nag + "expired (delete only)", ApplyScheduled(fresh(), d0.AddDate(1, 0, 0), nil), "", time.Time{}, StatusExpired, "0006 0006"},
		{"0005: none", nag + "cancelled (delete only)", func() *Prescription {
			p, _ := Cancel(fresh(), gp, CancelInput{NHSNumber: "9449305552", LineItemID: "i1"}, t0)
			p, _ = Cancel(p, gp, CancelInput{NHSNumber: "9449305552", LineItemID: "i2"}, t0)
			return p
		}(), "", time.Time{}, StatusCancelled, "0005 0005"},
		{"9005 (a cancellation before its prescription): none", nag + "awaiting_cancellation (delete only)",
			EarlyCancellation("24F5DA-A83008-7EFE6Z", gp, CancelInput{NHSNumber: "9449305552", LineItemID: "i1"}, t0), "", time.Time{}, StatusCancelledFuture, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := NextDue(tc.rec)
			if tc.event == "" {
				if !at.IsZero() {
					t.Fatalf("NextDue %s, want none (%s)", at, tc.ref)
				}
				if n := ApplyScheduled(tc.rec, t0.AddDate(3, 0, 0), nil); n != nil {
					t.Errorf("3 years on: %s, want no change (%s)", n.Status, tc.ref)
				}
				return
			}
			if !at.Equal(tc.at) {
				t.Errorf("NextDue %s, want %s (%s)", at, tc.at, tc.ref)
			}
			if ev := Scheduled(tc.rec, tc.at.Add(-time.Second)); ev != "" {
				t.Errorf("%s due before its date (%s)", ev, tc.ref)
			}
			if ev := Scheduled(tc.rec, tc.at); ev != tc.event {
				t.Fatalf("due %q, want %q (%s)", ev, tc.event, tc.ref)
			}
			n := ApplyScheduled(tc.rec, tc.at, nil)
			is, _ := n.AtIssue(1)
			if is.Status != tc.status || items(is) != tc.itemsAfter {
				t.Errorf("after: %s %s, want %s %s (%s)", is.Status, items(is), tc.status, tc.itemsAfter, tc.ref)
			}
			if h := n.History[len(n.History)-1]; h.Type != tc.event {
				t.Errorf("last event %s, want %s", h.Type, tc.event)
			}
		})
	}
}

// A prescription whose expiry is overdue but not yet applied is not
// released: by ID it is refused, from the queue passed over (record.py
// return_details_for_release, handle_overdue_expiry).
func TestReleaseOverdueExpiry(t *testing.T) {
	p := fresh()
	_, err := Release(p, "FCG71", other, "x", false, p.ExpiresAt)
	wantInvalid(t, err)
	if _, err := Release(p, "FA565", pharmacy, "x", true, p.ExpiresAt); !IsNotFound(err) {
		t.Errorf("nominated release of an overdue one: %v, want it passed over (not found)", err)
	}
	must(Release(p, "FA565", pharmacy, "x", true, p.ExpiresAt.Add(-time.Second)))
}

// Line item ids are GUIDs that EPS upper-cases
// (dispense-notification.ts mapMedicationDispenses): a message naming an
// item in another case names the same item, in a dispense, a cancellation
// and a pending cancellation, and the record keeps the order's own id.
func TestLineItemIDsIgnoreCase(t *testing.T) {
	o := &Order{PrescriptionID: "24F5DA-A83008-7EFE6Z", BundleID: "b1", NHSNumber: "9449305552", Sender: "A83008",
		SiteType: "P1", Performer: "FA565", ValidityStart: t0, TherapyType: TherapyAcute,
		Items: []OrderItem{{ID: "a54219b8-f741-4c47-b662-e4f8dfa49ab6"}, {ID: "6989b7bd-8db6-428c-a593-4022e3044c00"}}}
	const up1, up2 = "A54219B8-F741-4C47-B662-E4F8DFA49AB6", "6989B7BD-8DB6-428C-A593-4022E3044C00"
	in := func(item string) CancelInput {
		return CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: item, Reason: "0001"}
	}
	t.Run("cancel before release", func(t *testing.T) {
		n, code := Cancel(Create(o, gp, t0), gp, in(up1), t0)
		if code != RCancelled || items(n) != "0005 0007" {
			t.Errorf("%s %v", code, n)
		}
	})
	rel := must(Release(Create(o, gp, t0), "FA565", pharmacy, "rel-1", true, t0.Add(time.Hour)))
	t.Run("dispense", func(t *testing.T) {
		n := must(Dispense(rel, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{up1: ItemFullyDispensed, up2: ItemNotDispensed}}, t0))
		if items(n) != "0001 0002" || n.Items[0].ID != o.Items[0].ID {
			t.Errorf("%s %s", items(n), n.Items[0].ID)
		}
	})
	t.Run("pending cancellation", func(t *testing.T) {
		marked, code := Cancel(rel, gp, in(up1), t0)
		if code != RPendingWith || marked == nil || !slices.Equal(marked.Pending.Items, []string{o.Items[0].ID}) {
			t.Fatalf("%s %+v", code, marked)
		}
		if again, code := Cancel(marked, gp, in(o.Items[0].ID), t0); code != RPendingWith || again != nil {
			t.Errorf("the same item in lower case again: %s %v", code, again != nil)
		}
		if _, code := Cancel(marked, other, in(o.Items[0].ID), t0); code != RRequestedByAnother {
			t.Errorf("another organisation, the same item in another case: %s", code)
		}
		nd := must(Dispense(marked, "FA565", pharmacy, DispenseInput{ID: "dn", Items: map[string]ItemStatus{up1: ItemNotDispensed, up2: ItemFullyDispensed}}, t0))
		if items(nd) != "0005 0001" || nd.Pending != nil {
			t.Errorf("not dispensed in upper case applies the pending cancellation: %s %+v", items(nd), nd.Pending)
		}
	})
}

// record.py process_line_cancellation: the issue is cancelled when no other
// line item is active (0007, 0008, 0003, 0004), not only when every item
// is cancelled: an expired item beside it does not keep it open.
func TestCancelSettlesWithoutActiveItems(t *testing.T) {
	in := CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: "i2", Reason: "0001"}
	p := fresh()
	p.Items[0].Status = ItemExpired
	n, code := Cancel(p, gp, in, t0)
	if code != RCancelled || items(n) != "0006 0005" || n.Status != StatusCancelled {
		t.Errorf("%s %s %s, want R-0001, 0006 0005, Cancelled", code, items(n), n.Status)
	}
	// Another item still to be dispensed keeps it open.
	n, code = Cancel(fresh(), gp, in, t0)
	if code != RCancelled || n.Status != StatusToBeDispensed {
		t.Errorf("%s %s, want To Be Dispensed", code, n.Status)
	}
}
