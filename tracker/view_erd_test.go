package tracker

import (
	"bytes"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The tracker views of electronic repeat dispensing: a RequestGroup per
// issue in the search, and the detail of one issue.

// erdRecord makes the record of a generated repeat dispensing order of
// issues issues of supply days, dated start's day, accepted at start.
func erdRecord(t *testing.T, issues, supply int, start time.Time) (*rx.Prescription, *fhir.OrderDetails) {
	t.Helper()
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	body := fhirgen.RepeatDispensing(g.Body, issues-1, supply, start)
	m, err := fhir.DecodeMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	written, _ := fhirgen.MessageDate(body)
	o, err := m.Order(written)
	if err != nil {
		t.Fatalf("the generated eRD order is not valid: %v", err)
	}
	d, err := fhir.DecodeOrderDetails(body)
	if err != nil {
		t.Fatal(err)
	}
	rec := rx.Create(o.RxOrder(), rx.Actor{User: "prescriber-1", Org: o.Sender}, start)
	if !rec.RepeatDispensing() || rec.IssueCount() != issues {
		t.Fatalf("record of %d issues (therapy %s), want %d", rec.IssueCount(), rec.TherapyType, issues)
	}
	return rec, d
}

// issueRow is what the tests read of one RequestGroup.
type issueRow struct {
	fullURL, id, status, rgStatus, category string
	issued, allowed                         any
	pending, linePending                    any
}

func rowsOf(t *testing.T, v view) []issueRow {
	t.Helper()
	var out []issueRow
	for _, e := range v.Entry {
		rg := e.Resource
		if rg["resourceType"] != "RequestGroup" {
			continue
		}
		ri := ext(rg, extRepeatInformation)
		pc := ext(rg, extPendingCancellation)
		r := issueRow{fullURL: e.FullURL, rgStatus: rg["status"].(string),
			issued: get(ri, "extension", 0, "valueInteger"), allowed: get(ri, "extension", 1, "valueInteger"),
			pending: get(pc, "extension", 0, "valueBoolean"), linePending: get(pc, "extension", 1, "valueBoolean")}
		r.id, _ = get(rg, "identifier", 0, "value").(string)
		r.status, _ = get(ext(rg, extStatusHistory), "extension", 0, "valueCoding", "code").(string)
		r.category, _ = get(ext(rg, ExtSearchCategory), "valueString").(string)
		if get(ri, "extension", 0, "url") != "numberOfRepeatsIssued" || get(ri, "extension", 1, "url") != "numberOfRepeatsAllowed" {
			t.Errorf("repeat information %v", ri)
		}
		out = append(out, r)
	}
	return out
}

// checkIssues checks the RequestGroups of one eRD prescription: issue n
// (from 1) has status want[n-1] and the category and RequestGroup.status
// that go with it, repeat information n of len(want), and its own fullUrl.
func checkIssues(t *testing.T, rows []issueRow, id string, want ...rx.Status) {
	t.Helper()
	if len(rows) != len(want) {
		t.Fatalf("%d RequestGroups, want %d", len(rows), len(want))
	}
	urls := map[string]bool{}
	for i, r := range rows {
		n := i + 1
		if r.id != id || r.status != string(want[i]) || r.category != Category(want[i]) || r.rgStatus != requestStatus(want[i]) ||
			r.issued != float64(n) || r.allowed != float64(len(want)) {
			t.Errorf("issue %d: %+v; want %s status %s category %s, %d of %d", n, r, id, want[i], Category(want[i]), n, len(want))
		}
		if u, _ := urn("RequestGroup", id+"/"+strconv.Itoa(n)); r.fullURL != u {
			t.Errorf("issue %d fullUrl %s, want %s", n, r.fullURL, u)
		}
		if urls[r.fullURL] {
			t.Errorf("issue %d: fullUrl %s twice", n, r.fullURL)
		}
		urls[r.fullURL] = true
	}
}

// historyTitles lists the titles and issue statuses of the detail's
// history.
func historyTitles(t *testing.T, v view) []string {
	t.Helper()
	var out []string
	acts, _ := get(v.of("RequestGroup")[0], "action", 1, "action").([]any)
	for _, a := range acts {
		out = append(out, get(a, "title").(string)+" "+get(a, "code", 0, "coding", 0, "code").(string))
	}
	return out
}

func TestSearchBundleRepeatDispensing(t *testing.T) {
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	rec, d := erdRecord(t, 6, 28, start)
	search := func(rec *rx.Prescription) view {
		t.Helper()
		b := SearchBundle([]SearchResult{{rec, d.Patient}})
		v := decodeView(t, b)
		checkReferences(t, v)
		if !bytes.Equal(SearchBundle([]SearchResult{{rec, d.Patient}}), b) {
			t.Error("not deterministic")
		}
		return v
	}

	// Accepted: issue 1 To Be Dispensed, 2..6 future instances.
	v := search(rec)
	if v.Total != 6 || !slices.Equal(v.layout(), []string{"Patient/include", "RequestGroup/match", "RequestGroup/match",
		"RequestGroup/match", "RequestGroup/match", "RequestGroup/match", "RequestGroup/match"}) {
		t.Fatalf("layout %v total %d", v.layout(), v.Total)
	}
	checkIssues(t, rowsOf(t, v), rec.ID, rx.StatusToBeDispensed, rx.StatusRepeatFuture, rx.StatusRepeatFuture, rx.StatusRepeatFuture,
		rx.StatusRepeatFuture, rx.StatusRepeatFuture)
	for _, rg := range v.of("RequestGroup") {
		if rg["intent"] != "reflex-order" || rg["authoredOn"] != "2026-03-02T00:00:00.000Z" || get(rg, "subject", "reference") != v.Entry[0].FullURL {
			t.Errorf("RequestGroup %v", rg)
		}
	}

	// Issue 1 released and dispensed; at issue 2's date the scheduler moves
	// issue 2 on (9000 -> 0000 -> 0001).
	by := rx.Actor{User: "d1", Org: "FA565"}
	rec, err := rx.Release(rec, "FA565", by, "release-1", false, start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]rx.ItemStatus{}
	for _, it := range rec.Items {
		all[it.ID] = rx.ItemFullyDispensed
	}
	rec, err = rx.Dispense(rec, "FA565", by, rx.DispenseInput{ID: "dispense-1", Items: all}, start.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	checkIssues(t, rowsOf(t, search(rec)), rec.ID, rx.StatusDispensed, rx.StatusRepeatFuture, rx.StatusRepeatFuture, rx.StatusRepeatFuture,
		rx.StatusRepeatFuture, rx.StatusRepeatFuture)
	due := rec.IssueAvailableAt(2)
	if want := start.Truncate(24*time.Hour).AddDate(0, 0, 21); !due.Equal(want) {
		t.Fatalf("issue 2 available at %s, want %s", due, want)
	}
	early := rx.ApplyScheduled(rec, due.Add(-time.Hour), nil)
	if early == nil {
		t.Fatal("nothing scheduled once issue 1 is complete")
	}
	checkIssues(t, rowsOf(t, search(early)), rec.ID, rx.StatusDispensed, rx.StatusAwaitingReleaseReady, rx.StatusRepeatFuture,
		rx.StatusRepeatFuture, rx.StatusRepeatFuture, rx.StatusRepeatFuture)
	rec = rx.ApplyScheduled(early, due, nil)
	if rec == nil || rec.IssueNumber() != 2 {
		t.Fatalf("issue 2 did not become available at %s: %+v", due, rec)
	}
	sv := search(rec)
	rows := rowsOf(t, sv)
	checkIssues(t, rows, rec.ID, rx.StatusDispensed, rx.StatusToBeDispensed, rx.StatusRepeatFuture, rx.StatusRepeatFuture,
		rx.StatusRepeatFuture, rx.StatusRepeatFuture)
	if rows[0].category != CategoryPast || rows[1].category != CategoryCurrent || rows[2].category != CategoryFuture {
		t.Errorf("categories %s %s %s", rows[0].category, rows[1].category, rows[2].category)
	}

	// The detail of issue 2: its status, 2 of 6, its date, and only the
	// history about the whole prescription or issue 2.
	two, ok := rec.AtIssue(2)
	if !ok {
		t.Fatal("no issue 2")
	}
	db := DetailBundle(two, d)
	dv := decodeView(t, db)
	checkReferences(t, dv)
	if !bytes.Equal(DetailBundle(rec, d), db) {
		t.Error("the detail of the current issue (2) differs from that of AtIssue(2)")
	}
	rg := dv.of("RequestGroup")[0]
	if get(ext(rg, extStatusHistory), "extension", 0, "valueCoding", "code") != "0001" || rg["status"] != "active" ||
		get(ext(rg, ExtSearchCategory), "valueString") != CategoryCurrent {
		t.Errorf("issue 2 detail: %v", rg)
	}
	if got := ext(rg, extRepeatInformation); !jsonEqual(t, got, `{"url":"`+extRepeatInformation+`","extension":[`+
		`{"url":"numberOfRepeatsIssued","valueInteger":2},{"url":"numberOfRepeatsAllowed","valueInteger":6}]}`) {
		t.Errorf("issue 2 repeat information %v", got)
	}
	if got := get(ext(rg, ExtIssueAvailableFrom), "valueDateTime"); got != "2026-03-23T00:00:00.000Z" {
		t.Errorf("issue 2 available from %v, want 2026-03-23T00:00:00.000Z", got)
	}
	if dv.Entry[len(dv.Entry)-1].FullURL != rows[1].fullURL {
		t.Errorf("the detail of issue 2 is %s, the search names it %s", dv.Entry[len(dv.Entry)-1].FullURL, rows[1].fullURL)
	}
	if got, want := historyTitles(t, dv), []string{"Prescription upload successful 9000", "Awaiting release ready 0000",
		"Available for download 0001"}; !slices.Equal(got, want) {
		t.Errorf("issue 2 history\n%q\nwant\n%q", got, want)
	}
	for _, mr := range dv.of("MedicationRequest") {
		if got := get(ext(mr, extDispensingInformation), "extension", 0, "valueCoding", "code"); got != "0007" {
			t.Errorf("issue 2 item status %v", got)
		}
	}

	// The detail of issue 1: dispensed, 1 of 6, no availability date, its
	// own history; its resources are not issue 2's.
	one, _ := rec.AtIssue(1)
	ov := decodeView(t, DetailBundle(one, d))
	checkReferences(t, ov)
	rg = ov.of("RequestGroup")[0]
	if get(ext(rg, extStatusHistory), "extension", 0, "valueCoding", "code") != "0006" ||
		get(ext(rg, extRepeatInformation), "extension", 0, "valueInteger") != 1.0 || ext(rg, ExtIssueAvailableFrom) != nil {
		t.Errorf("issue 1 detail: %v", rg)
	}
	if got, want := historyTitles(t, ov), []string{"Prescription upload successful 0001", "Release Request successful 0002",
		"Dispense notification successful 0006"}; !slices.Equal(got, want) {
		t.Errorf("issue 1 history\n%q\nwant\n%q", got, want)
	}
	if ov.Entry[len(ov.Entry)-1].FullURL != rows[0].fullURL {
		t.Error("the detail of issue 1 and the search name it differently")
	}
	for i, mr := range ov.of("MedicationRequest") {
		if get(ext(mr, extDispensingInformation), "extension", 0, "valueCoding", "code") != "0001" {
			t.Errorf("issue 1 item %d: %v", i, mr)
		}
		if mr["id"] == dv.of("MedicationRequest")[i]["id"] {
			t.Errorf("item %d has the same MedicationRequest in issues 1 and 2", i)
		}
	}

	// A later issue still to come: 9000, future, available from its date.
	five, _ := rec.AtIssue(5)
	rg = decodeView(t, DetailBundle(five, d)).of("RequestGroup")[0]
	if get(ext(rg, extStatusHistory), "extension", 0, "valueCoding", "display") != "Repeat Dispense future instance" ||
		rg["status"] != "on-hold" || get(ext(rg, extRepeatInformation), "extension", 0, "valueInteger") != 5.0 ||
		get(ext(rg, ExtIssueAvailableFrom), "valueDateTime") != instant(rec.IssueAvailableAt(5)) {
		t.Errorf("issue 5 detail: %v", rg)
	}
}

// A cancellation marked while issue 1 is with its dispenser is pending on
// issue 1 only; the later issues have the item cancelled.
func TestSearchBundleRepeatDispensingPending(t *testing.T) {
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	rec, d := erdRecord(t, 3, 10, start)
	rec, err := rx.Release(rec, "FA565", rx.Actor{Org: "FA565"}, "r", false, start.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	n, code := rx.Cancel(rec, rx.Actor{User: "prescriber-1", Org: rec.Prescriber},
		rx.CancelInput{MessageID: "c", NHSNumber: rec.NHSNumber, LineItemID: rec.Items[0].ID, Reason: "0001"}, start.Add(2*time.Hour))
	if code != rx.RPendingWith || n == nil {
		t.Fatalf("cancel: %s", code)
	}
	v := decodeView(t, SearchBundle([]SearchResult{{n, d.Patient}}))
	rows := rowsOf(t, v)
	checkIssues(t, rows, n.ID, rx.StatusWithDispenser, rx.StatusRepeatFuture, rx.StatusRepeatFuture)
	for i, r := range rows {
		if want := i == 0; r.pending != want || r.linePending != want {
			t.Errorf("issue %d pending cancellation %v, line item %v; want %v", i+1, r.pending, r.linePending, want)
		}
	}
	// The detail of issue 2 shows its cancelled item and the cancellation
	// of issue 2, not the marking of issue 1.
	two, _ := n.AtIssue(2)
	dv := decodeView(t, DetailBundle(two, d))
	if got := get(ext(dv.of("MedicationRequest")[0], extDispensingInformation), "extension", 0, "valueCoding", "code"); got != "0005" {
		t.Errorf("issue 2 cancelled item: %v", got)
	}
	if got, want := historyTitles(t, dv), []string{"Prescription upload successful 9000", "Prescription/item was cancelled 9000"}; !slices.Equal(got, want) {
		t.Errorf("issue 2 history %q, want %q", got, want)
	}
	one, _ := n.AtIssue(1)
	if got := historyTitles(t, decodeView(t, DetailBundle(one, d))); len(got) != 3 ||
		got[2] != "Prescription/item was not cancelled. With dispenser. Marked for cancellation 0002" {
		t.Errorf("issue 1 history %q", got)
	}
}

// Prescriptions that are not repeat dispensing show as they did: one
// RequestGroup named by the prescription ID, every history event, no issue
// date; in a search with an eRD prescription, the same entry as alone.
func TestViewsNotRepeatDispensingUnchanged(t *testing.T) {
	acute, acuteD := fixtureRecord(t, orderAcute4Items, created)
	mixed, mixedD := fixtureRecord(t, orderAcuteRepeat, created.Add(time.Hour))
	erd, erdD := erdRecord(t, 4, 28, created.Add(2*time.Hour))
	acute.History = append(acute.History,
		rx.Event{Time: created.Add(time.Minute), Type: rx.EventRelease, Org: "FA565", Status: rx.StatusWithDispenser},
		rx.Event{Time: created.Add(2 * time.Minute), Type: "something", Issue: 3, Status: rx.StatusWithDispenser})
	for _, tc := range []struct {
		rec *rx.Prescription
		d   *fhir.OrderDetails
	}{{acute, acuteD}, {mixed, mixedD}} {
		alone := decodeView(t, SearchBundle([]SearchResult{{tc.rec, tc.d.Patient}}))
		with := decodeView(t, SearchBundle([]SearchResult{{tc.rec, tc.d.Patient}, {erd, erdD.Patient}}))
		if alone.Total != 1 || with.Total != 5 {
			t.Errorf("%s: total %d alone, %d with a 4-issue eRD", tc.rec.TherapyType, alone.Total, with.Total)
		}
		rg := alone.Entry[1]
		if u, _ := urn("RequestGroup", tc.rec.ID); rg.FullURL != u {
			t.Errorf("%s: fullUrl %s, want %s", tc.rec.TherapyType, rg.FullURL, u)
		}
		last := with.Entry[len(with.Entry)-1]
		if !jsonEqual(t, last.Resource, mustJSON(t, rg.Resource)) || last.FullURL != rg.FullURL {
			t.Errorf("%s: the entry differs next to an eRD prescription:\n%v\n%v", tc.rec.TherapyType, last, rg)
		}
		dv := decodeView(t, DetailBundle(tc.rec, tc.d))
		drg := dv.of("RequestGroup")[0]
		if dv.Entry[len(dv.Entry)-1].FullURL != rg.FullURL || ext(drg, ExtIssueAvailableFrom) != nil {
			t.Errorf("%s: detail %v", tc.rec.TherapyType, drg)
		}
		if got := len(historyTitles(t, dv)); got != len(tc.rec.History) {
			t.Errorf("%s: %d history events shown of %d", tc.rec.TherapyType, got, len(tc.rec.History))
		}
		for i, mr := range dv.of("MedicationRequest") {
			if u, id := urn("MedicationRequest", tc.rec.ID+"/"+tc.rec.Items[i].ID); mr["id"] != id {
				t.Errorf("%s: item %d MedicationRequest %v, want %s", tc.rec.TherapyType, i, mr["id"], u)
			}
		}
	}
	// Repeat prescribing: issue 1 of numberOfRepeatsAllowed + 1, as before.
	rg := decodeView(t, SearchBundle([]SearchResult{{mixed, mixedD.Patient}})).of("RequestGroup")[0]
	if got := ext(rg, extRepeatInformation); !jsonEqual(t, got, `{"url":"`+extRepeatInformation+`","extension":[`+
		`{"url":"numberOfRepeatsIssued","valueInteger":1},{"url":"numberOfRepeatsAllowed","valueInteger":`+strconv.Itoa(mixed.RepeatsAllowed+1)+`}]}`) {
		t.Errorf("repeat prescribing repeat information %v", got)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	return string(encode(v))
}
