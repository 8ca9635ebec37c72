package rx

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// erd is a new repeat dispensing prescription of issues issues of supply
// days (0: the default), two items, dated t0, nominated to FA565.
func erd(issues, supply int) *Prescription {
	o := &Order{PrescriptionID: "7B7EF0-A83008-3220F7", BundleID: "b-erd", NHSNumber: "9449305552", Sender: "A83008",
		SiteType: "P1", Performer: "FA565", ValidityStart: t0, TherapyType: TherapyRepeatDispensing,
		RepeatsAllowed: issues - 1, SupplyDays: supply, Items: []OrderItem{{ID: "i1"}, {ID: "i2"}}}
	return Create(o, gp, t0)
}

func issueStatuses(p *Prescription) []Status {
	var out []Status
	for _, is := range p.Issues() {
		out = append(out, is.Status)
	}
	return out
}

func wantIssues(t *testing.T, p *Prescription, current int, want ...Status) {
	t.Helper()
	if got := issueStatuses(p); !slices.Equal(got, want) || p.IssueNumber() != current {
		t.Fatalf("issues %v (current %d), want %v (current %d)", got, p.IssueNumber(), want, current)
	}
}

// dispensed is p with its current issue released to FA565 and fully
// dispensed at at.
func dispensed(p *Prescription, at time.Time) *Prescription {
	p = must(Release(p, "FA565", pharmacy, "rel", true, at))
	return must(Dispense(p, "FA565", pharmacy, DispenseInput{ID: "dn-" + at.Format(time.RFC3339Nano),
		Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemFullyDispensed}}, at))
}

func TestERDCreate(t *testing.T) {
	p := erd(6, 0)
	wantIssues(t, p, 1, "0001", "9000", "9000", "9000", "9000", "9000")
	for _, is := range p.Issues() {
		if is.Number == 1 {
			if !is.ExpiresAt.Equal(Day(t0).AddDate(0, 6, 0)) {
				t.Errorf("issue 1 expires %s, want 6 months", is.ExpiresAt)
			}
			continue
		}
		// Default supply 28 days: date + 28 x (n-1) - 7 days.
		if want := Day(t0).AddDate(0, 0, 28*(is.Number-1)-7); !is.AvailableAt.Equal(want) {
			t.Errorf("issue %d available %s, want %s", is.Number, is.AvailableAt, want)
		}
		if !is.ExpiresAt.Equal(Day(t0).AddDate(1, 0, 0)) {
			t.Errorf("issue %d expires %s, want 12 months", is.Number, is.ExpiresAt)
		}
		if is.Nominated != "FA565" || len(is.Items) != 2 || is.Items[0].Status != ItemToBeDispensed {
			t.Errorf("issue %d: %+v", is.Number, is)
		}
	}
	if a := fresh(); a.IssueCount() != 1 || a.Number != 0 || a.RepeatDispensing() {
		t.Errorf("acute: %d issues, number %d", a.IssueCount(), a.Number)
	}
	// The record survives the event log's JSON.
	b, _ := json.Marshal(p)
	var back Prescription
	if err := json.Unmarshal(b, &back); err != nil || snapshotJSON(&back) != string(b) {
		t.Fatalf("JSON round trip: %v", err)
	}
}

