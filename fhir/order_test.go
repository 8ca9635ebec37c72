package fhir

import (
	"encoding/json"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

type okOrder struct {
	file                                   string
	prescriptionID, nhs, sender, performer string
	items                                  int
	therapy, siteType                      string
}

// okOrders lists the signed prescription-orders of the fixtures that the
// live service accepted, with what Order must read from them. It holds every
// *-Process-Request-*Send*200_OK.json order (TestOrderFixturesFound checks
// that) and three spec examples.
var okOrders = []okOrder{
	{"primary-care/acute-and-repeat-prescribing/1-Process-Request-Send-200_OK.json", "E3E6FA-A83008-41F09Y", "9990548609", "A83008", "FCG71", 2, TherapyAcute, "P1"}, // acute and continuous items: acute (course-of-therapy-type.ts)
	{"primary-care/acute/no-nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/din/1-Process-Request-Send-200_OK.json", "315A44-A83008-4C9BB1", "9990548609", "A83008", "", 2, TherapyAcute, "0004"},
	{"primary-care/acute/no-nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/spurious-code/1-Process-Request-Send-200_OK.json", "FF33AE-A83008-4DDAA4", "9990548609", "A83008", "", 2, TherapyAcute, "0004"},
	{"primary-care/acute/no-nominated-pharmacy/medical-prescriber/author/unknown/1-Process-Request-Send-200_OK.json", "C3A429-A83008-49E0AP", "9990548609", "A83008", "", 2, TherapyAcute, "0004"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json", "24F5DA-A83008-7EFE6Z", "5839945242", "A83008", "FA565", 4, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/3-Process-Request-Multiple-DosageInstructions-Send_200_OK.json", "62DB25-A83008-5CBA2Z", "9449304130", "A83008", "VNE51", 4, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/1-Process-Request-Send-200_OK.json", "58E241-A83008-4E2F8R", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/2-Process-Request-Send-200_OK.json", "5018BB-A83008-4E5885", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/3-Process-Request-Send-200_OK.json", "7388B7-A83008-40BB9A", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/4-Process-Request-Send-200_OK.json", "C293C8-A83008-470B8U", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/5-Process-Request-Send-200_OK.json", "B29396-A83008-4FE9AK", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/6-Process-Request-Send-200_OK.json", "507FE8-A83008-4A859+", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/7-Process-Request-Send-200_OK.json", "A48D9E-A83008-45CE9Q", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/8-Process-Request-Send-200_OK.json", "124C9E-A83008-49E282", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/9-Process-Request-Send-200_OK.json", "7EE792-A83008-4EC8BZ", "9990548609", "A83008", "FCG71", 1, TherapyAcute, "P1"},
	{"primary-care/acute/nominated-pharmacy/responsible-party-org/3-Process-Request-Send-200_OK.json", "24F5DA-A83008-7EFE6Z", "9449304130", "A83008", "VNE51", 4, TherapyAcute, "P1"},
	// Its Provenance.target names the Bundle itself (urn:uuid:<Bundle.id>).
	{"primary-care/acute/nominated-pharmacy/responsible-party-org/separate-telecom/1-Process-Request-Send-200_OK.json", "24F5DA-A83008-7EFE6Z", "9449304130", "A83008", "VNE51", 4, TherapyAcute, "P1"},
	{"primary-care/repeat-dispensing/nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/medication-list/din/1-Process-Request-Send-200_OK.json", "998244-A83008-238DCD", "9990548609", "A83008", "FCG71", 2, TherapyRepeatDispensing, "P1"},
	{"primary-care/repeat-dispensing/nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/medication-list/spurious-code/1-Process-Request-Send-200_OK.json", "6BC03A-A83008-485BAR", "9990548609", "A83008", "FCG71", 2, TherapyRepeatDispensing, "P1"},
	{"primary-care/repeat-prescribing/1-Process-Request-Send-200_OK.json", "24F5DA-A83008-7EFE6Z", "9449304130", "A83008", "VNE51", 4, TherapyContinuous, "P1"},
	{"spec/errors/prescription-order-update/R-0006-Prescription.json", "A96909-A99968-11EBAL", "9449305552", "RBA", "FH542", 1, TherapyAcute, "P1"},
	{"spec/prescribing/prescription-order/eRD-primary-example-req.json", "24F5DA-A83008-7EFE6Z", "9449304130", "A83008", "VNE51", 4, TherapyRepeatDispensing, "P1"},
	{"spec/prescribing/prescription-order/repeat-primary-example-req.json", "24F5DA-A83008-7EFE6Z", "9449304130", "A83008", "VNE51", 4, TherapyContinuous, "P1"},
}

// TestOrderFixturesFound finds the signed orders posted with 200 OK and
// checks that okOrders lists each.
func TestOrderFixturesFound(t *testing.T) {
	found := findFixtures(t, func(rel string) bool {
		ok, _ := path.Match("*-Process-Request-*Send*200_OK.json", path.Base(rel))
		return ok
	})
	n := 0
	for _, rel := range found {
		s := summarize(t, readFixture(t, rel))
		if s.event != EventPrescriptionOrder || !s.signed {
			continue
		}
		n++
		if !slices.ContainsFunc(okOrders, func(o okOrder) bool { return o.file == rel }) {
			t.Errorf("%s is a signed order posted with 200 OK that okOrders does not list", rel)
		}
	}
	if n < 20 {
		t.Errorf("found %d signed orders, want at least 20: are the fixtures there?", n)
	}
}

func TestOrderFixtures(t *testing.T) {
	for _, tc := range okOrders {
		t.Run(tc.file, func(t *testing.T) {
			body := readFixture(t, tc.file)
			m, err := DecodeMessage(body)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			o, err := m.Order(written(body))
			if err != nil {
				t.Fatalf("Order: %v", err)
			}
			got := []any{o.PrescriptionID, o.NHSNumber, o.Sender, o.Performer, len(o.Items), o.TherapyType, o.SiteType}
			want := []any{tc.prescriptionID, tc.nhs, tc.sender, tc.performer, tc.items, tc.therapy, tc.siteType}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
			if !ValidUUID(o.BundleID) || !ValidUUID(o.LongID) || o.PrescriptionType == "" || o.PrescriberOrg == "" {
				t.Errorf("incomplete order: %+v", o)
			}
			for _, it := range o.Items {
				if !ValidUUID(it.ID) || it.MedicationCode == "" || it.Quantity <= 0 || it.Dosage == "" {
					t.Errorf("incomplete item: %+v", it)
				}
			}
			if &m.Raw[0] != &body[0] || len(m.Raw) != len(body) {
				t.Error("Message.Raw is not the body")
			}
		})
	}
}

// TestOrderFields checks every field of two orders.
func TestOrderFields(t *testing.T) {
	day := func(s string) time.Time { tm, _ := time.Parse(time.RFC3339Nano, s); return tm }
	item := func(id, code, display string, qty float64, dosage string) OrderItem {
		return OrderItem{ID: id, MedicationCode: code, MedicationDisplay: display, Quantity: qty, QuantityUnit: "tablet", Dosage: dosage}
	}
	for _, tc := range []struct {
		file string
		want Order
	}{
		{order4Items, Order{
			BundleID: "46183abc-9fad-4673-85db-ce2cb6614732", PrescriptionID: "24F5DA-A83008-7EFE6Z",
			LongID: "20ba5fb5-cb58-462c-923e-22d180b09356", NHSNumber: "5839945242", Sender: "A83008",
			Receiver: "FA565", Performer: "FA565", SiteType: "P1", PrescriptionType: "0101", TherapyType: TherapyAcute,
			PrescriberOrg: "A83008", ValidityStart: day("2022-10-21T00:00:00Z"), SignedAt: day("2022-10-21T13:47:00Z"), SupplyDays: 10,
			Items: []OrderItem{
				item("a54219b8-f741-4c47-b662-e4f8dfa49ab6", "39732311000001104", "Amoxicillin 250mg capsules", 20, "2 times a day for 10 days"),
				item("6989b7bd-8db6-428c-a593-4022e3044c00", "322341003", "Co-codamol 30mg/500mg tablets", 20, "2 times a day for 10 days"),
				item("2868554c-5565-4d31-b92a-c5b8dab8b90a", "321080004", "Pseudoephedrine hydrochloride 60mg tablets", 30, "3 times a day for 10 days"),
				item("5cb17f5a-11ac-4e18-825f-6470467238b3", "324252006", "Azithromycin 250mg capsules", 30, "3 times a day for 10 days"),
			},
		}},
		{"spec/prescribing/prescription-order/eRD-primary-example-req.json", Order{
			BundleID: "46183abc-9fad-4673-85db-ce2cb6614732", PrescriptionID: "24F5DA-A83008-7EFE6Z",
			LongID: "20ba5fb5-cb58-462c-923e-22d180b09356", NHSNumber: "9449304130", Sender: "A83008",
			Receiver: "VNE51", Performer: "VNE51", SiteType: "P1", PrescriptionType: "0101", TherapyType: TherapyRepeatDispensing,
			PrescriberOrg: "A83008", ValidityStart: day("2022-10-21T00:00:00Z"), ValidityEnd: day("2022-11-21T23:59:59Z"), SignedAt: day("2022-10-21T13:47:00Z"),
			RepeatsAllowed: 6, SupplyDays: 10,
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, o, err := validate(readFixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.Items == nil {
				o.Items = nil
			}
			if !reflect.DeepEqual(*o, tc.want) {
				t.Errorf("got  %+v\nwant %+v", *o, tc.want)
			}
		})
	}
}

// TestErrorFixtures posts each NHS request that the live service refused and
// compares the OperationOutcome with the one it answered.
func TestErrorFixtures(t *testing.T) {
	// Each answer must match the live service's issue code, codes and
	// expression (severity is always "error", as the contract says).
	issueCode := map[string]string{}
	requests := findFixtures(t, func(rel string) bool {
		a, _ := path.Match("errors/*-Process-Request-Send-400_*.json", rel)
		b, _ := path.Match("errors/*-Prepare-Request-400_*.json", rel)
		return a || b
	})
	if len(requests) < 4 {
		t.Fatalf("found %d error requests, want 4", len(requests))
	}
	for _, req := range requests {
		resp := strings.Replace(req, "-Request-", "-Response-", 1)
		t.Run(req, func(t *testing.T) {
			_, _, err := validate(readFixture(t, req))
			if err == nil {
				t.Fatal("accepted")
			}
			fhirErr(t, err)
			var got, want OperationOutcome
			if err := json.Unmarshal(ErrorOutcome(err), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(readFixture(t, resp), &want); err != nil {
				t.Fatal(err)
			}
			g, w := got.Issue[0], want.Issue[0]
			if c, ok := issueCode[resp]; ok {
				w.Code = c
			}
			if g.Code != w.Code || g.Severity != "error" {
				t.Errorf("issue code %q severity %q, want %q error", g.Code, g.Severity, w.Code)
			}
			if w.Expression != nil && !slices.Equal(g.Expression, w.Expression) {
				t.Errorf("expression %q, want %q", g.Expression, w.Expression)
			}
			if w.Diagnostics != "" && g.Diagnostics != w.Diagnostics {
				t.Errorf("diagnostics %q, want %q", g.Diagnostics, w.Diagnostics)
			}
			if g.Details == nil {
				t.Fatal("no details.coding")
			}
			if w.Details != nil {
				for _, wc := range w.Details.Coding {
					if !slices.ContainsFunc(g.Details.Coding, func(gc Coding) bool {
						return gc.Code == wc.Code && (wc.Display == "" || gc.Display == wc.Display)
					}) {
						t.Errorf("details.coding %+v lacks %+v", g.Details.Coding, wc)
					}
				}
			}
		})
	}
}

// TestPrepareRequestsUnsigned checks that the bundles posted to $prepare
// (not yet signed) are refused as orders.
func TestPrepareRequestsUnsigned(t *testing.T) {
	files := findFixtures(t, func(rel string) bool {
		return strings.Contains(rel, "Prepare-Request") && strings.HasSuffix(rel, "200_OK.json") ||
			rel == "spec/prepare/eRD-primary-example-req.json"
	})
	if len(files) < 10 {
		t.Fatalf("found %d prepare requests, want at least 10", len(files))
	}
	for _, rel := range files {
		t.Run(rel, func(t *testing.T) {
			_, _, err := validate(readFixture(t, rel))
			if e := fhirErr(t, err); e.Code != CodeMissingDigitalSignature || e.IssueType != "required" ||
				e.Expression[0] != "Bundle.entry.resource.ofType(Provenance).signature" {
				t.Errorf("got %+v, want MISSING_DIGITAL_SIGNATURE", e)
			}
		})
	}
}

// TestDecodeMessageFixtures decodes every message Bundle of the fixtures
// whose event the broker accepts. (spec/errors/example-b-spine-error-patient-deceased
// has a Provenance.target naming nothing in its Bundle, a typo of its
// Bundle.identifier: EPS does not resolve Provenance.target, and neither does
// the broker.) (The dispense
// notifications errors/3-... and acute-primary-example-05, whose contained
// MedicationRequest names the order's Patient, decode: see mayPointOutside.)
func TestDecodeMessageFixtures(t *testing.T) {
	dangling := map[string]string{}
	n := 0
	for _, rel := range findFixtures(t, func(string) bool { return true }) {
		b := readFixture(t, rel)
		s := summarize(t, b)
		if s.bundleType != "message" || s.event == EventPrescriptionOrderResponse {
			continue
		}
		n++
		m, err := DecodeMessage(b)
		if want, ok := dangling[rel]; ok {
			if e := fhirErr(t, err); e.Code != CodeInvalidValue || e.Expression[0] != want {
				t.Errorf("%s: got %v %q, want a dangling reference at %s", rel, err, e.Expression, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if m.Event != s.event || len(m.Entries) == 0 || m.Entries[0].ResourceType != "MessageHeader" {
			t.Errorf("%s: decoded %+v", rel, m)
		}
		for k, e := range m.Entries {
			if !json.Valid(e.Resource) || summarizeType(e.Resource) != e.ResourceType {
				t.Errorf("%s: entry %d is not its resource", rel, k)
			}
		}
	}
	if n < 30 {
		t.Errorf("decoded %d messages, want at least 30", n)
	}
}

func summarizeType(res []byte) string {
	var v struct {
		ResourceType string `json:"resourceType"`
	}
	_ = json.Unmarshal(res, &v)
	return v.ResourceType
}

func TestDecodeMessageFields(t *testing.T) {
	m, err := DecodeMessage(readFixture(t, "spec/dispensing/dispense-notification/acute-primary-example-04-req.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Event != EventDispenseNotification || m.ReplacementOf != "a14d4fc1-82a2-4a82-aae2-50e212e7b907" {
		t.Errorf("event %q replacementOf %q", m.Event, m.ReplacementOf)
	}
	m, err = DecodeMessage(readFixture(t, order4Items))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"MessageHeader", "MedicationRequest", "MedicationRequest", "MedicationRequest", "MedicationRequest",
		"Patient", "PractitionerRole", "Practitioner", "Organization", "Provenance"}
	var got []string
	for _, e := range m.Entries {
		got = append(got, e.ResourceType)
	}
	if !slices.Equal(got, want) || m.BundleID != "46183abc-9fad-4673-85db-ce2cb6614732" || m.Sender != "A83008" ||
		m.Receiver != "FA565" || m.ReplacementOf != "" || m.Entries[9].ID != "28828c55-8fa7-42d7-916f-fcf076e0c10e" ||
		m.Entries[1].FullURL != "urn:uuid:a54219b8-f741-4c47-b662-e4f8dfa49ab6" {
		t.Errorf("decoded %+v", m)
	}
}
