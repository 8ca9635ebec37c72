package fhirgen

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

// decodeOrder decodes and validates a prescription-order.
func decodeOrder(t *testing.T, body []byte) (*fhir.Order, error) {
	t.Helper()
	msg, err := fhir.DecodeMessage(body)
	if err != nil {
		t.Fatalf("DecodeMessage: %v", err)
	}
	written, _ := MessageDate(body)
	return msg.Order(written)
}

// Every kind of generated order becomes a valid eRD order.
func TestRepeatDispensing(t *testing.T) {
	start := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	for name, tmpl := range templates(t) {
		t.Run(name, func(t *testing.T) {
			g, err := tmpl.Order(Options{})
			if err != nil {
				t.Fatal(err)
			}
			body := RepeatDispensing(g.Body, 5, 28, start)
			o, err := decodeOrder(t, body)
			if err != nil {
				t.Fatalf("Order: %v", err)
			}
			if o.TherapyType != fhir.TherapyRepeatDispensing || o.RepeatsAllowed != 5 || o.SupplyDays != 28 ||
				!o.ValidityStart.Equal(time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)) || !o.ValidityEnd.Equal(time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond)) ||
				!o.AuthoredOn.Equal(start) {
				t.Errorf("order %+v", o)
			}
			if o.PrescriptionID != g.ShortID || o.LongID != g.LongID || o.NHSNumber != g.NHSNumber || len(o.Items) != len(g.ItemIDs) {
				t.Errorf("the identifiers changed: %+v, generated %+v", o, g)
			}
			if !bytes.Contains(body, []byte(`"authorisationExpiryDate","valueDateTime":"2026-03-14"`)) {
				t.Errorf("no authorisationExpiryDate a year after the start")
			}
			if bytes.Count(body, []byte(`"numberOfRepeatsAllowed","valueInteger":5`)) != bytes.Count(body, []byte(fhir.ExtRepeatInformation)) {
				t.Errorf("a basedOn repeat information not saying 5 repeats allowed")
			}
			// Generated lifecycle messages follow it.
			g.Body = body
			msg, _ := fhir.DecodeMessage(mustDispense(g))
			if _, err := msg.DispenseNotification(); err != nil {
				t.Errorf("dispense notification of the eRD order: %v", err)
			}
		})
	}
}

func mustDispense(g *Generated) []byte {
	body, _ := DispenseNotification(g, "FCG71", map[string]string{g.ItemIDs[0]: "0001"}, "0003", "")
	return body
}