// The next issue moves 9000 -> 0000 when the current one is complete and
// 0000 -> 0001 at its date; NextDue says when; a second application
// changes nothing.
func TestERDSchedule(t *testing.T) {
	p := erd(3, 10)
	if ev := Scheduled(p, t0.AddDate(0, 1, 0)); ev != "" {
		t.Fatalf("due with issue 1 not complete: %s", ev)
	}
	if at := NextDue(p); !at.Equal(p.ExpiresAt) {
		t.Errorf("NextDue %s, want issue 1's expiry", at)
	}
	p = dispensed(p, t0.Add(time.Hour))
	if at := NextDue(p); at.After(t0.Add(time.Hour)) {
		t.Errorf("NextDue %s: the next issue is due now", at)
	}
	before := snapshotJSON(p)
	avail2 := Day(t0).AddDate(0, 0, 3) // 10 x 1 - 7 days, from the start of the day
	n := ApplyScheduled(p, avail2.Add(-time.Minute), nil)
	if snapshotJSON(p) != before {
		t.Fatal("ApplyScheduled changed its input")
	}
	wantIssues(t, n, 2, "0006", "0000", "9000")
	if at := NextDue(n); !at.Equal(avail2) {
		t.Errorf("NextDue at 0000: %s, want %s", at, avail2)
	}
	if ApplyScheduled(n, avail2.Add(-time.Second), nil) != nil {
		t.Fatal("ready before its date")
	}
	r := ApplyScheduled(n, avail2, nil)
	wantIssues(t, r, 2, "0006", "0001", "9000")
	if !r.Ready() || r.Nominated != "FA565" {
		t.Errorf("issue 2 not in FA565's queue: nominated %q", r.Nominated)
	}
	if ApplyScheduled(r, avail2.Add(time.Hour), nil) != nil {
		t.Fatal("applied twice")
	}
	// Both steps at once when the date has passed.
	q := ApplyScheduled(p, avail2.AddDate(0, 0, 1), nil)
	wantIssues(t, q, 2, "0006", "0001", "9000")
	last := q.History[len(q.History)-2:]
	if last[0].Type != EventAwaiting || last[1].Type != EventReady || last[0].Issue != 2 || last[1].Issue != 2 {
		t.Errorf("history: %+v", last)
	}
}

// Later issues follow a nomination change newer than the prescription;
// an older one, or none, leaves them as they were.
func TestERDFollowsNomination(t *testing.T) {
	p := dispensed(erd(2, 28), t0.Add(time.Hour))
	at := t0.AddDate(0, 0, 21)
	for _, tc := range []struct {
		name   string
		follow *NominationChange
		want   string
		source string
	}{
		{"no change", nil, "FA565", NominationFromOrder},
		{"older change", &NominationChange{ODS: "FCG71", Time: t0.Add(-time.Hour)}, "FA565", NominationFromOrder},
		{"new pharmacy", &NominationChange{ODS: "FCG71", Time: t0.Add(2 * time.Hour)}, "FCG71", NominationFromRegistry},
		{"nomination removed", &NominationChange{ODS: "", Time: t0.Add(2 * time.Hour)}, "", NominationNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ApplyScheduled(p, at, tc.follow)
			if r.IssueNumber() != 2 || r.Status != StatusToBeDispensed || r.Nominated != tc.want || r.NominationSource != tc.source {
				t.Fatalf("issue %d %s nominated %q (%s), want %q (%s)", r.IssueNumber(), r.Status, r.Nominated, r.NominationSource, tc.want, tc.source)
			}
		})
	}
}

// Messages about an issue that is not the current one act on that issue;
// one the prescription does not have is INVALID_VALUE; for a prescription
// that is not repeat dispensing the number is ignored.
func TestERDOnIssue(t *testing.T) {
	p := dispensed(erd(3, 28), t0.Add(time.Hour))
	p = ApplyScheduled(p, t0.AddDate(0, 0, 21), nil) // issue 2 current, 0001
	claim := func(cur *Prescription) (*Prescription, error) {
		return Claim(cur, "FA565", pharmacy, "claim-1", "", t0.AddDate(0, 0, 22))
	}
	c, err := OnIssue(p, 1, claim)
	if err != nil {
		t.Fatal(err)
	}
	wantIssues(t, c, 2, "0008", "0001", "9000")
	if h := c.History[len(c.History)-1]; h.Type != EventClaim || h.Issue != 1 {
		t.Errorf("history: %+v", h)
	}
	if _, err := OnIssue(p, 2, claim); err == nil {
		t.Error("claim of issue 2 (not dispensed) accepted")
	}
	var fe *Error
	if _, err := OnIssue(p, 4, claim); !asError(err, &fe) || fe.Code != CodeInvalidValue {
		t.Errorf("issue 4 of 3: %v", err)
	}
	a := must(Release(fresh(), "FA565", pharmacy, "rel", true, t0))
	if _, err := OnIssue(a, 7, func(cur *Prescription) (*Prescription, error) {
		return Return(cur, "FA565", pharmacy, "ret", t0)
	}); err != nil {
		t.Errorf("acute prescription, issue named: %v", err)
	}
}

func asError(err error, fe **Error) bool {
	e, ok := err.(*Error)
	*fe = e
	return ok
}

