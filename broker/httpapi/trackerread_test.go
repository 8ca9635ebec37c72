package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
)

// searchBundle is what the tests read of a tracker search answer.
type searchBundle struct {
	ResourceType string `json:"resourceType"`
	Total        int    `json:"total"`
	Entry        []struct {
		Resource struct {
			ResourceType string `json:"resourceType"`
			Identifier   []struct {
				Value string `json:"value"`
			} `json:"identifier"`
		} `json:"resource"`
	} `json:"entry"`
}

// matches are the prescription IDs of a search answer's RequestGroups.
func matches(t *testing.T, body []byte) []string {
	t.Helper()
	var b searchBundle
	if err := json.Unmarshal(body, &b); err != nil || b.ResourceType != "Bundle" {
		t.Fatalf("not a Bundle (%v): %s", err, body)
	}
	var ids []string
	for _, e := range b.Entry {
		if e.Resource.ResourceType == "RequestGroup" && len(e.Resource.Identifier) > 0 {
			ids = append(ids, e.Resource.Identifier[0].Value)
		}
	}
	slices.Sort(ids)
	return ids
}

// The tracker search through the handler: each role sees what the access
// rules let it see; what it may not see is dropped before it is read; every
// search is audited (what was asked, the NHS number found even when
// hidden, how many were answered) before it is answered.
func TestTrackerSearchAccessAndAudit(t *testing.T) {
	f := newFixture(t)
	const nhs = "9449305552"
	mine := f.addRx("A83008", "FA565", nhs)   // sent by A83008, nominated to FA565
	theirs := f.addRx("B81001", "FCG71", nhs) // sent by B81001, nominated to FCG71
	both := []string{mine.ID, theirs.ID}
	slices.Sort(both)
	cases := []struct {
		name, token string
		query       string
		want        []string
		wantNHS     string // the audit entry's NHS number
	}{
		{"prescriber by ID, its own", tokPrescriber, "prescriptionId=" + mine.ID, []string{mine.ID}, nhs},
		{"prescriber by ID, another's", tokPrescriber, "prescriptionId=" + theirs.ID, nil, nhs},
		{"prescriber by NHS number", tokPrescriber, "nhsNumber=" + nhs, []string{mine.ID}, nhs},
		{"nominated dispenser", tokDispenser, "nhsNumber=" + nhs, []string{mine.ID}, nhs},
		{"other dispenser", tokOtherDisp, "nhsNumber=" + nhs, []string{theirs.ID}, nhs},
		{"tracker role", tokTracker, "nhsNumber=" + nhs, both, nhs},
		{"admin", tokAdmin, "prescriptionId=" + strings.ToLower(theirs.ID), []string{theirs.ID}, nhs},
		{"unknown prescription", tokTracker, "prescriptionId=" + "24F5DA-A83008-7EFE6Z", nil, ""},
		{"unknown patient", tokTracker, "nhsNumber=9990548609", nil, "9990548609"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.audit.entries, f.records.reads = nil, nil
			w := f.do(req{method: "GET", path: "/FHIR/R4/RequestGroup?" + c.query, token: c.token})
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body.String())
			}
			if got := matches(t, w.Body.Bytes()); !slices.Equal(got, c.want) {
				t.Errorf("answered %v, want %v", got, c.want)
			}
			for _, id := range f.records.readIDs() {
				if !slices.Contains(c.want, id) {
					t.Errorf("read %s, which the caller may not see", id)
				}
			}
			audit := f.audit.all()
			if len(audit) != 1 {
				t.Fatalf("%d audit entries, want 1", len(audit))
			}
			e, p := audit[0], testPrincipals[c.token]
			wantID := ""
			if id, ok := strings.CutPrefix(c.query, "prescriptionId="); ok {
				wantID = strings.ToUpper(id)
			}
			if e.Action != "search" || e.User != p.Subject || e.Org != p.ODS || e.PrescriptionID != wantID ||
				e.NHSNumber != c.wantNHS || e.Results != len(c.want) || e.Outcome != 200 || !e.Time.Equal(f.now) {
				t.Errorf("audit %+v", e)
			}
		})
	}
}

