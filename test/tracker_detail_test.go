package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// clinicalView is a decoded detail view: its entries by fullUrl, in order.
type clinicalView struct {
	order []string
	byURL map[string]map[string]any
}

func readClinicalView(t *testing.T, res *response) clinicalView {
	t.Helper()
	if res.Status != 200 {
		t.Fatalf("detail: %d %s", res.Status, res.Body)
	}
	var b struct {
		ResourceType, Type string
		Entry              []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
		}
	}
	if err := json.Unmarshal(res.Body, &b); err != nil || b.ResourceType != "Bundle" || b.Type != "searchset" {
		t.Fatalf("not a searchset Bundle (%v): %.300s", err, res.Body)
	}
	v := clinicalView{byURL: map[string]map[string]any{}}
	for _, e := range b.Entry {
		v.order = append(v.order, e.FullURL)
		v.byURL[e.FullURL] = e.Resource
	}
	return v
}

func (v clinicalView) of(typ string) []map[string]any {
	var out []map[string]any
	for _, u := range v.order {
		if v.byURL[u]["resourceType"] == typ {
			out = append(out, v.byURL[u])
		}
	}
	return out
}

// at returns the value at path (object keys and array indices) under x.
func at(x any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := x.(map[string]any)
			x = m[k]
		case int:
			a, _ := x.([]any)
			if k >= len(a) {
				return nil
			}
			x = a[k]
		}
	}
	return x
}

// resolve returns the entry a reference names; it fails the test when the
// reference does not resolve inside the Bundle.
func (v clinicalView) resolve(t *testing.T, ref any) map[string]any {
	t.Helper()
	s, _ := ref.(string)
	r, ok := v.byURL[s]
	if !ok {
		t.Errorf("reference %v does not resolve inside the Bundle", ref)
	}
	return r
}

// dispenseEvents are the history actions of dispense notifications, with
// the MedicationDispenses each points at.
func (v clinicalView) dispenseEvents(t *testing.T) [][]map[string]any {
	t.Helper()
	rg := v.of("RequestGroup")[0]
	var out [][]map[string]any
	hist, _ := at(rg, "action", 1, "action").([]any)
	for _, h := range hist {
		if at(h, "title") != hDispense {
			continue
		}
		var mds []map[string]any
		subs, _ := at(h, "action").([]any)
		for _, s := range subs {
			md := v.resolve(t, at(s, "resource", "reference"))
			if md["resourceType"] != "MedicationDispense" {
				t.Errorf("a dispense notification's action points at a %v", md["resourceType"])
			}
			mds = append(mds, md)
		}
		out = append(out, mds)
	}
	return out
}

