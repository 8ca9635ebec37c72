package tracker

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

const (
	epsFixtures     = "../test/testdata/nhs/nhs-eps-api"
	trackerFixtures = "../test/testdata/nhs/nhs-tracker-api"

	// Accepted orders of the NHS EPS API examples.
	orderAcute4Items = "primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json"                                                              // 5839945242, 4 acute items, nominated FA565
	orderAcuteRepeat = "primary-care/acute-and-repeat-prescribing/1-Process-Request-Send-200_OK.json"                                                                             // 9990548609, acute and continuous
	orderERD         = "primary-care/repeat-dispensing/nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/medication-list/din/1-Process-Request-Send-200_OK.json" // 9990548609, 6 issues
)

var created = time.Date(2026, 2, 27, 15, 35, 28, 0, time.UTC)

// fixtureRecord reads an order fixture and returns the record Create makes
// of it at the given time and the order's details.
func fixtureRecord(t *testing.T, rel string, at time.Time) (*rx.Prescription, *fhir.OrderDetails) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(epsFixtures, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	if rel == orderAcuteRepeat {
		// EPS makes a mix of acute and continuous items acute
		// (course-of-therapy-type.ts): these views want the example's
		// repeat prescription, so every item is continuous.
		b = fhirgen.Mutate(b, func(m map[string]any) {
			for _, e := range m["entry"].([]any) {
				if r := e.(map[string]any)["resource"].(map[string]any); r["resourceType"] == "MedicationRequest" {
					for _, c := range r["courseOfTherapyType"].(map[string]any)["coding"].([]any) {
						c.(map[string]any)["code"] = fhir.TherapyContinuous
					}
				}
			}
		})
	}
	m, err := fhir.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	written, _ := fhirgen.MessageDate(b)
	o, err := m.Order(written)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fhir.DecodeOrderDetails(b)
	if err != nil {
		t.Fatal(err)
	}
	// The NHS examples are dated 2021-2022, so an order is expired on
	// arrival 6 months after its date: the record is created as of that
	// date (its dates as the example has them), and shows the arrival at
	// the test's time with a validity running from then, so that the views
	// of dispensing it can be tested.
	when := at
	if d := rx.PrescriptionDate(o.RxOrder(), at); d.Before(at) {
		when = d
	}
	rec := rx.Create(o.RxOrder(), rx.Actor{User: "u", Org: o.Sender}, when)
	rec.Created, rec.History[0].Time = at, at
	rec.ExpiresAt = rx.Day(at).AddDate(1, 0, 0)
	for i := range rec.Others {
		rec.Others[i].ExpiresAt = rec.ExpiresAt
	}
	return rec, d
}

// datedRecord is fixtureRecord of the fixture given current dates: dated at
// (fhirgen.Redate) and created then, so that the transitions tests apply to
// it act before it expires.
func datedRecord(t *testing.T, rel string, at time.Time) (*rx.Prescription, *fhir.OrderDetails) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(epsFixtures, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	b := fhirgen.Redate(raw, at)
	m, err := fhir.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	o, err := m.Order(at)
	if err != nil {
		t.Fatal(err)
	}
	d, err := fhir.DecodeOrderDetails(b)
	if err != nil {
		t.Fatal(err)
	}
	return rx.Create(o.RxOrder(), rx.Actor{User: "u", Org: o.Sender}, at), d
}

// view is a decoded Bundle.
type view struct {
	Total int `json:"total"`
	Entry []struct {
		FullURL string `json:"fullUrl"`
		Search  struct {
			Mode string `json:"mode"`
		} `json:"search"`
		Resource map[string]any `json:"resource"`
	} `json:"entry"`
}