// The tracker detail through the handler: 200 to who may see it, 403 to
// who may not whether or not it exists, 404 (not found, or no such issue)
// to who sees everything; each audited with its outcome before it is
// answered. A malformed request is 400 and neither read nor audited.
func TestTrackerDetailAccessAndAudit(t *testing.T) {
	f := newFixture(t)
	rec := f.addRx("A83008", "FA565", "9449305552")
	const unknown = "24F5DA-A83008-7EFE6Z"
	cases := []struct {
		name, token, path string
		status            int
		code              string
		audited           bool
		wantNHS           string
		issue             int
	}{
		{"sender", tokPrescriber, rec.ID, 200, "", true, rec.NHSNumber, 0},
		{"nominated dispenser", tokDispenser, rec.ID, 200, "", true, rec.NHSNumber, 0},
		{"tracker role", tokTracker, rec.ID, 200, "", true, rec.NHSNumber, 0},
		{"issue 1 of an acute prescription", tokAdmin, rec.ID + "?issueNumber=1", 200, "", true, rec.NHSNumber, 1},
		{"another prescriber", tokOtherPresc, rec.ID, 403, fhir.CodeAccessDenied, true, rec.NHSNumber, 0},
		{"another dispenser", tokOtherDisp, rec.ID, 403, fhir.CodeAccessDenied, true, rec.NHSNumber, 0},
		{"a role the rules do not know", tokUnknownRole, rec.ID, 403, fhir.CodeAccessDenied, true, rec.NHSNumber, 0},
		{"unknown, to a prescriber", tokPrescriber, unknown, 403, fhir.CodeAccessDenied, true, "", 0},
		{"unknown, to the tracker role", tokTracker, unknown, 404, fhir.CodeResourceNotFound, true, "", 0},
		{"no such issue", tokTracker, rec.ID + "?issueNumber=2", 404, fhir.CodeResourceNotFound, true, rec.NHSNumber, 2},
		{"issue beyond 99", tokTracker, rec.ID + "?issueNumber=99999999999999999999", 404, fhir.CodeResourceNotFound, true, rec.NHSNumber, 100},
		{"bad issue number", tokTracker, rec.ID + "?issueNumber=0", 400, fhir.CodeInvalidValue, false, "", 0},
		{"bad prescription ID", tokTracker, "24F5DA-A83008-7EFE6A", 400, fhir.CodeInvalidValue, false, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.audit.entries, f.records.reads = nil, nil
			w := f.do(req{method: "GET", path: "/FHIR/R4/RequestGroup/" + c.path, token: c.token})
			if c.code != "" {
				wantOutcome(t, w, c.status, c.code)
				if strings.Contains(w.Body.String(), rec.NHSNumber) {
					t.Errorf("a refusal tells the NHS number: %s", w.Body.String())
				}
			} else {
				if w.Code != c.status {
					t.Fatalf("status %d: %s", w.Code, w.Body.String())
				}
				if !strings.Contains(w.Body.String(), `"RequestGroup"`) || !strings.Contains(w.Body.String(), rec.ID) {
					t.Errorf("not the prescription's detail: %.300s", w.Body.String())
				}
			}
			audit := f.audit.all()
			if !c.audited {
				if len(audit) != 0 || len(f.records.readIDs()) != 0 {
					t.Errorf("a malformed request was read (%v) or audited (%+v)", f.records.readIDs(), audit)
				}
				return
			}
			if len(audit) != 1 {
				t.Fatalf("%d audit entries, want 1", len(audit))
			}
			id := strings.ToUpper(strings.SplitN(c.path, "?", 2)[0])
			results := 0
			if c.status == 200 {
				results = 1
			}
			if e := audit[0]; e.Action != "detail" || e.PrescriptionID != id || e.NHSNumber != c.wantNHS ||
				e.Outcome != c.status || e.Results != results || e.Issue != c.issue {
				t.Errorf("audit %+v", e)
			}
		})
	}
}

