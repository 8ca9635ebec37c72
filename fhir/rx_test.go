package fhir

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// An error of the domain core is answered exactly as the *Error it
// replaced: the same kind (so the same HTTP status) and the same
// OperationOutcome bytes.
func TestRxErrorOutcome(t *testing.T) {
	for _, tc := range []struct {
		name string
		rx   *rx.Error
		was  *Error
	}{
		{"invalid state transition", &rx.Error{Kind: rx.KindInvalid, Code: rx.CodeInvalidStateTransition, Message: "prescription X is Dispensed (0006): it cannot be returned"},
			&Error{Kind: KindInvalid, IssueType: "business-rule", Code: CodeInvalidStateTransition, CodeSystem: SystemEPSIssueCode,
				Diagnostics: "prescription X is Dispensed (0006): it cannot be returned"}},
		{"no such issue", &rx.Error{Kind: rx.KindInvalid, Code: rx.CodeInvalidValue, Message: "prescription X has 3 issues; the message names issue 4"},
			&Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue, CodeSystem: SystemEPSIssueCode,
				Diagnostics: "prescription X has 3 issues; the message names issue 4"}},
		{"not found (404)", &rx.Error{Kind: rx.KindNotFound, Code: rx.CodeResourceNotFound, Message: "prescription X not found"},
			&Error{Kind: KindNotFound, IssueType: "not-found", Code: CodeResourceNotFound, Display: "Resource not found",
				Diagnostics: "prescription X not found"}},
		{"not found (400)", &rx.Error{Kind: rx.KindInvalid, Code: rx.CodeResourceNotFound, Message: "prescription X not found"},
			&Error{Kind: KindInvalid, IssueType: "not-found", Code: CodeResourceNotFound, Display: "Resource not found",
				Diagnostics: "prescription X not found"}},
		{"with another dispenser", &rx.Error{Kind: rx.KindInvalid, Code: rx.CodePrescriptionWithAnother, Message: "prescription X is with another dispenser (FA565)", Org: "FA565"},
			&Error{Kind: KindInvalid, IssueType: "business-rule", Code: CodePrescriptionWithAnother, CodeSystem: SystemEPSIssueCode,
				Display: "Prescription is with another dispenser", Diagnostics: "prescription X is with another dispenser (FA565)", SupportingOrg: "FA565"}},
		// The rules' own errors (tracker/rx/rules.go NotFound,
		// SameNHSNumber, EveryItemNamed), against the answer each gave
		// before they moved to the domain core.
		{"rx.NotFound", rx.NotFound("X"),
			&Error{Kind: KindInvalid, IssueType: "not-found", Code: CodeResourceNotFound, Display: "Resource not found",
				Diagnostics: "prescription X not found"}},
		{"rx.SameNHSNumber: R-5000", rxErr(rx.SameNHSNumber(&rx.Prescription{ID: "X", NHSNumber: "9449305552"}, "9449304130")),
			&Error{Kind: KindInvalid, IssueType: "business-rule", Code: CodeInvalidValue,
				Codings:     []Coding{{System: SystemStatusHistory, Code: "R-5000", Display: "Unable to process message. Information missing or invalid - Mismatch between prescription and cancellation NHSNumber"}},
				Diagnostics: "R-5000: the message's NHS number does not match prescription X"}},
		{"rx.EveryItemNamed: ITEM_NOT_FOUND", rxErr(rx.EveryItemNamed(&rx.Prescription{ID: "X", Issue: rx.Issue{Items: []rx.Item{{ID: "a"}, {ID: "b"}}}}, []string{"a"})),
			&Error{Kind: KindInvalid, IssueType: "business-rule", Code: "ITEM_NOT_FOUND", Display: "Item not found",
				Expression:  []string{"Bundle.entry.resource.ofType(MedicationDispense).authorizingPrescription"},
				Diagnostics: "the dispense notification must name every line item of prescription X, and no other (it names 1, the prescription has 2)"}},
		{"rx.DispenseOutcomes: an item stated cancelled that is not", dispenseOutcomesErr(),
			&Error{Kind: KindInvalid, IssueType: "business-rule", Code: CodeInvalidStateTransition, CodeSystem: SystemEPSIssueCode,
				Diagnostics: "line item i1 is not cancelled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wrapped := fmt.Errorf("release: %w", tc.rx)
			if got, want := ErrorKind(wrapped), ErrorKind(tc.was); got != want {
				t.Errorf("kind %d, want %d", got, want)
			}
			if got, want := string(ErrorOutcome(wrapped)), string(ErrorOutcome(tc.was)); got != want {
				t.Errorf("outcome\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func dispenseOutcomesErr() *rx.Error {
	p := &rx.Prescription{Issue: rx.Issue{Items: []rx.Item{{ID: "i1", Status: rx.ItemWithDispenser}}}}
	_, err := rx.DispenseOutcomes(p, map[string]rx.ItemStatus{"i1": rx.ItemCancelled})
	return rxErr(err)
}

func rxErr(err error) *rx.Error {
	e, _ := err.(*rx.Error)
	return e
}

// A release of a prescription another dispenser holds names the holder in
// a contained Organization.
func TestRxReleaseHeldByAnother(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	o := &Order{PrescriptionID: "24F5DA-A83008-7EFE6Z", BundleID: "b1", NHSNumber: "9449305552", Sender: "A83008",
		SiteType: "P1", Performer: "FA565", ValidityStart: at, TherapyType: TherapyAcute, Items: []OrderItem{{ID: "i1"}}}
	p := rx.Create(o.RxOrder(), rx.Actor{Org: "A83008"}, at)
	p, err := rx.Release(p, "FA565", rx.Actor{Org: "FA565"}, "r1", true, at)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rx.Release(p, "FCG71", rx.Actor{Org: "FCG71"}, "r2", false, at)
	want := `"contained":[{"id":"org-fa565","identifier":[{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"FA565"}],"resourceType":"Organization"}]`
	if oo := string(ErrorOutcome(err)); !strings.Contains(oo, want) {
		t.Errorf("the answer does not name the holder in a contained Organization: %s", oo)
	}
}

// The order's authoredOn and the end of its validity period are not the
// prescription date and change no expiry (nhs-eps-api parent-prescription.ts
// convertParentPrescription; next_activity_generator.py
// _calculate_expiry_date, un_dispensed ignores dispenseWindowHighDate): the
// domain core's order does not carry them.
func TestRxOrderDates(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	today := rx.Day(now)
	for _, tc := range []struct {
		name  string
		order Order
		want  time.Time
	}{
		{"authoredOn is not the prescription date", Order{AuthoredOn: now.AddDate(0, -1, 0)}, today.AddDate(0, 6, 0)},
		{"a validity end earlier is not Spine's expiry", Order{ValidityStart: now, ValidityEnd: now.AddDate(0, 1, 0)}, today.AddDate(0, 6, 0)},
		{"validityPeriod.start before the signature", Order{ValidityStart: now.AddDate(0, -2, 0), SignedAt: now}, today.AddDate(0, 4, 0)},
		{"the signature time", Order{SignedAt: now.AddDate(0, -1, 0)}, today.AddDate(0, 5, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.order
			o.PrescriptionID, o.TherapyType, o.Items = "24F5DA-A83008-7EFE6Z", TherapyAcute, []OrderItem{{ID: "i1"}}
			p := rx.Create(o.RxOrder(), rx.Actor{Org: "A83008"}, now)
			if !p.ExpiresAt.Equal(tc.want) || p.Status != rx.StatusToBeDispensed {
				t.Errorf("expires %s (%s), want %s (0001)", p.ExpiresAt, p.Status, tc.want)
			}
		})
	}
}

// RxOrder carries every field the creation transition reads.
func TestRxOrderFields(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	o := &Order{BundleID: "b", PrescriptionID: "24F5DA-A83008-7EFE6Z", LongID: "L", NHSNumber: "9449305552", Sender: "A83008",
		Receiver: "R", Performer: "FA565", SiteType: "P1", PrescriptionType: "0101", TherapyType: TherapyRepeatDispensing,
		PrescriberOrg: "A99968", SignedAt: at, ValidityStart: at.Add(time.Hour), RepeatsAllowed: 2, ControlledDrug: "CD5",
		SupplyDays: 28, Items: []OrderItem{{ID: "i1", MedicationCode: "39720311000001101", Dosage: "x"}}}
	got := *o.RxOrder()
	want := rx.Order{BundleID: "b", PrescriptionID: "24F5DA-A83008-7EFE6Z", LongID: "L", NHSNumber: "9449305552", Sender: "A83008",
		PrescriberOrg: "A99968", Performer: "FA565", SiteType: "P1", PrescriptionType: "0101", TherapyType: rx.TherapyRepeatDispensing,
		SignedAt: at, ValidityStart: at.Add(time.Hour), RepeatsAllowed: 2, SupplyDays: 28, ControlledDrug: "CD5",
		Items: []rx.OrderItem{{ID: "i1", MedicationCode: "39720311000001101"}}}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("RxOrder\n%+v\nwant\n%+v", got, want)
	}
}

// The domain core's inputs are filled here, from the decoded NHS examples:
// a cancellation's (rx.CancelInput) and a dispense notification's
// (rx.DispenseInput).
func TestRxInputs(t *testing.T) {
	m, err := DecodeMessage(readFixture(t, cancelFixture))
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Cancellation()
	if err != nil {
		t.Fatal(err)
	}
	want := rx.CancelInput{MessageID: "22d28bbf-e9ed-4c77-8374-3aaf88596109", NHSNumber: "9990548609", LineItemID: "299c610b-f4f1-4eac-a7d7-4fb6b0556e11", Reason: "0001"}
	if got := c.RxCancel(); got != want {
		t.Errorf("RxCancel: %+v, want %+v", got, want)
	}

	m, err = DecodeMessage(readFixture(t, "spec/dispensing/dispense-notification/acute-primary-example-02-req.json"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := m.DispenseNotification()
	if err != nil {
		t.Fatal(err)
	}
	got := n.RxDispense()
	if got.ID != "b240434e-cb85-40bb-899c-1c61410c93a7" || got.ReplacementOf != n.ReplacementOf ||
		got.Status != rx.Status(n.PrescriptionStatus) || got.NonDispensingReason != n.NonDispensingReason ||
		len(got.Items) != len(n.Items) || len(got.Lines) != len(n.Items) {
		t.Fatalf("RxDispense: %+v, from %+v", got, n)
	}
	for i, it := range n.Items {
		if got.Items[it.LineItemID] != rx.ItemStatus(it.Status) {
			t.Errorf("line item %s: %q, want %q", it.LineItemID, got.Items[it.LineItemID], it.Status)
		}
		if l := got.Lines[i]; l.LineItem != it.LineItemID || l.Status != rx.ItemStatus(it.Status) || l.Code != it.MedicationCode ||
			l.Medication != it.MedicationDisplay || l.Quantity != it.Quantity || l.Unit != it.QuantityUnit {
			t.Errorf("line %d: %+v, want %+v", i, l, it)
		}
	}
	if l := got.Lines[2]; l.LineItem != item3 || l.Status != "0003" || l.Code != "321080004" || l.Quantity != 15 || l.Unit != "tablet" {
		t.Errorf("line 3: %+v", l)
	}
}