// Cancelling: from the current issue; when it is complete, from the next
// issue; every later issue's item cancelled with it (the issue 0005 when all
// are: record.py process_instance_cancellation).
func TestERDCancel(t *testing.T) {
	in := func(item string) CancelInput {
		return CancelInput{MessageID: "c-" + item, NHSNumber: "9449305552", LineItemID: item, Reason: "0001"}
	}
	p := erd(4, 28)
	n, code := Cancel(p, gp, in("i1"), t0)
	if code != RCancelled {
		t.Fatalf("cancel i1: %s", code)
	}
	wantIssues(t, n, 1, "0001", "9000", "9000", "9000")
	for _, is := range n.Issues() {
		if is.Items[0].Status != ItemCancelled || is.Items[1].Status != ItemToBeDispensed {
			t.Errorf("issue %d items %+v", is.Number, is.Items)
		}
	}
	n, code = Cancel(n, gp, in("i2"), t0)
	if code != RCancelled {
		t.Fatalf("cancel i2: %s", code)
	}
	wantIssues(t, n, 1, "0005", "0005", "0005", "0005")
	if ApplyScheduled(n, t0.AddDate(0, 2, 0), nil) != nil {
		t.Error("a cancelled course moved on")
	}

	// Issue 1 dispensed: the cancellation is of issues 2..4.
	d := dispensed(erd(4, 28), t0.Add(time.Hour))
	for _, item := range []string{"i1", "i2"} {
		if d, code = Cancel(d, gp, in(item), t0.Add(2*time.Hour)); code != RCancelled {
			t.Fatalf("cancel %s after issue 1: %s", item, code)
		}
	}
	wantIssues(t, d, 1, "0006", "0005", "0005", "0005")

	// With the dispenser: marked (R-0002), later issues cancelled now.
	w := must(Release(erd(3, 28), "FA565", pharmacy, "rel", true, t0))
	w, code = Cancel(w, gp, in("i1"), t0)
	if code != RPendingWith || w.Pending == nil {
		t.Fatalf("cancel with dispenser: %s", code)
	}
	for _, is := range w.Issues()[1:] {
		if is.Items[0].Status != ItemCancelled {
			t.Errorf("issue %d item i1 %s", is.Number, is.Items[0].Status)
		}
	}
}

// A cancellation that came before its repeat dispensing prescription
// cancels the item in every issue.
func TestERDEarlyCancellation(t *testing.T) {
	kept := EarlyCancellation("7B7EF0-A83008-3220F7", gp, CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: "i1"}, t0)
	kept = AddEarlyCancellation(kept, gp, CancelInput{MessageID: "c2", NHSNumber: "9449305552", LineItemID: "i2"}, t0)
	n := ApplyEarlyCancellations(kept, erd(3, 28), t0)
	wantIssues(t, n, 1, "0005", "0005", "0005")
}

// Withdrawing the dispense that completed an issue: the next issue, not yet
// with a dispenser, goes back to 9000 and the withdrawn issue is current
// again; once the next is released the withdraw is refused.
func TestERDWithdraw(t *testing.T) {
	p := dispensed(erd(3, 28), t0.Add(time.Hour))
	dn := p.Dispenses[0].ID
	next := ApplyScheduled(p, t0.AddDate(0, 0, 21), nil)
	withdraw := func(cur *Prescription) (*Prescription, error) {
		return Withdraw(cur, "FA565", pharmacy, dn, "wd", t0.AddDate(0, 0, 22))
	}
	w, err := OnIssue(next, 1, withdraw)
	if err != nil {
		t.Fatal(err)
	}
	wantIssues(t, w, 1, "0003", "9000", "9000")
	if w.Ready() {
		t.Error("withdrawn issue is in a queue")
	}
	rel := must(Release(next, "FA565", pharmacy, "rel2", true, t0.AddDate(0, 0, 21)))
	_, err = OnIssue(rel, 1, withdraw)
	wantInvalid(t, err)
}