// A look-up that cannot be audited is not answered: 503 with Retry-After,
// without the data, whether it would have been answered or refused; a full
// audit stream is 507. A store that cannot be read is 503 too (nothing
// was shown, nothing is audited).
func TestTrackerAuditFailureAnswersNothing(t *testing.T) {
	f := newFixture(t)
	rec := f.addRx("A83008", "FA565", "9449305552")
	lookups := []struct{ name, path, token string }{
		{"search by ID", "/FHIR/R4/RequestGroup?prescriptionId=" + url.QueryEscape(rec.ID), tokTracker},
		{"search by NHS number", "/FHIR/R4/RequestGroup?nhsNumber=" + rec.NHSNumber, tokPrescriber},
		{"search showing nothing", "/FHIR/R4/RequestGroup?nhsNumber=" + rec.NHSNumber, tokOtherPresc},
		{"detail", "/FHIR/R4/RequestGroup/" + rec.ID, tokDispenser},
		{"detail refused", "/FHIR/R4/RequestGroup/" + rec.ID, tokOtherDisp},
		{"detail not found", "/FHIR/R4/RequestGroup/24F5DA-A83008-7EFE6Z", tokTracker},
		{"detail of no such issue", "/FHIR/R4/RequestGroup/" + rec.ID + "?issueNumber=3", tokTracker},
	}
	failures := []struct {
		name       string
		audit      error
		records    error
		status     int
		code       string
		retryAfter string
	}{
		{"audit unreachable", errStore, nil, 503, fhir.CodeServiceUnavailable, "1"},
		{"audit stream full", &fullOn{stream: "EPS_AUDIT"}, nil, 507, fhir.CodeInsufficientStorage, "60"},
	}
	for _, fl := range failures {
		for _, l := range lookups {
			t.Run(fl.name+"/"+l.name, func(t *testing.T) {
				f.audit.err, f.records.err = fl.audit, fl.records
				w := f.do(req{method: "GET", path: l.path, token: l.token})
				wantOutcome(t, w, fl.status, fl.code)
				if got := w.Header().Get("Retry-After"); got != fl.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, fl.retryAfter)
				}
				for _, secret := range []string{rec.NHSNumber, rec.BundleID, "RequestGroup"} {
					if strings.Contains(w.Body.String(), secret) {
						t.Errorf("the answer holds %q: %s", secret, w.Body.String())
					}
				}
				if n := len(f.audit.all()); n != 0 {
					t.Errorf("%d audit entries", n)
				}
			})
		}
	}
	// The event log unreachable: 503 before anything is shown or audited.
	f.audit.err, f.records.err = nil, errStore
	for _, l := range lookups[:2] {
		w := f.do(req{method: "GET", path: l.path, token: l.token})
		wantOutcome(t, w, 503, fhir.CodeServiceUnavailable)
	}
	if n := len(f.audit.all()); n != 0 {
		t.Errorf("%d audit entries of reads that failed", n)
	}
}

// A search waits for the index to hold what was written; an index still
// behind is 503 with Retry-After, neither read nor audited.
func TestTrackerSearchIndexBehind(t *testing.T) {
	f := newFixture(t)
	rec := f.addRx("A83008", "FA565", "9449305552")
	f.mustReach = f.index.applied + 5
	w := f.do(req{method: "GET", path: "/FHIR/R4/RequestGroup?nhsNumber=" + rec.NHSNumber, token: tokTracker})
	oo := wantOutcome(t, w, 503, fhir.CodeServiceUnavailable)
	if want := fmt.Sprintf("(%d of %d events applied)", f.index.applied, f.mustReach); !strings.Contains(oo.Issue[0].Diagnostics, want) {
		t.Errorf("diagnostics %q do not say %q", oo.Issue[0].Diagnostics, want)
	}
	if w.Header().Get("Retry-After") != "1" || len(f.audit.all()) != 0 || len(f.records.readIDs()) != 0 {
		t.Errorf("Retry-After %q, audit %v, reads %v", w.Header().Get("Retry-After"), f.audit.all(), f.records.readIDs())
	}
}