// The order's limits still hold: too many issues, and Schedule 2 or 3
// controlled drugs (marked as controlled_test.go in package fhir does).
func TestRepeatDispensingRefused(t *testing.T) {
	cd := func(code string) func(m map[string]any) {
		return func(m map[string]any) {
			for _, e := range arr(m, "entry") {
				if r := resourceOf(e); r["resourceType"] == "MedicationRequest" {
					r["extension"] = append(arr(r, "extension"), map[string]any{"url": fhir.ExtControlledDrug, "extension": []any{
						map[string]any{"url": "quantityWords", "valueString": "twenty"},
						map[string]any{"url": "schedule", "valueCoding": map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug", "code": code}},
					}})
				}
			}
		}
	}
	tmpl, err := NewTemplate(Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := tmpl.Order(Options{})
	start := time.Now()
	for _, tc := range []struct {
		name string
		body []byte
		want string // part of the FHIRPath of the error; "" when accepted
	}{
		{"Schedule 2", RepeatDispensing(Mutate(g.Body, cd("CD2")), 5, 28, start), "ControlledDrug"},
		{"Schedule 3", Mutate(RepeatDispensing(g.Body, 5, 28, start), cd("CD3")), "ControlledDrug"},
		{"Schedule 5", RepeatDispensing(Mutate(g.Body, cd("CD5")), 5, 28, start), ""},
		{"100 issues", RepeatDispensing(g.Body, 99, 1, start), "numberOfRepeatsAllowed"},
		// Spine has no "issues x days supply" rule (issue 10).
		{"14 issues of 28 days", RepeatDispensing(g.Body, 13, 28, start), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := decodeOrder(t, tc.body)
			if tc.want == "" {
				if err != nil || o.TherapyType != fhir.TherapyRepeatDispensing {
					t.Errorf("got %+v %v", o, err)
				}
				return
			}
			e, ok := err.(*fhir.Error)
			if !ok || e.Kind != fhir.KindInvalid || len(e.Expression) == 0 || !strings.Contains(e.Expression[0], tc.want) {
				t.Errorf("err = %v, want an INVALID error naming %s", err, tc.want)
			}
		})
	}
}

// issueOf decodes a lifecycle message made by this package and returns the
// issue it names.
func issueOf(t *testing.T, kind string, body []byte) int {
	t.Helper()
	switch kind {
	case "return", "withdraw":
		tr, err := fhir.DecodeTaskRequest(body)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		return tr.Issue
	case "claim", "claim items":
		c, err := fhir.DecodeClaim(body)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		return c.Issue
	}
	msg, err := fhir.DecodeMessage(body)
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	dn, err := msg.DispenseNotification()
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	return dn.Issue
}

// The lifecycle messages name no issue, unless ForIssue makes them.
func TestForIssue(t *testing.T) {
	start := time.Now().UTC()
	for name, tmpl := range templates(t) {
		for _, erd := range []bool{false, true} {
			g, _ := tmpl.Order(Options{})
			name := name
			if erd {
				name += " eRD"
				g.Body = RepeatDispensing(g.Body, 5, 28, start)
			}
			statuses := map[string]string{}
			for _, id := range g.ItemIDs {
				statuses[id] = "0001"
			}
			dn, dnID := DispenseNotification(g, "FCG71", statuses, "0006", "")
			claim, _ := Claim(g, "FCG71", "")
			claimItems, _ := ClaimItems(g, "FCG71", "", map[string]string{g.ItemIDs[0]: "0002"}, "0006")
			for kind, body := range map[string][]byte{
				"return":                ReturnTask(g, "FCG71", "0003"),
				"withdraw":              WithdrawTask(g, "FCG71", dnID, "MU"),
				"dispense-notification": dn,
				"claim":                 claim,
				"claim items":           claimItems,
			} {
				t.Run(name+"/"+kind, func(t *testing.T) {
					if bytes.Contains(body, []byte(fhir.ExtRepeatInformation)) {
						t.Errorf("the generated message has an Extension-EPS-RepeatInformation")
					}
					if n := issueOf(t, kind, body); n != 0 {
						t.Errorf("issue %d without ForIssue", n)
					}
					third := ForIssue(body, 3, 6)
					if n := issueOf(t, kind, third); n != 3 {
						t.Errorf("issue %d, want 3", n)
					}
					if !bytes.Contains(third, []byte(`{"url":"numberOfRepeatsAllowed","valueInteger":5}`)) {
						t.Errorf("no numberOfRepeatsAllowed 5: %s", third)
					}
					// Issue 3 is numberOfRepeatsIssued 2: every message
					// counts from 0 (the UK Core numberOfPrescriptionsIssued
					// from 1).
					if !bytes.Contains(third, []byte(`{"url":"numberOfRepeatsIssued","valueInteger":2}`)) {
						t.Errorf("numberOfRepeatsIssued 2 (from 0) not written")
					}
					if kind == "dispense-notification" && !bytes.Contains(third, []byte(`{"url":"numberOfPrescriptionsIssued","valueUnsignedInt":3}`)) {
						t.Errorf("no UK Core numberOfPrescriptionsIssued 3 in the dispense notification")
					}
					if n := issueOf(t, kind, ForIssue(third, 4, 6)); n != 4 {
						t.Errorf("issue %d after a second ForIssue, want 4", n)
					}
					checkPlaces(t, kind, third)
				})
			}
		}
	}
}

// checkPlaces checks where ForIssue put the repeat information: once in
// each place the NHS examples have it, and nowhere else.
func checkPlaces(t *testing.T, kind string, body []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	count := func(e any) int {
		n := 0
		if em, ok := e.(map[string]any); ok {
			for _, x := range arr(em, "extension") {
				if urlOf(x) == fhir.ExtRepeatInformation {
					n++
				}
			}
		}
		return n
	}
	want, places := 0, 0
	switch kind {
	case "return", "withdraw":
		want, places = 1, count(m)
	case "dispense-notification":
		for _, e := range arr(m, "entry") {
			md := resourceOf(e)
			if md["resourceType"] != "MedicationDispense" {
				continue
			}
			want += 2
			places += count(md)
			for _, c := range arr(md, "contained") {
				if mr := c.(map[string]any); mr["resourceType"] == "MedicationRequest" {
					places += count(mr) + count(arr(mr, "basedOn")[0])
				}
			}
		}
	default:
		for _, x := range arr(m, "item") {
			want++
			places += count(x)
			for _, d := range arr(x.(map[string]any), "detail") {
				want++
				places += count(d)
			}
		}
	}
	if total := bytes.Count(body, []byte(fhir.ExtRepeatInformation)); places != want || total != want {
		t.Errorf("%d repeat informations in the expected places, %d in all; want %d", places, total, want)
	}
}