// withNonDispensingReasons gives every MedicationDispense of a dispense
// notification the non-dispensing reason of its item (statusReasonCodeableConcept)
// and, when rx is not empty, the prescription's (Extension-DM-PrescriptionNonDispensingReason),
// as the NHS dispensing examples carry them.
func withNonDispensingReasons(body []byte, items map[string]string, rx string) []byte {
	return fhirgen.Mutate(body, func(m map[string]any) {
		for _, e := range entries(m) {
			md := resource(e)
			if md["resourceType"] != "MedicationDispense" {
				continue
			}
			var lineItem string
			for _, c := range md["contained"].([]any) {
				if c := c.(map[string]any); c["resourceType"] == "MedicationRequest" {
					lineItem = at(c, "identifier", 0, "value").(string)
				}
			}
			if reason := items[strings.ToLower(lineItem)]; reason != "" {
				md["statusReasonCodeableConcept"] = map[string]any{"coding": []any{map[string]any{
					"system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason", "code": reason}}}
			}
			if rx != "" {
				md["extension"] = append(md["extension"].([]any), map[string]any{
					"url":         "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason",
					"valueCoding": map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason", "code": rx}})
			}
		}
	})
}

// TestTrackerDetailDispensesAndCancellations dispenses (in full, in part,
// in two notifications, not at all with reasons) and cancels (before
// release, with the dispenser) prescriptions through the API, then reads
// their detail: a MedicationDispense per dispensed item with its
// medicationdispense-type and non-dispensing reason, each notification's
// history action pointing at its own inside the Bundle, and
// MedicationRequest.statusReason for a cancellation (the NHS Clinical
// Prescription Tracker API's clinicalView examples and
// generateFhirResponse.ts).
func TestTrackerDetailDispensesAndCancellations(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	reader := b.token(auth.RoleTracker, "X26")
	type dn struct {
		items   []string // per line item: medicationdispense-type ("" not in the message)
		reasons []string // per line item: non-dispensing reason
		rx      string   // the prescription's non-dispensing reason
		status  string   // the prescription status it states
	}
	type mdWant struct{ typ, reason string } // per line item named
	for _, tc := range []struct {
		name          string
		release       bool
		dns           []dn
		cancel        map[int]string // line item -> reason
		wantStatus    string
		wantDispenses [][]mdWant // per notification event
		wantRxReason  string     // RequestGroup Extension-DM-PrescriptionNonDispensingReason
		wantMR        []string   // per line item: statusReason code
		wantRxCancel  string     // RequestGroup cancellationReason
	}{
		{name: "dispensed in full", release: true,
			dns:        []dn{{items: []string{"0001", "0001", "0001", "0001"}, status: "0006"}},
			wantStatus: "0006", wantDispenses: [][]mdWant{{{"0001", ""}, {"0001", ""}, {"0001", ""}, {"0001", ""}}},
			wantMR: []string{"", "", "", ""}},
		{name: "dispensed in part", release: true,
			dns:        []dn{{items: []string{"0001", "0003", "0004", "0004"}, status: "0003"}},
			wantStatus: "0003", wantDispenses: [][]mdWant{{{"0001", ""}, {"0003", ""}, {"0004", ""}, {"0004", ""}}},
			wantMR: []string{"", "", "", ""}},
		{name: "dispensed in two notifications", release: true,
			dns: []dn{{items: []string{"0001", "0001", "0004", "0004"}, status: "0003"},
				{items: []string{"0001", "0001", "0001", "0001"}, status: "0006"}}, // as 200_AcuteWithMultipleItems_MultipleDispenses: every item named again
			wantStatus: "0006", wantDispenses: [][]mdWant{{{"0001", ""}, {"0001", ""}, {"0004", ""}, {"0004", ""}}, {{"0001", ""}, {"0001", ""}, {"0001", ""}, {"0001", ""}}},
			wantMR: []string{"", "", "", ""}},
		{name: "not dispensed with reasons", release: true,
			dns:        []dn{{items: []string{"0002", "0002", "0002", "0002"}, reasons: []string{"0002", "0009", "0006", "0007"}, rx: "0002", status: "0007"}},
			wantStatus: "0007", wantDispenses: [][]mdWant{{{"0002", "0002"}, {"0002", "0009"}, {"0002", "0006"}, {"0002", "0007"}}},
			wantRxReason: "0002", wantMR: []string{"", "", "", ""}},
		{name: "one item not dispensed with a reason", release: true,
			dns:        []dn{{items: []string{"0002", "0004", "0004", "0004"}, reasons: []string{"0001", "", "", ""}, status: "0003"}},
			wantStatus: "0003", wantDispenses: [][]mdWant{{{"0002", "0001"}, {"0004", ""}, {"0004", ""}, {"0004", ""}}},
			wantMR: []string{"", "", "", ""}},
		{name: "one item cancelled", cancel: map[int]string{1: "0002"},
			wantStatus: "0001", wantMR: []string{"", "0002", "", ""}},
		{name: "all items cancelled", cancel: map[int]string{0: "0001", 1: "0001", 2: "0001", 3: "0001"},
			wantStatus: "0005", wantMR: []string{"0001", "0001", "0001", "0001"}, wantRxCancel: "0001"},
		{name: "marked for cancellation with the dispenser", release: true, cancel: map[int]string{0: "0005"},
			wantStatus: "0002", wantMR: []string{"0005", "", "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dispenser := newODS("TD")
			g, err := tmpl.Order(fhirgen.Options{Performer: dispenser})
			if err != nil {
				t.Fatal(err)
			}
			if res := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); res.Status != 200 {
				t.Fatalf("order: %d %s", res.Status, res.Body)
			}
			if tc.release {
				if res := b.release(dispenser, g.ShortID); res.Status != 200 {
					t.Fatalf("release: %d %s", res.Status, res.Body)
				}
			}
			for k, x := range tc.dns {
				statuses, reasons := map[string]string{}, map[string]string{}
				for i, s := range x.items {
					if s != "" {
						statuses[g.ItemIDs[i]] = s
					}
					if i < len(x.reasons) && x.reasons[i] != "" {
						reasons[strings.ToLower(g.ItemIDs[i])] = x.reasons[i]
					}
				}
				body, _ := fhirgen.DispenseNotification(g, dispenser, statuses, x.status, "")
				body = withNonDispensingReasons(body, reasons, x.rx)
				if res := b.post(b.token(auth.RoleDispenser, dispenser), body); res.Status != 200 {
					t.Fatalf("dispense notification %d: %d %s", k, res.Status, res.Body)
				}
			}
			for i := range g.ItemIDs {
				reason, ok := tc.cancel[i]
				if !ok {
					continue
				}
				body, _ := fhirgen.Cancellation(g, g.ItemIDs[i], reason)
				if res := b.post(b.token(auth.RolePrescriber, g.Sender), body); res.Status != 200 && res.Status != 400 {
					t.Fatalf("cancel item %d: %d %s", i, res.Status, res.Body)
				}
			}

			v := readClinicalView(t, b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, reader, nil))
			rg := v.of("RequestGroup")[0]
			if got := at(rg, "extension", 0, "extension", 0, "valueCoding", "code"); got != tc.wantStatus {
				t.Fatalf("status %v, want %s", got, tc.wantStatus)
			}

			// The MedicationDispenses, each notification's own.
			events := v.dispenseEvents(t)
			if len(events) != len(tc.wantDispenses) {
				t.Fatalf("%d dispense notification events, want %d", len(events), len(tc.wantDispenses))
			}
			total := 0
			for k, mds := range events {
				want := tc.wantDispenses[k]
				total += len(mds)
				if len(mds) != len(want) {
					t.Errorf("notification %d points at %d MedicationDispenses, want %d", k, len(mds), len(want))
					continue
				}
				for j, md := range mds {
					what := fmt.Sprintf("notification %d dispense %d", k, j)
					if got := at(md, "type", "coding", 0, "code"); got != want[j].typ ||
						at(md, "type", "coding", 0, "system") != "https://fhir.nhs.uk/CodeSystem/medicationdispense-type" {
						t.Errorf("%s: type %v, want %s", what, at(md, "type"), want[j].typ)
					}
					got, _ := at(md, "statusReasonCodeableConcept", "coding", 0, "code").(string)
					if got != want[j].reason {
						t.Errorf("%s: non-dispensing reason %q, want %q", what, got, want[j].reason)
					}
					status := map[bool]string{true: "in-progress", false: "unknown"}[k == len(events)-1]
					if md["status"] != status {
						t.Errorf("%s: status %v, want %s", what, md["status"], status)
					}
					mr := v.resolve(t, at(md, "authorizingPrescription", 0, "reference"))
					if mr["resourceType"] != "MedicationRequest" || !strings.EqualFold(fmt.Sprint(at(mr, "identifier", 0, "value")), fmt.Sprint(at(md, "identifier", 0, "value"))) {
						t.Errorf("%s: authorizes %v, not its line item's MedicationRequest", what, at(mr, "identifier"))
					}
					role := v.resolve(t, at(md, "performer", 0, "actor", "reference"))
					if at(role, "organization", "identifier", "value") != dispenser {
						t.Errorf("%s: performer %v, want %s", what, role, dispenser)
					}
				}
			}
			if n := len(v.of("MedicationDispense")); n != total {
				t.Errorf("%d MedicationDispenses, %d of them pointed at by the history", n, total)
			}
			var gotRx string
			var gotCancel string
			for _, e := range rg["extension"].([]any) {
				switch at(e, "url") {
				case "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason":
					gotRx, _ = at(e, "valueCoding", "code").(string)
				case "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory":
					if at(e, "extension", 0, "url") == "cancellationReason" {
						gotCancel, _ = at(e, "extension", 0, "valueCoding", "code").(string)
					}
				}
			}
			if gotRx != tc.wantRxReason || gotCancel != tc.wantRxCancel {
				t.Errorf("prescription non-dispensing reason %q, cancellation reason %q; want %q, %q", gotRx, gotCancel, tc.wantRxReason, tc.wantRxCancel)
			}

			// MedicationRequest.statusReason of a cancellation.
			for _, mr := range v.of("MedicationRequest") {
				i := -1
				for k, id := range g.ItemIDs {
					if strings.EqualFold(id, fmt.Sprint(at(mr, "identifier", 0, "value"))) {
						i = k
					}
				}
				if i < 0 {
					t.Fatalf("MedicationRequest of an unknown line item %v", at(mr, "identifier"))
				}
				got, _ := at(mr, "statusReason", "coding", 0, "code").(string)
				if got != tc.wantMR[i] {
					t.Errorf("item %d statusReason %q, want %q", i, got, tc.wantMR[i])
				}
				if got != "" && at(mr, "statusReason", "coding", 0, "system") != "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason" {
					t.Errorf("item %d statusReason system %v", i, at(mr, "statusReason", "coding", 0, "system"))
				}
			}
		})
	}
}