// Search parameters the tracker API refuses are 400 in its words, before
// anything is read or audited.
func TestTrackerSearchBadRequests(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		query, code string
		expression  []string
	}{
		{"", "BAD_REQUEST", []string{"prescriptionId", "nhsNumber"}},
		{"prescriptionId=24F5DA-A83008-7EFE6Z&nhsNumber=9449305552", "BAD_REQUEST", []string{"prescriptionId", "nhsNumber"}},
		{"prescriptionId=24F5DA-A83008-7EFE6A", fhir.CodeInvalidValue, []string{"prescriptionId"}},
		{"nhsNumber=9449305553", fhir.CodeInvalidValue, []string{"nhsNumber"}},
		{"nhsNumber=9449305552&nhsNumber=9449305552", fhir.CodeInvalidValue, []string{"prescriptionId"}},
	}
	for _, c := range cases {
		w := f.do(req{method: "GET", path: "/FHIR/R4/RequestGroup?" + c.query, token: tokTracker})
		oo := wantOutcome(t, w, 400, c.code)
		if !slices.Equal(oo.Issue[0].Expression, c.expression) {
			t.Errorf("%q: expression %v, want %v", c.query, oo.Issue[0].Expression, c.expression)
		}
	}
	wantOutcome(t, f.do(req{method: "GET", path: "/FHIR/R4/RequestGroup/", token: tokTracker}), 400, "BAD_REQUEST")
	if len(f.audit.all()) != 0 || len(f.records.readIDs()) != 0 {
		t.Error("a malformed search was read or audited")
	}
}