// An issue that expires expires every issue after it, and the last issue
// becomes the current one (record.py perform_instance_specific_updates,
// NEXTACTIVITY_EXPIRE, SPII-10316). Issue 1 expires 6 months after the
// prescription date; a later issue 12 months after it
// (next_activity_generator.py _calculate_expiry_date).
func TestERDExpiry(t *testing.T) {
	p := erd(3, 28)
	if ApplyScheduled(p, p.ExpiresAt.Add(-time.Second), nil) != nil {
		t.Fatal("expired early")
	}
	e := ApplyScheduled(p, p.ExpiresAt, nil) // issue 1's 6 months
	wantIssues(t, e, 3, "0004", "0004", "0004")
	if h := e.History[len(e.History)-1]; h.Type != EventExpire || h.Issue != 1 {
		t.Errorf("the last event is about issue 1: %+v", h)
	}
	// Issue 2 at 0001 (issue 1 dispensed): it and issue 3 expire 12 months on.
	q := ApplyScheduled(dispensed(p, t0.Add(time.Hour)), t0.AddDate(0, 1, 0), nil)
	wantIssues(t, q, 2, "0006", "0001", "9000")
	if at := NextDue(q); !at.Equal(Day(t0).AddDate(0, 0, 180)) {
		t.Errorf("NextDue %s: issue 1's no-claim comes first", at)
	}
	y := ApplyScheduled(q, Day(t0).AddDate(1, 0, 0), nil)
	wantIssues(t, y, 3, "0009", "0004", "0004")
}

// An amended notification that leaves the issue open again sends the next
// issue back like a withdraw does.
func TestERDAmendReopensIssue(t *testing.T) {
	p := dispensed(erd(3, 28), t0.Add(time.Hour))
	dn := p.Dispenses[0].ID
	next := ApplyScheduled(p, t0.AddDate(0, 0, 21), nil)
	amend := func(cur *Prescription) (*Prescription, error) {
		return Dispense(cur, "FA565", pharmacy, DispenseInput{ID: "dn-amended", ReplacementOf: dn,
			Items: map[string]ItemStatus{"i1": ItemPartiallyDispensed, "i2": ItemFullyDispensed}}, t0.AddDate(0, 0, 22))
	}
	a, err := OnIssue(next, 1, amend)
	if err != nil {
		t.Fatal(err)
	}
	wantIssues(t, a, 1, "0003", "9000", "9000")
	if h := a.History[len(a.History)-1]; h.Type != EventDispense || h.Issue != 1 {
		t.Errorf("last event %+v, want the dispense of issue 1", h)
	}
	rel := must(Release(next, "FA565", pharmacy, "rel2", true, t0.AddDate(0, 0, 21)))
	_, err = OnIssue(rel, 1, amend)
	wantInvalid(t, err)
}

// Cancelling an item already dispensed in the current issue still cancels
// it in the issues to come (R-0001); asked again, R-0006. The event of the
// issue with the dispenser comes last.
func TestERDCancelDispensedItem(t *testing.T) {
	in := CancelInput{MessageID: "c1", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}
	p := must(Release(erd(3, 28), "FA565", pharmacy, "rel", true, t0))
	p = must(Dispense(p, "FA565", pharmacy, DispenseInput{ID: "dn1",
		Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemNotDispensedOwing}}, t0))
	n, code := Cancel(p, gp, in, t0)
	if code != RCancelled || n == nil {
		t.Fatalf("cancel of a dispensed item: %s", code)
	}
	for _, is := range n.Issues()[1:] {
		if is.Items[0].Status != ItemCancelled || is.Items[1].Status != ItemToBeDispensed || is.Status != StatusRepeatFuture {
			t.Errorf("issue %d: %s %+v", is.Number, is.Status, is.Items)
		}
	}
	if _, code := Cancel(n, gp, in, t0); code != RAlreadyCancelled {
		t.Errorf("again: %s, want R-0006", code)
	}
	last := erd(1, 28)
	last = must(Release(last, "FA565", pharmacy, "rel", true, t0))
	last = must(Dispense(last, "FA565", pharmacy, DispenseInput{ID: "dn1", Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemNotDispensedOwing}}, t0))
	if _, code := Cancel(last, gp, in, t0); code != RDispensed {
		t.Errorf("a one-issue course's dispensed item: %s, want R-0004", code)
	}

	w := must(Release(erd(3, 28), "FA565", pharmacy, "rel", true, t0))
	w, code = Cancel(w, gp, in, t0)
	if h := w.History[len(w.History)-1]; code != RPendingWith || h.Issue != 1 || h.Type != EventCancel {
		t.Errorf("%s, last event %+v: want issue 1's", code, h)
	}
}