func decodeView(t *testing.T, b []byte) view {
	t.Helper()
	var v view
	if !json.Valid(b) {
		t.Fatalf("not JSON: %s", b)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// layout lists "resourceType/mode" of each entry.
func (v view) layout() []string {
	var out []string
	for _, e := range v.Entry {
		out = append(out, e.Resource["resourceType"].(string)+"/"+e.Search.Mode)
	}
	return out
}

// of returns the resources of the given type.
func (v view) of(typ string) []map[string]any {
	var out []map[string]any
	for _, e := range v.Entry {
		if e.Resource["resourceType"] == typ {
			out = append(out, e.Resource)
		}
	}
	return out
}

// get returns the value at path (object keys and array indices) under v.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// ext returns the extension with the given url of resource (or extension) r.
func ext(r any, url string) map[string]any {
	exts, _ := get(r, "extension").([]any)
	for _, e := range exts {
		if m := e.(map[string]any); m["url"] == url {
			return m
		}
	}
	return nil
}

// checkReferences checks that the Bundle's references to urn:uuid: resolve
// to its entries and that each resource's id is its fullUrl's UUID.
func checkReferences(t *testing.T, v view) {
	t.Helper()
	urls := map[string]bool{}
	for _, e := range v.Entry {
		if urls[e.FullURL] {
			t.Errorf("fullUrl %s twice", e.FullURL)
		}
		urls[e.FullURL] = true
		if id, ok := e.Resource["id"]; ok && "urn:uuid:"+id.(string) != e.FullURL {
			t.Errorf("id %v, fullUrl %s", id, e.FullURL)
		}
	}
	var walk func(x any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if ref, ok := x["reference"].(string); ok && !urls[ref] {
				t.Errorf("reference %s does not resolve", ref)
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	for _, e := range v.Entry {
		walk(e.Resource)
	}
}

func TestSearchBundleNoResults(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join(trackerFixtures, "prescriptionSearch/200_NoResults.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, fixture); err != nil {
		t.Fatal(err)
	}
	for name, rs := range map[string][]SearchResult{"nil": nil, "empty": {}, "no records": {{}, {Patient: fhir.PatientDetails{NHSNumber: "9449304130"}}}} {
		if got := SearchBundle(rs); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: %s\nwant %s", name, got, want.Bytes())
		}
	}
}

func TestSearchBundle(t *testing.T) {
	acute, acuteD := fixtureRecord(t, orderAcute4Items, created)
	mixed, mixedD := fixtureRecord(t, orderAcuteRepeat, created.Add(time.Hour))
	erd, erdD := fixtureRecord(t, orderERD, created.Add(2*time.Hour))
	results := []SearchResult{{acute, acuteD.Patient}, {mixed, mixedD.Patient}, {erd, erdD.Patient}}
	b := SearchBundle(results)
	v := decodeView(t, b)
	checkReferences(t, v)

	// The repeat dispensing prescription has a RequestGroup per issue (6).
	wantLayout := []string{"Patient/include", "Patient/include"}
	for range 8 {
		wantLayout = append(wantLayout, "RequestGroup/match")
	}
	if !slices.Equal(v.layout(), wantLayout) || v.Total != 8 {
		t.Fatalf("layout %v total %d; want %v total 8", v.layout(), v.Total, wantLayout)
	}
	// Newest first (the issues of one prescription in issue order); the
	// patients in the order they first appear.
	all := v.of("RequestGroup")
	for i, want := range []*rx.Prescription{erd, erd, erd, erd, erd, erd, mixed, acute} {
		if id := get(all[i], "identifier", 0, "value"); id != want.ID {
			t.Errorf("RequestGroup %d is %v, want %s", i, id, want.ID)
		}
	}
	rgs := []map[string]any{all[0], all[6], all[7]} // eRD issue 1, repeat, acute
	pts := v.of("Patient")
	if get(pts[0], "identifier", 0, "value") != "9990548609" || get(pts[1], "identifier", 0, "value") != "5839945242" {
		t.Errorf("patients %v", pts)
	}
	if got := get(pts[1], "name", 0); !jsonEqual(t, got, `{"prefix":["MS"],"given":["STACEY","MARISA"],"family":"TWITCHETT"}`) {
		t.Errorf("patient name %v", got)
	}
	if get(rgs[2], "subject", "reference") != v.Entry[1].FullURL || get(rgs[0], "subject", "reference") != v.Entry[0].FullURL ||
		get(rgs[1], "subject", "reference") != v.Entry[0].FullURL || get(all[5], "subject", "reference") != v.Entry[0].FullURL {
		t.Error("subjects do not reference their patients")
	}

	for i, want := range []struct{ intent, authoredOn string }{
		{"reflex-order", "2022-02-19T00:00:00.000Z"},   // validity period start
		{"instance-order", "2021-05-12T05:58:49.000Z"}, // the signature time (no validity period)
		{"order", "2022-10-21T00:00:00.000Z"},
	} {
		rg := rgs[i]
		if rg["status"] != "active" || rg["intent"] != want.intent || rg["authoredOn"] != want.authoredOn {
			t.Errorf("RequestGroup %d: status %v intent %v authoredOn %v; want active %s %s", i, rg["status"], rg["intent"], rg["authoredOn"], want.intent, want.authoredOn)
		}
		if got := get(ext(rg, extStatusHistory), "extension", 0); !jsonEqual(t, got,
			`{"url":"status","valueCoding":{"system":"https://fhir.nhs.uk/CodeSystem/EPS-task-business-status","code":"0001","display":"To Be Dispensed"}}`) {
			t.Errorf("RequestGroup %d status %v", i, got)
		}
		if got := ext(rg, extPendingCancellation); !jsonEqual(t, got, `{"url":"`+extPendingCancellation+`","extension":[`+
			`{"url":"prescriptionPendingCancellation","valueBoolean":false},{"url":"lineItemPendingCancellation","valueBoolean":false}]}`) {
			t.Errorf("RequestGroup %d pending cancellation %v", i, got)
		}
		if got := ext(rg, ExtSearchCategory); got["valueString"] != CategoryCurrent {
			t.Errorf("RequestGroup %d category %v", i, got)
		}
	}
	// Repeat information: issue 1 of 6 (numberOfRepeatsAllowed 5), 1 of 1; none for acute.
	if got := ext(rgs[0], extRepeatInformation); !jsonEqual(t, got, `{"url":"`+extRepeatInformation+`","extension":[`+
		`{"url":"numberOfRepeatsIssued","valueInteger":1},{"url":"numberOfRepeatsAllowed","valueInteger":6}]}`) {
		t.Errorf("eRD repeat information %v", got)
	}
	if got := get(ext(rgs[1], extRepeatInformation), "extension", 1, "valueInteger"); got != 1.0 {
		t.Errorf("repeat prescribing numberOfRepeatsAllowed %v", got)
	}
	if ext(rgs[2], extRepeatInformation) != nil {
		t.Error("acute prescription with repeat information")
	}

	// Deterministic, whatever the order of the results.
	slices.Reverse(results)
	if again := SearchBundle(results); !bytes.Equal(again, b) {
		t.Errorf("not deterministic:\n%s\n%s", b, again)
	}
	if results[0].Record != erd {
		t.Error("SearchBundle reordered its argument")
	}
}

func TestSearchBundleOrdering(t *testing.T) {
	base, d := fixtureRecord(t, orderAcute4Items, created)
	rec := func(id string, at time.Time) SearchResult {
		r := *base
		r.ID, r.Created = id, at
		return SearchResult{Record: &r, Patient: d.Patient}
	}
	v := decodeView(t, SearchBundle([]SearchResult{
		rec("AAAAAA-A83008-00000B", created),
		rec("CCCCCC-A83008-00000C", created.Add(time.Minute)),
		rec("AAAAAA-A83008-00000A", created),
		rec("BBBBBB-A83008-00000B", created.Add(-time.Hour)),
		{Record: nil},
	}))
	var ids []string
	for _, rg := range v.of("RequestGroup") {
		ids = append(ids, get(rg, "identifier", 0, "value").(string))
	}
	want := []string{"CCCCCC-A83008-00000C", "AAAAAA-A83008-00000A", "AAAAAA-A83008-00000B", "BBBBBB-A83008-00000B"}
	if !slices.Equal(ids, want) || v.Total != 4 || len(v.of("Patient")) != 1 {
		t.Errorf("ids %v total %d patients %d; want %v 4 1", ids, v.Total, len(v.of("Patient")), want)
	}
}

func TestSearchBundleStatuses(t *testing.T) {
	base, d := fixtureRecord(t, orderAcute4Items, created)
	for _, tc := range []struct {
		status           rx.Status
		rgStatus, search string
	}{
		{rx.StatusAwaitingReleaseReady, "on-hold", "future"},
		{rx.StatusToBeDispensed, "active", "current"},
		{rx.StatusWithDispenser, "active", "current"},
		{rx.StatusWithDispenserActive, "active", "current"},
		{rx.StatusExpired, "completed", "past"},
		{rx.StatusCancelled, "revoked", "past"},
		{rx.StatusDispensed, "completed", "past"},
		{rx.StatusNotDispensed, "completed", "past"},
		{rx.StatusClaimed, "completed", "past"},
		{rx.StatusNoClaimed, "completed", "past"},
		{rx.StatusRepeatFuture, "on-hold", "future"},
		{rx.StatusFuture, "on-hold", "future"},
		{rx.StatusCancelledFuture, "revoked", "past"},
	} {
		r := *base
		r.Status = tc.status
		rg := decodeView(t, SearchBundle([]SearchResult{{Record: &r, Patient: d.Patient}})).of("RequestGroup")[0]
		coding := get(ext(rg, extStatusHistory), "extension", 0, "valueCoding")
		if rg["status"] != tc.rgStatus || get(ext(rg, ExtSearchCategory), "valueString") != tc.search ||
			get(coding, "code") != string(tc.status) || get(coding, "display") != tc.status.Display() {
			t.Errorf("%s: status %v category %v coding %v; want %s %s", tc.status, rg["status"], ext(rg, ExtSearchCategory), coding, tc.rgStatus, tc.search)
		}
	}
}

func TestCategory(t *testing.T) {
	want := map[rx.Status]string{
		rx.StatusAwaitingReleaseReady: CategoryFuture, rx.StatusToBeDispensed: CategoryCurrent, rx.StatusWithDispenser: CategoryCurrent,
		rx.StatusWithDispenserActive: CategoryCurrent, rx.StatusExpired: CategoryPast, rx.StatusCancelled: CategoryPast,
		rx.StatusDispensed: CategoryPast, rx.StatusNotDispensed: CategoryPast, rx.StatusClaimed: CategoryPast, rx.StatusNoClaimed: CategoryPast,
		rx.StatusRepeatFuture: CategoryFuture, rx.StatusFuture: CategoryFuture, rx.StatusCancelledFuture: CategoryPast,
	}
	if len(want) != len(rx.Statuses()) {
		t.Fatalf("%d statuses tested, the model has %d", len(want), len(rx.Statuses()))
	}
	for _, s := range rx.Statuses() {
		if got := Category(s); got != want[s] {
			t.Errorf("Category(%s) = %q, want %q", s, got, want[s])
		}
	}
	if got := Category("1234"); got != "" {
		t.Errorf("Category(1234) = %q", got)
	}
	if got := requestStatus("1234"); got != "unknown" {
		t.Errorf("requestStatus(1234) = %q", got)
	}
}

func TestDetailBundle(t *testing.T) {
	rec, d := fixtureRecord(t, orderAcute4Items, created)
	b := DetailBundle(rec, d)
	v := decodeView(t, b)
	checkReferences(t, v)
	want := []string{"Patient/include", "PractitionerRole/include", "MedicationRequest/include", "MedicationRequest/include",
		"MedicationRequest/include", "MedicationRequest/include", "RequestGroup/match"}
	if !slices.Equal(v.layout(), want) || v.Total != 1 {
		t.Fatalf("layout %v total %d; want %v total 1", v.layout(), v.Total, want)
	}
	if !bytes.Equal(DetailBundle(rec, d), b) {
		t.Error("not deterministic")
	}

	pt := v.of("Patient")[0]
	if !jsonEqual(t, pt["name"], `[{"prefix":["MS"],"given":["STACEY","MARISA"],"family":"TWITCHETT"}]`) ||
		pt["birthDate"] != "1948-04-30" || pt["gender"] != "female" ||
		get(pt, "address", 0, "text") != "10 HEATHFIELD, COBHAM, SURREY, KT11 2QY" {
		t.Errorf("patient %v", pt)
	}
	if search := decodeView(t, SearchBundle([]SearchResult{{rec, d.Patient}})); search.Entry[0].FullURL != v.Entry[0].FullURL ||
		search.Entry[1].FullURL != v.Entry[len(v.Entry)-1].FullURL {
		t.Error("the search and detail views name the patient or the prescription differently")
	}

	role := v.of("PractitionerRole")[0]
	if !jsonEqual(t, role["organization"], `{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A83008"},"display":"HALLGARTH SURGERY"}`) ||
		get(role, "practitioner", "display") != "DR C BOIN" || get(role, "practitioner", "identifier", "value") != "555086689106" ||
		get(role, "identifier", 0, "value") != "200102238987" || get(role, "telecom", 0, "value") != "01234567890" {
		t.Errorf("practitioner role %v", role)
	}

	meds := []string{"Amoxicillin 250mg capsules", "Co-codamol 30mg/500mg tablets", "Pseudoephedrine hydrochloride 60mg tablets", "Azithromycin 250mg capsules"}
	for i, mr := range v.of("MedicationRequest") {
		if get(mr, "identifier", 0, "value") != rec.Items[i].ID || get(mr, "medicationCodeableConcept", "text") != meds[i] ||
			get(mr, "medicationCodeableConcept", "coding", 0, "code") != rec.Items[i].Code {
			t.Errorf("item %d: %v", i, mr)
		}
		if mr["status"] != "active" || mr["intent"] != "order" || get(mr, "groupIdentifier", "value") != rec.ID {
			t.Errorf("item %d status %v intent %v", i, mr["status"], mr["intent"])
		}
		if got := get(ext(mr, extDispensingInformation), "extension", 0, "valueCoding"); !jsonEqual(t, got,
			`{"system":"https://fhir.nhs.uk/CodeSystem/medicationdispense-type","code":"0007","display":"Item to be dispensed"}`) {
			t.Errorf("item %d status %v", i, got)
		}
		if get(mr, "dispenseRequest", "performer", "identifier", 0, "value") != "FA565" || mr["performer"] != nil {
			t.Errorf("item %d nominated %v dispenser %v", i, get(mr, "dispenseRequest", "performer"), mr["performer"])
		}
		if get(mr, "dispenseRequest", "quantity", "unit") != "tablet" || get(mr, "dosageInstruction", 0, "text") == nil {
			t.Errorf("item %d quantity or dosage missing: %v", i, mr)
		}
	}

	rg := v.of("RequestGroup")[0]
	if rg["status"] != "active" || get(rg, "identifier", 0, "value") != rec.ID || get(rg, "author", "identifier", "value") != "A83008" ||
		get(ext(rg, extStatusHistory), "extension", 0, "valueCoding", "code") != "0001" ||
		get(ext(rg, fhir.ExtPrescriptionType), "valueCoding", "display") != "Primary Care Prescriber - Medical Prescriber" {
		t.Errorf("request group %v", rg)
	}
	if items := get(rg, "action", 0, "action").([]any); len(items) != 4 || get(items[1], "resource", "reference") != v.Entry[3].FullURL {
		t.Errorf("line item actions %v", items)
	}
	history := get(rg, "action", 1, "action").([]any)
	if len(history) != 1 {
		t.Fatalf("%d history actions, want 1", len(history))
	}
	if !jsonEqual(t, history[0], `{"title":"Prescription upload successful","timingDateTime":"2026-02-27T15:35:28.000Z",`+
		`"code":[{"coding":[{"system":"https://fhir.nhs.uk/CodeSystem/EPS-task-business-status","code":"0001","display":"To Be Dispensed"}]}],`+
		`"participant":[`+
		`{"extension":[{"url":"`+extParticipantType+`","valueReference":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A83008"}}}]},`+
		`{"extension":[{"url":"`+extParticipantType+`","valueReference":{"identifier":{"system":"https://fhir.nhs.uk/Id/sds-user-id","value":"u"}}}]}]}`) {
		t.Errorf("history %v", history[0])
	}
}

func TestDetailBundleHistoryAndDispensers(t *testing.T) {
	rec, d := fixtureRecord(t, orderAcute4Items, created)
	rec.Status, rec.Dispenser, rec.Nominated = rx.StatusWithDispenser, "VNFKT", ""
	for i := range rec.Items {
		rec.Items[i].Status = rx.ItemWithDispenser
	}
	at := func(m int) time.Time { return created.Add(time.Duration(m) * time.Minute) }
	rec.History = append(rec.History,
		rx.Event{Time: at(1), Type: "nominated-release", Org: "FA565", User: "d1", Status: rx.StatusWithDispenser},
		rx.Event{Time: at(2), Type: "return", Org: "FA565", Status: rx.StatusToBeDispensed},
		rx.Event{Time: at(3), Type: "release", Org: "VNFKT", Status: rx.StatusWithDispenser},
		rx.Event{Time: at(4), Type: fhir.EventPrescriptionOrderUpdate, Org: "A83008", Status: rx.StatusWithDispenser},
		rx.Event{Time: at(5), Type: fhir.EventDispenseNotification, MessageID: "7D8C0BC7-9C99-4A03-BAB3-9EDAFDECFEFF", Org: "VNFKT", Status: rx.StatusWithDispenserActive},
		rx.Event{Time: at(6), Type: "withdraw", Org: "VNFKT", Status: rx.StatusWithDispenser},
		rx.Event{Time: at(7), Type: "claim", Status: rx.StatusClaimed},
		rx.Event{Time: at(8), Type: "something-new", Status: rx.StatusClaimed},
	)
	v := decodeView(t, DetailBundle(rec, d))
	checkReferences(t, v)
	for _, mr := range v.of("MedicationRequest") {
		if get(mr, "performer", "identifier", 0, "value") != "VNFKT" || get(mr, "dispenseRequest", "performer") != nil {
			t.Errorf("dispenser %v, nominated %v", mr["performer"], get(mr, "dispenseRequest", "performer"))
		}
		if got := get(ext(mr, extDispensingInformation), "extension", 0, "valueCoding", "display"); got != "Item with dispenser" {
			t.Errorf("item status %v", got)
		}
	}
	history := get(v.of("RequestGroup")[0], "action", 1, "action").([]any)
	var titles []string
	for _, h := range history {
		titles = append(titles, get(h, "title").(string))
	}
	want := []string{"Prescription upload successful", "Nominated Release Request successful", "Dispense proposal return successful",
		"Release Request successful", "Prescription/item was not cancelled. With dispenser. Marked for cancellation",
		"Dispense notification successful", "Dispense Withdrawal successful", "Dispense claim successful", "something-new"}
	if !slices.Equal(titles, want) {
		t.Errorf("titles\n%q\nwant\n%q", titles, want)
	}
	if got := get(history[5], "code", 1, "coding", 0); !jsonEqual(t, got, `{"system":"https://tools.ietf.org/html/rfc4122","code":"7D8C0BC7-9C99-4A03-BAB3-9EDAFDECFEFF"}`) {
		t.Errorf("dispense notification message id %v", got)
	}
	if get(history[5], "code", 0, "coding", 0, "code") != "0003" || get(history[2], "timingDateTime") != "2026-02-27T15:37:28.000Z" {
		t.Errorf("history %v", history)
	}
	if got := get(history[7], "participant"); got != nil {
		t.Errorf("participant of an event without organisation or user: %v", got)
	}
	rec.History[4].Status = rx.StatusToBeDispensed
	history = get(decodeView(t, DetailBundle(rec, d)).of("RequestGroup")[0], "action", 1, "action").([]any)
	if got := get(history[4], "title"); got != "Prescription/item was cancelled" {
		t.Errorf("cancellation title %v", got)
	}
}

func TestDetailBundleWithoutDetails(t *testing.T) {
	rec, _ := fixtureRecord(t, orderERD, created)
	v := decodeView(t, DetailBundle(rec, nil))
	checkReferences(t, v)
	if len(v.of("MedicationRequest")) != len(rec.Items) || v.Total != 1 {
		t.Fatalf("layout %v", v.layout())
	}
	if pt := v.of("Patient")[0]; get(pt, "identifier", 0, "value") != rec.NHSNumber || pt["name"] != nil {
		t.Errorf("patient %v", pt)
	}
	mr := v.of("MedicationRequest")[0]
	if get(mr, "medicationCodeableConcept", "coding", 0, "code") != rec.Items[0].Code || mr["intent"] != "reflex-order" {
		t.Errorf("medication request %v", mr)
	}
	rg := v.of("RequestGroup")[0]
	if rg["authoredOn"] != "2022-02-19T00:00:00.000Z" || get(ext(rg, extRepeatInformation), "extension", 1, "valueInteger") != 6.0 {
		t.Errorf("request group %v", rg)
	}
}

func TestDetailBundleFuture(t *testing.T) {
	rec, d := fixtureRecord(t, orderERD, time.Date(2022, 2, 1, 0, 0, 0, 0, time.UTC))
	if rec.Status != rx.StatusFuture {
		t.Fatalf("status %s", rec.Status)
	}
	d.AuthoredOn = "2022-02-01T09:30:00+01:00"
	rg := decodeView(t, DetailBundle(rec, d)).of("RequestGroup")[0]
	if rg["status"] != "on-hold" || get(ext(rg, ExtSearchCategory), "valueString") != CategoryFuture ||
		get(ext(rg, extStatusHistory), "extension", 0, "valueCoding", "display") != "Prescription future instance" ||
		rg["authoredOn"] != "2022-02-01T08:30:00.000Z" {
		t.Errorf("request group %v", rg)
	}
}

// TestViewShapes compares the keys (and the extension URLs and code
// systems) of the views with those of the NHS tracker API's examples.
func TestViewShapes(t *testing.T) {
	acute, acuteD := fixtureRecord(t, orderAcute4Items, created)
	mixed, mixedD := fixtureRecord(t, orderAcuteRepeat, created)
	erd, erdD := fixtureRecord(t, orderERD, created)
	search := func(rec *rx.Prescription, d *fhir.OrderDetails) []byte {
		return SearchBundle([]SearchResult{{rec, d.Patient}})
	}
	// What the views add to the examples: the search category everywhere;
	// in the detail view the prescriber's identity, the medication's dm+d
	// coding, the repeat count of a repeat dispensing item and how the
	// nominated dispenser was found.
	category := []string{"RequestGroup.extension[].url=" + ExtSearchCategory, "RequestGroup.extension[].valueString"}
	detailExtra := append([]string{
		"MedicationRequest.dispenseRequest.numberOfRepeatsAllowed",
		"MedicationRequest.medicationCodeableConcept.coding[].code",
		"MedicationRequest.medicationCodeableConcept.coding[].display",
		"MedicationRequest.medicationCodeableConcept.coding[].system=http://snomed.info/sct",
		"PractitionerRole.identifier[].system=https://fhir.nhs.uk/Id/sds-role-profile-id",
		"PractitionerRole.identifier[].value",
		"PractitionerRole.organization.display",
		"PractitionerRole.practitioner.display",
		"PractitionerRole.practitioner.identifier.system=https://fhir.nhs.uk/Id/sds-user-id",
		"PractitionerRole.practitioner.identifier.value",
		"PractitionerRole.telecom[].system=phone",
		"PractitionerRole.telecom[].use",
		"PractitionerRole.telecom[].value",
		"RequestGroup.action[].action[].participant[].extension[].valueReference.identifier.system=https://fhir.nhs.uk/Id/sds-user-id",
		"RequestGroup.extension[].url=" + ExtNominationSource,
	}, category...)
	// What the views leave out: the address's use and type (the order's
	// details do not carry them).
	detailMissing := []string{"Patient.address[].type", "Patient.address[].use"}
	for _, tc := range []struct {
		fixture        string
		got            []byte
		extra, missing []string
	}{
		{"prescriptionSearch/200_WithSingleAcute.json", search(acute, acuteD), category, nil},
		{"prescriptionSearch/200_WithSingleRepeat.json", search(mixed, mixedD), category, nil},
		{"prescriptionSearch/200_With7InstanceErd.json", search(erd, erdD), category, nil},
		{"clinicalView/200_AcuteWithMultipleItems_Created.json", DetailBundle(acute, acuteD), detailExtra[1:], detailMissing},
		{"clinicalView/200_AcuteWithSingleItem_Created.json", DetailBundle(acute, acuteD), detailExtra[1:], detailMissing},
		{"clinicalView/200_ErdWithSingleItem_Created.json", DetailBundle(erd, erdD), detailExtra, detailMissing},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fixture, err := os.ReadFile(filepath.Join(trackerFixtures, filepath.FromSlash(tc.fixture)))
			if err != nil {
				t.Fatal(err)
			}
			want, got := shape(t, fixture), shape(t, tc.got)
			var extra, missing []string
			for k := range got {
				if !want[k] {
					extra = append(extra, k)
				}
			}
			for k := range want {
				if !got[k] {
					missing = append(missing, k)
				}
			}
			sort.Strings(extra)
			sort.Strings(missing)
			wantExtra, wantMissing := slices.Sorted(slices.Values(tc.extra)), slices.Sorted(slices.Values(tc.missing))
			if !slices.Equal(extra, wantExtra) {
				t.Errorf("keys beyond the example:\n  %s\nwant\n  %s", strings.Join(extra, "\n  "), strings.Join(wantExtra, "\n  "))
			}
			if !slices.Equal(missing, wantMissing) {
				t.Errorf("keys of the example missing:\n  %s\nwant\n  %s", strings.Join(missing, "\n  "), strings.Join(wantMissing, "\n  "))
			}
		})
	}
}

// shape returns the paths of the leaf keys of a Bundle's entries, by
// resource type (e.g. RequestGroup.extension[].url), with the values of url
// and system keys, and the Bundle's own keys.
func shape(t *testing.T, b []byte) map[string]bool {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	var walk func(path string, x any)
	walk = func(path string, x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, y := range x {
				p := path + "." + k
				if s, ok := y.(string); ok && (k == "url" || k == "system") {
					p += "=" + s
				}
				switch y.(type) {
				case map[string]any, []any:
					walk(p, y)
				default:
					out[p] = true
				}
			}
		case []any:
			for _, y := range x {
				walk(path+"[]", y)
			}
		}
	}
	for k := range v {
		out["Bundle."+k] = true
	}
	entries, _ := v["entry"].([]any)
	for _, e := range entries {
		res, _ := get(e, "resource").(map[string]any)
		typ, _ := res["resourceType"].(string)
		out[typ+".search.mode="+get(e, "search", "mode").(string)] = true
		walk(typ, res)
		out[typ+".fullUrl"] = true
	}
	return out
}