// The audit list: admins only, newest first, filtered; bad parameters 400;
// an unreachable trail 503.
func TestAuditList(t *testing.T) {
	f := newFixture(t)
	rec := f.addRx("A83008", "FA565", "9449305552")
	for _, tok := range []string{tokTracker, tokPrescriber, tokTracker} {
		if w := f.do(req{method: "GET", path: "/FHIR/R4/RequestGroup/" + rec.ID, token: tok}); w.Code != 200 {
			t.Fatalf("detail: %d", w.Code)
		}
	}
	var got struct {
		Entries []service.AuditEntry `json:"entries"`
		Count   int                  `json:"count"`
	}
	w := f.do(req{method: "GET", path: "/api/v1/audit?nhsNumber=" + rec.NHSNumber + "&user=desk-user&limit=5", token: tokAdmin})
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &got) != nil {
		t.Fatalf("audit list: %d %s", w.Code, w.Body.String())
	}
	if got.Count != 2 || len(got.Entries) != 2 || got.Entries[0].User != "desk-user" {
		t.Errorf("listed %+v", got)
	}
	if q := f.audit.queries[len(f.audit.queries)-1]; q != (service.AuditQuery{User: "desk-user", NHSNumber: rec.NHSNumber, Limit: 5}) {
		t.Errorf("query %+v", q)
	}
	// Nothing found: an empty list, not null.
	w = f.do(req{method: "GET", path: "/api/v1/audit?user=nobody", token: tokAdmin})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"entries":[]`) {
		t.Errorf("empty list: %d %s", w.Code, w.Body.String())
	}
	for _, c := range []struct {
		query, param string
	}{{"nhsNumber=123", "nhsNumber"}, {"limit=0", "limit"}, {"limit=10001", "limit"}, {"user=a&user=b", "user"}} {
		oo := wantOutcome(t, f.do(req{method: "GET", path: "/api/v1/audit?" + c.query, token: tokAdmin}), http.StatusBadRequest, fhir.CodeInvalidValue)
		if !slices.Equal(oo.Issue[0].Expression, []string{c.param}) {
			t.Errorf("%s: expression %v", c.query, oo.Issue[0].Expression)
		}
	}
	f.audit.listErr = errStore
	wantOutcome(t, f.do(req{method: "GET", path: "/api/v1/audit", token: tokAdmin}), 503, fhir.CodeServiceUnavailable)
}

// Nomination reads are audited before they are answered: a read that
// cannot be audited is 503 without the data; a change made whose answer
// cannot be audited is 503 saying that the change was made.
func TestNominationAudit(t *testing.T) {
	f := newFixture(t)
	const nhs = "9449305552"
	w := f.do(req{method: "PUT", path: "/api/v1/nominations/" + nhs + "/P1", token: tokAdmin, body: `{"ods":"FA565"}`})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "FA565") {
		t.Fatalf("put: %d %s", w.Code, w.Body.String())
	}
	w = f.do(req{method: "GET", path: "/api/v1/nominations/" + nhs, token: tokDispenser})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "FA565") {
		t.Fatalf("get: %d %s", w.Code, w.Body.String())
	}
	audit := f.audit.all()
	if len(audit) != 2 || audit[0].Action != auditNominationChange || audit[1].Action != auditNominations ||
		audit[1].NHSNumber != nhs || audit[1].Results != 1 || audit[1].Outcome != 200 {
		t.Errorf("audit %+v", audit)
	}
	f.audit.err = errStore
	w = f.do(req{method: "GET", path: "/api/v1/nominations/" + nhs, token: tokDispenser})
	wantOutcome(t, w, 503, fhir.CodeServiceUnavailable)
	if strings.Contains(w.Body.String(), "FA565") {
		t.Errorf("an unaudited read answered the data: %s", w.Body.String())
	}
	w = f.do(req{method: "PUT", path: "/api/v1/nominations/" + nhs + "/P1", token: tokAdmin, body: `{"ods":"FCG71"}`})
	oo := wantOutcome(t, w, 503, fhir.CodeServiceUnavailable)
	if !strings.Contains(oo.Issue[0].Diagnostics, "the change was made") || strings.Contains(w.Body.String(), "FCG71") {
		t.Errorf("unaudited change: %s", w.Body.String())
	}
	if got := f.noms.patients[nhs].Nominations["P1"].ODS; got != "FCG71" {
		t.Errorf("the change was not made: %q", got)
	}
}

// The tracker shows the patient and the order from the original order
// message, whether the prescription's current state is that message
// (nothing has happened to it since: the order is taken from the current
// state, not read again) or a later event (the order is read by its
// sequence).
func TestTrackerOrderDetailsFromCurrentOrOrder(t *testing.T) {
	f := newFixture(t)
	untouched := f.addRx("A83008", "FA565", "9449305552")
	d, err := fhir.DecodeOrderDetails(f.records.current[untouched.ID].Body)
	if err != nil || d.Patient.Family == "" {
		t.Fatalf("the fixture's order has no patient family name (%v)", err)
	}
	family := d.Patient.Family

	// A later event on the other: its current state's message is not the order.
	later := f.addRx("A83008", "FA565", "9449305552")
	order := f.records.current[later.ID]
	next := *order.Record
	f.records.current[later.ID] = &service.Event{Seq: order.Seq + 100, Time: f.now, Event: "prescription-release",
		MessageID: "later-message", Record: &next, Body: []byte(`{"resourceType":"Parameters"}`)}
	// The untouched one's order can no longer be read by its sequence: its
	// details must come from its current state.
	delete(f.records.events, untouched.OrderSeq)

	for _, id := range []string{untouched.ID, later.ID} {
		for _, path := range []string{"/FHIR/R4/RequestGroup/" + id, "/FHIR/R4/RequestGroup?prescriptionId=" + id} {
			w := f.do(req{method: "GET", path: path, token: tokTracker})
			if w.Code != 200 {
				t.Fatalf("%s: status %d: %s", path, w.Code, w.Body.String())
			}
			if !strings.Contains(w.Body.String(), family) || !strings.Contains(w.Body.String(), id) {
				t.Errorf("%s: the answer lacks the order's patient (%s): %.400s", path, family, w.Body.String())
			}
		}
	}
}