// TestTrackerBadRequestWording: a search with both parameters or neither,
// and a detail without a prescription ID, answer 400 in the Clinical
// Prescription Tracker API's words (packages/prescriptionSearch and
// packages/clinicalView validateRequest.ts), with its details coding
// (errors/400_BadRequest.json).
func TestTrackerBadRequestWording(t *testing.T) {
	b := startBroker(t, "")
	tok := b.token(auth.RoleTracker, "X26")
	id, nhs := fhirgen.ShortID("A83008"), fhirgen.NHSNumber()
	for _, tc := range []struct {
		path, words string
	}{
		{"/FHIR/R4/RequestGroup?prescriptionId=" + id + "&nhsNumber=" + nhs,
			"Invalid query string parameters; only prescriptionId or nhsNumber must be provided, not both."},
		{"/FHIR/R4/RequestGroup?nhsNumber=" + nhs + "&prescriptionId=" + id,
			"Invalid query string parameters; only prescriptionId or nhsNumber must be provided, not both."},
		{"/FHIR/R4/RequestGroup", "Missing required query string parameter; either prescriptionId or nhsNumber must be included."},
		{"/FHIR/R4/RequestGroup?issueNumber=1", "Missing required query string parameter; either prescriptionId or nhsNumber must be included."},
		{"/FHIR/R4/RequestGroup/", "Missing required path parameter: prescriptionId."},
		{"/FHIR/R4/RequestGroup/?issueNumber=2", "Missing required path parameter: prescriptionId."},
	} {
		res := b.do("GET", tc.path, tok, nil)
		if res.Status != 400 {
			t.Errorf("%s: %d, want 400: %s", tc.path, res.Status, res.Body)
			continue
		}
		is := res.outcome(t).Issue[0]
		if is.Code != "value" || is.Diagnostics != tc.words || len(is.Details.Coding) != 1 ||
			is.Details.Coding[0].System != "https://fhir.nhs.uk/CodeSystem/http-error-codes" || is.Details.Coding[0].Code != "BAD_REQUEST" ||
			is.Details.Coding[0].Display != "400: The Server was unable to process the request." {
			t.Errorf("%s: %+v\nwant diagnostics %q, code value, BAD_REQUEST", tc.path, is, tc.words)
		}
	}
	// Without a token it is 401, whatever is asked.
	if res := b.do("GET", "/FHIR/R4/RequestGroup/", "", nil); res.Status != 401 {
		t.Errorf("RequestGroup/ without a token: %d", res.Status)
	}
}