// jsonEqual reports whether v, encoded, is the JSON want.
func jsonEqual(t *testing.T, v any, want string) bool {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	a, _ := json.Marshal(v)
	c, _ := json.Marshal(w)
	return bytes.Equal(a, c)
}

func TestNameUUID(t *testing.T) {
	dns := [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	for _, tc := range []struct {
		ns         [16]byte
		name, want string
	}{
		{dns, "python.org", "886313e1-3b8a-5372-9b90-0c9aee199e5d"}, // Python's uuid documentation
		{uuidNamespaceURL, "https://github.com/nhs-eps/epsbroker/Patient/5839945242", "ac98eb1d-996e-54d5-a08f-bf39ffde8cad"},
	} {
		if got := nameUUID(tc.ns, tc.name); got != tc.want {
			t.Errorf("nameUUID(%s) = %s, want %s", tc.name, got, tc.want)
		}
	}
	if url, id := urn("Patient", "5839945242"); url != "urn:uuid:ac98eb1d-996e-54d5-a08f-bf39ffde8cad" || !fhir.ValidUUID(id) {
		t.Errorf("urn: %s %s", url, id)
	}
}

// dispenseInput is a dispense notification of the items of rec (by index):
// each with its status and, when given, its non-dispensing reason; the
// product and quantity as ordered (d), the quantity 0 when the item was not
// supplied.
func dispenseInput(rec *rx.Prescription, d *fhir.OrderDetails, id string, status map[int]rx.ItemStatus, reasons map[int]string, rxReason string) rx.DispenseInput {
	in := rx.DispenseInput{ID: id, Items: map[string]rx.ItemStatus{}, NonDispensingReason: rxReason}
	for i, it := range rec.Items {
		st, ok := status[i]
		if !ok {
			continue
		}
		in.Items[it.ID] = st
		det := itemDetails(d, it.ID)
		line := rx.DispensedLine{LineItem: strings.ToUpper(it.ID), Status: st, Reason: reasons[i], Code: det.MedicationCode,
			Medication: det.MedicationDisplay, Unit: det.QuantityUnit}
		if st == rx.ItemFullyDispensed {
			line.Quantity = det.Quantity
		}
		in.Lines = append(in.Lines, line)
	}
	return in
}

// all gives every item of rec the same value.
func all[V any](rec *rx.Prescription, v V) map[int]V {
	m := map[int]V{}
	for i := range rec.Items {
		m[i] = v
	}
	return m
}

// dispensedView is what a test reads of a detail view's dispenses.
type dispensedView struct {
	v       view
	urls    map[string]map[string]any // fullUrl -> resource
	history []any                     // RequestGroup history actions
}

func readDispensed(t *testing.T, rec *rx.Prescription, d *fhir.OrderDetails) dispensedView {
	t.Helper()
	v := decodeView(t, DetailBundle(rec, d))
	checkReferences(t, v)
	dv := dispensedView{v: v, urls: map[string]map[string]any{}}
	for _, e := range v.Entry {
		dv.urls[e.FullURL] = e.Resource
	}
	dv.history = get(v.of("RequestGroup")[0], "action", 1, "action").([]any)
	return dv
}

// dispensesOf returns the MedicationDispenses the history action a points
// at, in order.
func (dv dispensedView) dispensesOf(t *testing.T, a any) []map[string]any {
	t.Helper()
	var out []map[string]any
	subs, _ := get(a, "action").([]any)
	for _, s := range subs {
		r := dv.urls[get(s, "resource", "reference").(string)]
		if r["resourceType"] != "MedicationDispense" {
			t.Errorf("history action points at a %v", r["resourceType"])
		}
		out = append(out, r)
	}
	return out
}

// TestDetailBundleDispenses follows the NHS tracker API's clinicalView
// examples (…_Dispensed, …_PartiallyDispensed, …_MultipleDispenses,
// …_NotDispensedWithReason, …_ItemNotDispensedWithReason) and
// generateFhirResponse.ts of NHSDigital/electronic-prescription-service-
// clinical-prescription-tracker (generateMedicationDispenses,
// generateHistoryAction).
func TestDetailBundleDispenses(t *testing.T) {
	at := func(m int) time.Time { return created.Add(time.Duration(m) * time.Minute) }
	dispenser := rx.Actor{User: "d1", Org: "FA565"}
	type dn struct {
		status   map[int]rx.ItemStatus
		reasons  map[int]string
		rxReason string
		withdraw bool
	}
	for _, tc := range []struct {
		name string
		dns  []dn
		// per notification shown: the item statuses of its
		// MedicationDispenses; per history event of a notification, how
		// many it points at
		wantStatus     rx.Status
		wantTypes      [][]rx.ItemStatus
		wantReasons    []string // per MedicationDispense of the last notification shown ("" none)
		wantRxReason   string
		wantHistoryRef []int
	}{
		{name: "dispensed", dns: []dn{{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0001", 3: "0001"}}},
			wantStatus: rx.StatusDispensed, wantTypes: [][]rx.ItemStatus{{"0001", "0001", "0001", "0001"}},
			wantReasons: []string{"", "", "", ""}, wantHistoryRef: []int{4}},
		{name: "part dispensed", dns: []dn{{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0004", 3: "0004"}}},
			wantStatus: rx.StatusWithDispenserActive, wantTypes: [][]rx.ItemStatus{{"0001", "0001", "0004", "0004"}},
			wantReasons: []string{"", "", "", ""}, wantHistoryRef: []int{4}},
		{name: "multiple dispenses", dns: []dn{
			{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0004", 3: "0004"}},
			{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0001", 3: "0001"}}}, // every item named again, as EPS requires
			wantStatus: rx.StatusDispensed, wantTypes: [][]rx.ItemStatus{{"0001", "0001", "0004", "0004"}, {"0001", "0001", "0001", "0001"}},
			wantReasons: []string{"", "", "", ""}, wantHistoryRef: []int{4, 4}},
		{name: "not dispensed with reasons", dns: []dn{{status: nil,
			reasons: map[int]string{0: "0002", 1: "0009", 2: "0006", 3: "0007"}, rxReason: "0002"}},
			wantStatus: rx.StatusNotDispensed, wantTypes: [][]rx.ItemStatus{{"0002", "0002", "0002", "0002"}},
			wantReasons: []string{"0002", "0009", "0006", "0007"}, wantRxReason: "0002", wantHistoryRef: []int{4}},
		{name: "item not dispensed with reason", dns: []dn{{status: map[int]rx.ItemStatus{0: "0002", 1: "0004", 2: "0004", 3: "0004"},
			reasons: map[int]string{0: "0001"}}},
			wantStatus: rx.StatusWithDispenserActive, wantTypes: [][]rx.ItemStatus{{"0002", "0004", "0004", "0004"}},
			wantReasons: []string{"0001", "", "", ""}, wantHistoryRef: []int{4}},
		{name: "withdrawn", dns: []dn{{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0004", 3: "0004"}, withdraw: true}},
			wantStatus: rx.StatusWithDispenser, wantTypes: nil, wantHistoryRef: []int{0}},
		{name: "withdrawn then dispensed again", dns: []dn{
			{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0004", 3: "0004"}, withdraw: true},
			{status: map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0001", 3: "0001"}}},
			wantStatus: rx.StatusDispensed, wantTypes: [][]rx.ItemStatus{{"0001", "0001", "0001", "0001"}},
			wantReasons: []string{"", "", "", ""}, wantHistoryRef: []int{0, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, d := datedRecord(t, orderAcute4Items, created)
			rec, err := rx.Release(rec, "FA565", dispenser, "rel", true, at(1))
			if err != nil {
				t.Fatal(err)
			}
			for k, x := range tc.dns {
				status := x.status
				if len(status) == 0 {
					status = all(rec, rx.ItemNotDispensed)
				}
				id := strings.ToUpper("7d8c0bc7-9c99-4a03-bab3-9edafdecfef" + string(rune('0'+k)))
				if rec, err = rx.Dispense(rec, "FA565", dispenser, dispenseInput(rec, d, id, status, x.reasons, x.rxReason), at(2+2*k)); err != nil {
					t.Fatal(err)
				}
				if x.withdraw {
					if rec, err = rx.Withdraw(rec, "FA565", dispenser, id, "w", at(3+2*k)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if rec.Status != tc.wantStatus {
				t.Fatalf("status %s, want %s", rec.Status, tc.wantStatus)
			}
			dv := readDispensed(t, rec, d)
			mds := dv.v.of("MedicationDispense")

			// The layout: the dispenser's PractitionerRole and the
			// MedicationDispenses after the MedicationRequests.
			want := []string{"Patient/include", "PractitionerRole/include", "MedicationRequest/include", "MedicationRequest/include",
				"MedicationRequest/include", "MedicationRequest/include"}
			n := 0
			for _, types := range tc.wantTypes {
				n += len(types)
			}
			if n > 0 {
				want = append(want, "PractitionerRole/include")
				for range n {
					want = append(want, "MedicationDispense/include")
				}
			}
			want = append(want, "RequestGroup/match")
			if !slices.Equal(dv.v.layout(), want) {
				t.Fatalf("layout %v\nwant %v", dv.v.layout(), want)
			}

			// Each notification's history action points at its own.
			var dnEvents []any
			for _, h := range dv.history {
				if get(h, "title") == "Dispense notification successful" {
					dnEvents = append(dnEvents, h)
				}
			}
			if len(dnEvents) != len(tc.dns) || len(tc.wantHistoryRef) != len(tc.dns) {
				t.Fatalf("%d dispense notification events, want %d", len(dnEvents), len(tc.dns))
			}
			shown := 0
			for k, h := range dnEvents {
				got := dv.dispensesOf(t, h)
				if len(got) != tc.wantHistoryRef[k] {
					t.Errorf("notification %d points at %d MedicationDispenses, want %d", k, len(got), tc.wantHistoryRef[k])
				}
				if len(got) == 0 {
					continue
				}
				types := tc.wantTypes[shown]
				shown++
				for j, md := range got {
					if j < len(types) && get(md, "type", "coding", 0, "code") != string(types[j]) {
						t.Errorf("notification %d dispense %d type %v, want %s", k, j, get(md, "type", "coding", 0), types[j])
					}
					wantStatus := "unknown"
					if shown == len(tc.wantTypes) {
						wantStatus = "in-progress" // the latest notification
					}
					if md["status"] != wantStatus {
						t.Errorf("notification %d dispense %d status %v, want %s", k, j, md["status"], wantStatus)
					}
					// It dispenses the line item of its MedicationRequest.
					mr := dv.urls[get(md, "authorizingPrescription", 0, "reference").(string)]
					if mr["resourceType"] != "MedicationRequest" ||
						!strings.EqualFold(get(mr, "identifier", 0, "value").(string), get(md, "identifier", 0, "value").(string)) {
						t.Errorf("notification %d dispense %d authorizes %v", k, j, mr["identifier"])
					}
					if get(md, "medicationCodeableConcept", "text") != get(mr, "medicationCodeableConcept", "text") ||
						get(md, "medicationCodeableConcept", "coding", 0, "code") != get(mr, "medicationCodeableConcept", "coding", 0, "code") {
						t.Errorf("notification %d dispense %d product %v", k, j, md["medicationCodeableConcept"])
					}
					role := dv.urls[get(md, "performer", 0, "actor", "reference").(string)]
					if get(role, "organization", "identifier", "value") != "FA565" {
						t.Errorf("dispense %d performer %v", j, role)
					}
					if got := get(ext(md, extTaskBusinessStatus), "valueCoding", "code"); got != string(tc.wantStatus) {
						t.Errorf("dispense %d prescription status %v, want %s", j, got, tc.wantStatus)
					}
				}
			}
			if len(tc.wantReasons) > 0 {
				last := dv.dispensesOf(t, dnEvents[len(dnEvents)-1])
				for j, md := range last {
					got, _ := get(md, "statusReasonCodeableConcept", "coding", 0, "code").(string)
					if got != tc.wantReasons[j] {
						t.Errorf("dispense %d non-dispensing reason %q, want %q", j, got, tc.wantReasons[j])
					}
					if got != "" && (get(md, "statusReasonCodeableConcept", "coding", 0, "system") != systemNonDispensing ||
						get(md, "statusReasonCodeableConcept", "coding", 0, "display") != nonDispensingDisplays[got]) {
						t.Errorf("dispense %d reason coding %v", j, md["statusReasonCodeableConcept"])
					}
					if q := get(md, "quantity", "value").(float64); (md["type"] != nil && get(md, "type", "coding", 0, "code") == "0001") != (q > 0) {
						t.Errorf("dispense %d quantity %v for type %v", j, q, get(md, "type", "coding", 0, "code"))
					}
				}
			}
			rg := dv.v.of("RequestGroup")[0]
			gotRx, _ := get(ext(rg, extNonDispensingReason), "valueCoding", "code").(string)
			if gotRx != tc.wantRxReason {
				t.Errorf("prescription non-dispensing reason %q, want %q", gotRx, tc.wantRxReason)
			}
			if len(mds) != n {
				t.Errorf("%d MedicationDispenses, want %d", len(mds), n)
			}
		})
	}
}

// TestDetailBundleCancellationReasons: MedicationRequest.statusReason of a
// cancelled item and of one marked for cancellation, and the prescription's
// cancellationReason when it is cancelled as a whole, as the NHS examples
// …_CancelledWithReason, …_ItemCancelledWithReason,
// …_PendingCancellationWithReason and …_ItemPendingCancellationWithReason
// (generateFhirResponse.ts: statusReason, cancellationReason).
func TestDetailBundleCancellationReasons(t *testing.T) {
	prescriber := rx.Actor{User: "p1", Org: "A83008"}
	for _, tc := range []struct {
		name     string
		release  bool
		cancel   map[int]string // item index -> reason
		want     []string       // per item: statusReason code ("" none)
		pending  []bool         // per item: lineItemPendingCancellation
		wantRx   string         // RequestGroup cancellationReason
		rxStatus rx.Status
	}{
		{name: "one item cancelled", cancel: map[int]string{0: "0001"}, want: []string{"0001", "", "", ""},
			pending: []bool{false, false, false, false}, rxStatus: rx.StatusToBeDispensed},
		{name: "all cancelled", cancel: map[int]string{0: "0001", 1: "0001", 2: "0001", 3: "0001"}, want: []string{"0001", "0001", "0001", "0001"},
			pending: []bool{false, false, false, false}, wantRx: "0001", rxStatus: rx.StatusCancelled},
		{name: "all cancelled, several reasons", cancel: map[int]string{0: "0003", 1: "0005", 2: "0005", 3: "0007"}, want: []string{"0003", "0005", "0005", "0007"},
			pending: []bool{false, false, false, false}, wantRx: "0007", rxStatus: rx.StatusCancelled},
		{name: "one item marked for cancellation", release: true, cancel: map[int]string{1: "0002"}, want: []string{"", "0002", "", ""},
			pending: []bool{false, true, false, false}, rxStatus: rx.StatusWithDispenser},
		{name: "all marked for cancellation", release: true, cancel: map[int]string{0: "0004", 1: "0004", 2: "0004", 3: "0004"},
			want: []string{"0004", "0004", "0004", "0004"}, pending: []bool{true, true, true, true}, wantRx: "0004", rxStatus: rx.StatusWithDispenser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, d := datedRecord(t, orderAcute4Items, created)
			if tc.release {
				var err error
				if rec, err = rx.Release(rec, "FA565", rx.Actor{Org: "FA565"}, "rel", true, created.Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			for i := range rec.Items {
				reason, ok := tc.cancel[i]
				if !ok {
					continue
				}
				n, code := rx.Cancel(rec, prescriber, rx.CancelInput{MessageID: "c", NHSNumber: rec.NHSNumber, LineItemID: rec.Items[i].ID, Reason: reason}, created.Add(2*time.Minute))
				if n == nil {
					t.Fatalf("cancel item %d: %s", i, code)
				}
				rec = n
			}
			if rec.Status != tc.rxStatus {
				t.Fatalf("status %s, want %s", rec.Status, tc.rxStatus)
			}
			v := decodeView(t, DetailBundle(rec, d))
			for i, mr := range v.of("MedicationRequest") {
				got, _ := get(mr, "statusReason", "coding", 0, "code").(string)
				if got != tc.want[i] {
					t.Errorf("item %d statusReason %q, want %q", i, got, tc.want[i])
				}
				if got != "" && !jsonEqual(t, get(mr, "statusReason", "coding", 0),
					`{"system":"https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason","code":"`+got+`","display":"`+cancelReasonDisplays[got]+`"}`) {
					t.Errorf("item %d statusReason %v", i, mr["statusReason"])
				}
				if p := get(ext(mr, extPendingCancellation), "extension", 0, "valueBoolean"); p != tc.pending[i] {
					t.Errorf("item %d pending %v, want %v", i, p, tc.pending[i])
				}
			}
			rg := v.of("RequestGroup")[0]
			var gotRx string
			for _, e := range get(rg, "extension").([]any) {
				if get(e, "url") == extStatusHistory && get(e, "extension", 0, "url") == "cancellationReason" {
					gotRx, _ = get(e, "extension", 0, "valueCoding", "code").(string)
				}
			}
			if gotRx != tc.wantRx {
				t.Errorf("prescription cancellationReason %q, want %q", gotRx, tc.wantRx)
			}
		})
	}
}

// TestDetailBundleOldDispenseRecords: a record written before dispense lines
// and cancellation reasons were kept still renders: no MedicationDispense
// and no reasons, the history as before.
func TestDetailBundleOldDispenseRecords(t *testing.T) {
	rec, d := fixtureRecord(t, orderAcute4Items, created)
	rec.Status, rec.Dispenser = rx.StatusWithDispenserActive, "FA565"
	rec.Items[0].Status, rec.Items[1].Status = rx.ItemCancelled, rx.ItemFullyDispensed
	rec.Dispenses = []rx.DispenseRecord{{ID: "OLD", Time: created, Dispenser: "FA565", Before: rx.StatusWithDispenser}}
	rec.History = append(rec.History, rx.Event{Time: created, Type: rx.EventDispense, MessageID: "OLD", Org: "FA565", Status: rx.StatusWithDispenserActive})
	dv := readDispensed(t, rec, d)
	if n := len(dv.v.of("MedicationDispense")); n != 0 || len(dv.v.of("PractitionerRole")) != 2 {
		t.Errorf("%d MedicationDispenses, %d PractitionerRoles; want 0 and 2 (prescriber, dispenser)", n, len(dv.v.of("PractitionerRole")))
	}
	if a := dv.history[len(dv.history)-1]; get(a, "action") != nil {
		t.Errorf("history of an old notification points at %v", get(a, "action"))
	}
	if mr := dv.v.of("MedicationRequest")[0]; mr["statusReason"] != nil || mr["status"] != "cancelled" {
		t.Errorf("old cancelled item: %v %v", mr["status"], mr["statusReason"])
	}
}

// TestDetailShapesDispensedAndCancelled compares the keys of the detail view
// after dispensing and cancelling with those of the NHS tracker API's
// clinicalView examples of the same states.
func TestDetailShapesDispensedAndCancelled(t *testing.T) {
	at := func(m int) time.Time { return created.Add(time.Duration(m) * time.Minute) }
	fa565 := rx.Actor{User: "d1", Org: "FA565"}
	released := func(t *testing.T) (*rx.Prescription, *fhir.OrderDetails) {
		rec, d := datedRecord(t, orderAcute4Items, created)
		rec, err := rx.Release(rec, "FA565", fa565, "rel", true, at(1))
		if err != nil {
			t.Fatal(err)
		}
		return rec, d
	}
	dispensed := func(steps ...map[int]rx.ItemStatus) func(t *testing.T) (*rx.Prescription, *fhir.OrderDetails) {
		return func(t *testing.T) (*rx.Prescription, *fhir.OrderDetails) {
			rec, d := released(t)
			for k, st := range steps {
				reasons, rxReason := map[int]string{}, "0002" // the prescription's when nothing is dispensed
				for i, s := range st {
					if s == rx.ItemNotDispensed {
						reasons[i] = "0002"
					} else {
						rxReason = ""
					}
				}
				var err error
				if rec, err = rx.Dispense(rec, "FA565", fa565, dispenseInput(rec, d, "DN"+string(rune('0'+k)), st, reasons, rxReason), at(2+k)); err != nil {
					t.Fatal(err)
				}
			}
			return rec, d
		}
	}
	cancelled := func(release bool) func(t *testing.T) (*rx.Prescription, *fhir.OrderDetails) {
		return func(t *testing.T) (*rx.Prescription, *fhir.OrderDetails) {
			rec, d := datedRecord(t, orderAcute4Items, created)
			if release {
				rec, d = released(t)
			}
			for _, it := range rec.Items {
				n, code := rx.Cancel(rec, rx.Actor{User: "p1", Org: "A83008"}, rx.CancelInput{MessageID: "c", NHSNumber: rec.NHSNumber, LineItemID: it.ID, Reason: "0001"}, at(5))
				if n == nil {
					t.Fatalf("cancel: %s", code)
				}
				rec = n
			}
			return rec, d
		}
	}
	full := map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0001", 3: "0001"}
	part := map[int]rx.ItemStatus{0: "0001", 1: "0001", 2: "0004", 3: "0004"}
	none := map[int]rx.ItemStatus{0: "0002", 1: "0002", 2: "0002", 3: "0002"}
	// What the detail view adds to the examples (TestViewShapes) and, for
	// MedicationDispense, the dm+d coding of the product as for
	// MedicationRequest.
	extra := []string{
		"MedicationRequest.medicationCodeableConcept.coding[].code",
		"MedicationRequest.medicationCodeableConcept.coding[].display",
		"MedicationRequest.medicationCodeableConcept.coding[].system=http://snomed.info/sct",
		"PractitionerRole.identifier[].system=https://fhir.nhs.uk/Id/sds-role-profile-id",
		"PractitionerRole.identifier[].value",
		"PractitionerRole.organization.display",
		"PractitionerRole.practitioner.display",
		"PractitionerRole.practitioner.identifier.system=https://fhir.nhs.uk/Id/sds-user-id",
		"PractitionerRole.practitioner.identifier.value",
		"PractitionerRole.telecom[].system=phone",
		"PractitionerRole.telecom[].use",
		"PractitionerRole.telecom[].value",
		"RequestGroup.action[].action[].participant[].extension[].valueReference.identifier.system=https://fhir.nhs.uk/Id/sds-user-id",
		"RequestGroup.extension[].url=" + ExtNominationSource,
		"RequestGroup.extension[].url=" + ExtSearchCategory, "RequestGroup.extension[].valueString",
	}
	mdCoding := []string{
		"MedicationDispense.medicationCodeableConcept.coding[].code",
		"MedicationDispense.medicationCodeableConcept.coding[].display",
		"MedicationDispense.medicationCodeableConcept.coding[].system=http://snomed.info/sct",
	}
	// What it leaves out: the address's use and type (TestViewShapes) and,
	// of a MedicationDispense, the dosage (optional there: generateFhirResponse
	// writes it when the notification's component has one; the broker does
	// not keep the notification's dosage).
	missing := []string{"Patient.address[].type", "Patient.address[].use"}
	mdMissing := append(slices.Clone(missing), "MedicationDispense.dosageInstruction[].text")
	for _, tc := range []struct {
		fixture string
		make    func(t *testing.T) (*rx.Prescription, *fhir.OrderDetails)
		extra   []string
		missing []string
	}{
		{"200_AcuteWithMultipleItems_Dispensed.json", dispensed(full), append(slices.Clone(extra), mdCoding...), mdMissing},
		{"200_AcuteWithMultipleItems_PartiallyDispensed.json", dispensed(part), append(slices.Clone(extra), mdCoding...), mdMissing},
		{"200_AcuteWithMultipleItems_MultipleDispenses.json", dispensed(part, full), append(slices.Clone(extra), mdCoding...), mdMissing},
		{"200_AcuteWithMultipleItems_NotDispensedWithReason.json", dispensed(none), append(slices.Clone(extra), mdCoding...), mdMissing},
		{"200_AcuteWithMultipleItems_ItemNotDispensedWithReason.json", dispensed(map[int]rx.ItemStatus{0: "0002", 1: "0004", 2: "0004", 3: "0004"}), append(slices.Clone(extra), mdCoding...), mdMissing},
		{"200_AcuteWithMultipleItems_CancelledWithReason.json", cancelled(false), extra, missing},
		{"200_AcuteWithMultipleItems_PendingCancellationWithReason.json", cancelled(true), extra, missing},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			fixture, err := os.ReadFile(filepath.Join(trackerFixtures, "clinicalView", tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			rec, d := tc.make(t)
			want, got := shape(t, fixture), shape(t, DetailBundle(rec, d))
			var gotExtra, gotMissing []string
			for k := range got {
				if !want[k] {
					gotExtra = append(gotExtra, k)
				}
			}
			for k := range want {
				if !got[k] {
					gotMissing = append(gotMissing, k)
				}
			}
			sort.Strings(gotExtra)
			sort.Strings(gotMissing)
			wantExtra, wantMissing := slices.Sorted(slices.Values(tc.extra)), slices.Sorted(slices.Values(tc.missing))
			if !slices.Equal(gotExtra, wantExtra) {
				t.Errorf("keys beyond the example:\n  %s\nwant\n  %s", strings.Join(gotExtra, "\n  "), strings.Join(wantExtra, "\n  "))
			}
			if !slices.Equal(gotMissing, wantMissing) {
				t.Errorf("keys of the example missing:\n  %s\nwant\n  %s", strings.Join(gotMissing, "\n  "), strings.Join(wantMissing, "\n  "))
			}
		})
	}
}
