package test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// page is the header the tracker page sends with its cookie.
const page = "X-EPS-Tracker"

// searchset is the part of a searchset Bundle the tests look at.
type searchset struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Total        int    `json:"total"`
	Entry        []struct {
		Search   struct{ Mode string } `json:"search"`
		Resource json.RawMessage       `json:"resource"`
	} `json:"entry"`
}

type requestGroup struct {
	ResourceType string `json:"resourceType"`
	Identifier   []struct{ System, Value string }
	Extension    []struct {
		URL       string `json:"url"`
		Extension []struct {
			URL         string                         `json:"url"`
			ValueCoding struct{ Code, Display string } `json:"valueCoding"`
		} `json:"extension"`
	} `json:"extension"`
}

// groups returns the RequestGroups of a searchset: their IDs and statuses.
func groups(t *testing.T, res *response) (ids, statuses []string, total int) {
	t.Helper()
	if res.Status != 200 {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	var b searchset
	if err := json.Unmarshal(res.Body, &b); err != nil || b.ResourceType != "Bundle" || b.Type != "searchset" {
		t.Fatalf("not a searchset Bundle (%v): %s", err, res.Body)
	}
	for _, e := range b.Entry {
		var rg requestGroup
		json.Unmarshal(e.Resource, &rg)
		if rg.ResourceType != "RequestGroup" {
			continue
		}
		if e.Search.Mode != "match" {
			t.Errorf("RequestGroup with search mode %q", e.Search.Mode)
		}
		ids = append(ids, rg.Identifier[0].Value)
		st := ""
		for _, x := range rg.Extension {
			if x.URL == "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory" {
				for _, y := range x.Extension {
					if y.URL == "status" {
						st = y.ValueCoding.Code
					}
				}
			}
		}
		statuses = append(statuses, st)
	}
	return ids, statuses, b.Total
}

// trackerFixture posts orders: two for one patient, one for another, one
// whose ID ends in '+'.
type trackerFixture struct {
	b       *testBroker
	patient string // NHS number with two prescriptions
	first   *fhirgen.Generated
	second  *fhirgen.Generated
	other   *fhirgen.Generated
	plus    *fhirgen.Generated
}

func newTrackerFixture(t *testing.T, dir string) *trackerFixture {
	t.Helper()
	b := startBroker(t, dir)
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	f := &trackerFixture{b: b, patient: fhirgen.NHSNumber()}
	f.first, _ = tmpl.Order(fhirgen.Options{NHSNumber: f.patient})
	f.second, _ = tmpl.Order(fhirgen.Options{NHSNumber: f.patient})
	f.other, _ = tmpl.Order(fhirgen.Options{Performer: "FCG71"})
	plusID := fhirgen.ShortID("A83008")
	for !strings.HasSuffix(plusID, "+") {
		plusID = fhirgen.ShortID("A83008")
	}
	f.plus, _ = tmpl.Order(fhirgen.Options{ShortID: plusID})
	tok := b.token(auth.RolePrescriber, "A83008")
	for _, g := range []*fhirgen.Generated{f.first, f.second, f.other, f.plus} {
		if res := b.post(tok, g.Body); res.Status != 200 {
			t.Fatalf("post: %d %s", res.Status, res.Body)
		}
	}
	return f
}

func TestTrackerSearchAndDetail(t *testing.T) {
	f := newTrackerFixture(t, "")
	b := f.b
	tok := b.token(auth.RoleTracker, "X26")
	get := func(path string) *response { return b.do("GET", path, tok, nil) }

	ids, st, total := groups(t, get("/FHIR/R4/RequestGroup?prescriptionId="+f.first.ShortID))
	if total != 1 || len(ids) != 1 || ids[0] != f.first.ShortID || st[0] != "0001" {
		t.Errorf("by ID: %v %v total %d", ids, st, total)
	}
	ids, _, total = groups(t, get("/FHIR/R4/RequestGroup?nhsNumber="+f.patient))
	if total != 2 || len(ids) != 2 || ids[0] != f.second.ShortID || ids[1] != f.first.ShortID {
		t.Errorf("by NHS number: %v total %d, want [%s %s] newest first", ids, total, f.second.ShortID, f.first.ShortID)
	}
	// '+' in the query string, raw or encoded.
	for _, q := range []string{f.plus.ShortID, url.QueryEscape(f.plus.ShortID)} {
		if ids, _, _ := groups(t, get("/FHIR/R4/RequestGroup?prescriptionId="+q)); len(ids) != 1 || ids[0] != f.plus.ShortID {
			t.Errorf("prescriptionId=%s found %v", q, ids)
		}
	}
	if ids, _, total := groups(t, get("/FHIR/R4/RequestGroup?prescriptionId="+fhirgen.ShortID("A83008"))); total != 0 || len(ids) != 0 {
		t.Errorf("unknown ID found %v", ids)
	}
	for _, q := range []string{"", "?prescriptionId=" + f.first.ShortID + "&nhsNumber=" + f.patient,
		"?prescriptionId=24F5DA-A83008-7EFE6Y", "?prescriptionId=nonsense", "?nhsNumber=9449305553", "?nhsNumber=12345"} {
		res := get("/FHIR/R4/RequestGroup" + q)
		if res.Status != 400 {
			t.Errorf("search %q: %d, want 400", q, res.Status)
			continue
		}
		if oo := res.outcome(t); oo.Issue[0].Diagnostics == "" {
			t.Errorf("search %q: no words", q)
		}
	}
	res := get("/FHIR/R4/RequestGroup/" + f.first.ShortID)
	ids, st, _ = groups(t, res)
	if len(ids) != 1 || ids[0] != f.first.ShortID || st[0] != "0001" {
		t.Errorf("detail: %v %v", ids, st)
	}
	for _, want := range []string{`"MedicationRequest"`, `"Patient"`, f.patient, "0007"} {
		if !bytes.Contains(res.Body, []byte(want)) {
			t.Errorf("detail lacks %s", want)
		}
	}
	if res := get("/FHIR/R4/RequestGroup/" + fhirgen.ShortID("A83008")); res.Status != 404 {
		t.Errorf("unknown detail: %d", res.Status)
	}
	if res := get("/FHIR/R4/RequestGroup/24F5DA-A83008-7EFE6Y"); res.Status != 400 {
		t.Errorf("invalid detail ID: %d", res.Status)
	}
}

// Prescribers and dispensers see their own organisation's prescriptions;
// anyone else gets 403 and learns nothing (the same answer as for an ID that
// does not exist).
func TestTrackerAccess(t *testing.T) {
	f := newTrackerFixture(t, "")
	b := f.b
	path := "/FHIR/R4/RequestGroup/" + f.first.ShortID
	for _, tc := range []struct {
		role   auth.Role
		ods    string
		status int
	}{
		{auth.RoleTracker, "X26", 200}, {auth.RoleAdmin, "X26", 200},
		{auth.RolePrescriber, "A83008", 200}, {auth.RoleDispenser, "FA565", 200},
		{auth.RolePrescriber, "B81001", 403}, {auth.RoleDispenser, "FCG71", 403},
	} {
		tok := b.token(tc.role, tc.ods)
		if res := b.do("GET", path, tok, nil); res.Status != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.role, tc.ods, res.Status, tc.status)
		}
		_, _, total := groups(t, b.do("GET", "/FHIR/R4/RequestGroup?nhsNumber="+f.patient, tok, nil))
		if want := map[bool]int{true: 2, false: 0}[tc.status == 200]; total != want {
			t.Errorf("%s %s search: total %d, want %d", tc.role, tc.ods, total, want)
		}
	}
	outsider := b.token(auth.RoleDispenser, "FCG71")
	a := b.do("GET", path, outsider, nil)
	nx := b.do("GET", "/FHIR/R4/RequestGroup/"+fhirgen.ShortID("A83008"), outsider, nil)
	if a.Status != 403 || nx.Status != 403 {
		t.Errorf("outsider: existing %d, missing %d; both must be 403", a.Status, nx.Status)
	}
	if res := b.do("GET", path, "", nil); res.Status != 401 {
		t.Errorf("no token: %d", res.Status)
	}
}

// Every look-up is audited; an admin lists them by user and by NHS number.
func TestTrackerAudit(t *testing.T) {
	f := newTrackerFixture(t, "")
	b := f.b
	sd := b.token(auth.RoleTracker, "X26")
	b.do("GET", "/FHIR/R4/RequestGroup?nhsNumber="+f.patient, sd, nil)
	b.do("GET", "/FHIR/R4/RequestGroup/"+f.first.ShortID, sd, nil)
	b.do("GET", "/FHIR/R4/RequestGroup/"+f.other.ShortID, b.token(auth.RoleDispenser, "FCG71"), nil)

	admin := b.token(auth.RoleAdmin, "X26")
	var list struct {
		Entries []service.AuditEntry `json:"entries"`
	}
	res := b.do("GET", "/api/v1/audit?nhsNumber="+f.patient, admin, nil)
	if res.Status != 200 || json.Unmarshal(res.Body, &list) != nil {
		t.Fatalf("audit: %d %s", res.Status, res.Body)
	}
	if len(list.Entries) != 2 {
		t.Fatalf("audit for the patient: %d entries, want 2: %s", len(list.Entries), res.Body)
	}
	e := list.Entries[0] // newest first: the detail
	if e.Action != "detail" || e.User != "tracker-user-X26" || e.Org != "X26" || e.Role != "tracker" || e.Results != 1 || e.PrescriptionID != f.first.ShortID || e.Time.IsZero() {
		t.Errorf("newest entry %+v", e)
	}
	if s := list.Entries[1]; s.Action != "search" || s.Results != 2 {
		t.Errorf("search entry %+v", s)
	}
	res = b.do("GET", "/api/v1/audit?user=dispenser-user-FCG71", admin, nil)
	json.Unmarshal(res.Body, &list)
	if len(list.Entries) != 1 || list.Entries[0].Org != "FCG71" {
		t.Errorf("audit by user: %s", res.Body)
	}
	if res := b.do("GET", "/api/v1/audit", sd, nil); res.Status != 403 {
		t.Errorf("tracker role reading the audit: %d", res.Status)
	}
}

// The index deleted and rebuilt from the event log alone gives identical
// answers, whether rebuilt by epsctl or by the broker at start.
func TestTrackerRebuildGivesIdenticalAnswers(t *testing.T) {
	dir := t.TempDir()
	f := newTrackerFixture(t, dir)
	tok := f.b.token(auth.RoleTracker, "X26")
	paths := []string{"/FHIR/R4/RequestGroup?nhsNumber=" + f.patient, "/FHIR/R4/RequestGroup?prescriptionId=" + f.other.ShortID,
		"/FHIR/R4/RequestGroup/" + f.first.ShortID, "/FHIR/R4/RequestGroup/" + f.plus.ShortID}
	answers := func(b *testBroker) [][]byte {
		var out [][]byte
		for _, p := range paths {
			res := b.do("GET", p, tok, nil)
			if res.Status != 200 {
				t.Fatalf("%s: %d", p, res.Status)
			}
			out = append(out, res.Body)
		}
		return out
	}
	before := answers(f.b)
	_, epsctl := binaries(t)
	if out, err := exec.Command(epsctl, "tracker", "rebuild", "--data-dir", dir, "--quiet").CombinedOutput(); err == nil || !strings.Contains(string(out), "stop the broker") {
		t.Errorf("a rebuild while the broker runs on the data dir must be refused: %v %s", err, out)
	}
	f.b.stop()
	snap := broker.SnapshotPath(dir)
	if _, err := os.Stat(snap); err != nil {
		t.Fatalf("no snapshot saved at stop: %v", err)
	}

	// Rebuilt by epsctl.
	os.Remove(snap)
	out, err := exec.Command(epsctl, "tracker", "rebuild", "--data-dir", dir, "--quiet").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "4 prescriptions") {
		t.Fatalf("epsctl tracker rebuild: %v %s", err, out)
	}
	b2 := startBroker(t, dir)
	after := answers(b2)
	b2.stop()
	// Rebuilt by the broker at start, from no snapshot.
	os.Remove(snap)
	b3 := startBroker(t, dir)
	again := answers(b3)
	for i := range paths {
		if !bytes.Equal(before[i], after[i]) || !bytes.Equal(before[i], again[i]) {
			t.Errorf("%s differs after the rebuild:\nbefore %s\nafter  %s\nagain  %s", paths[i], before[i], after[i], again[i])
		}
	}
}

// The page's session: a token exchanged for an HttpOnly, SameSite=Strict
// cookie that authenticates reads, and ends on sign-out.
func TestTrackerSession(t *testing.T) {
	f := newTrackerFixture(t, "")
	b := f.b
	signIn := []byte(`{"token":"` + b.token(auth.RoleTracker, "X26") + `"}`)
	// Login CSRF: without the page's header, or from another site, refused.
	if res := b.do("POST", "/tracker/session", "", signIn, "Content-Type", "application/json"); res.Status != 403 {
		t.Errorf("sign-in without the page's header: %d", res.Status)
	}
	if res := b.do("POST", "/tracker/session", "", signIn, page, "1", "Content-Type", "application/json", "Sec-Fetch-Site", "cross-site"); res.Status != 403 {
		t.Errorf("cross-site sign-in: %d", res.Status)
	}
	if res := b.do("POST", "/tracker/session", "", signIn, page, "1", "Content-Type", "text/plain"); res.Status != 415 {
		t.Errorf("text/plain sign-in: %d", res.Status)
	}
	res := b.do("POST", "/tracker/session", "", signIn, page, "1", "Content-Type", "application/json")
	if res.Status != 204 {
		t.Fatalf("sign in: %d %s", res.Status, res.Body)
	}
	c := (&http.Response{Header: res.Header}).Cookies()
	if len(c) != 1 || c[0].Name != "eps_session" || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", c)
	}
	cookie := "eps_session=" + c[0].Value
	if res := b.do("GET", "/tracker/session", "", nil, "Cookie", cookie, page, "1"); res.Status != 200 || !bytes.Contains(res.Body, []byte(`"role":"tracker"`)) {
		t.Errorf("session info: %d %s", res.Status, res.Body)
	}
	if ids, _, _ := groups(t, b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+f.first.ShortID, "", nil, "Cookie", cookie, page, "1")); len(ids) != 1 {
		t.Errorf("search with the cookie found %v", ids)
	}
	if res := b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+f.first.ShortID, "", nil, "Cookie", cookie); res.Status != 403 {
		t.Errorf("the cookie without the page's header (a cross-site link): %d, want 403", res.Status)
	}
	if res := b.post("", f.first.Body, "Cookie", cookie, page, "1"); res.Status != 401 {
		t.Errorf("the cookie must not authorise writes: %d", res.Status)
	}
	if res := b.do("DELETE", "/tracker/session", "", nil, "Cookie", cookie, page, "1"); res.Status != 204 {
		t.Errorf("sign out: %d", res.Status)
	}
	if res := b.do("GET", "/tracker/session", "", nil, "Cookie", cookie, page, "1"); res.Status != 401 {
		t.Errorf("after sign-out: %d", res.Status)
	}
	if res := b.do("POST", "/tracker/session", "", []byte(`{"token":"nonsense"}`), page, "1", "Content-Type", "application/json"); res.Status != 401 {
		t.Errorf("bad token sign-in: %d", res.Status)
	}
	page := b.do("GET", "/tracker", "", nil)
	if page.Status != 200 || !bytes.Contains(page.Body, []byte("<html")) || page.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("page: %d", page.Status)
	}
}

// A session ends after 15 minutes without use; use keeps it alive.
func TestTrackerSessionIdleTimeout(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	b := startBrokerClock(t, "", clock)
	res := b.do("POST", "/tracker/session", "", []byte(`{"token":"`+b.token(auth.RoleTracker, "X26")+`"}`), page, "1", "Content-Type", "application/json")
	c := (&http.Response{Header: res.Header}).Cookies()
	if res.Status != 204 || len(c) != 1 {
		t.Fatalf("sign in: %d", res.Status)
	}
	cookie := "eps_session=" + c[0].Value
	// Used every 14 minutes, it lives on past 15 minutes from sign-in.
	for _, step := range []time.Duration{14 * time.Minute, 14 * time.Minute} {
		advance(step)
		if res := b.do("GET", "/tracker/session", "", nil, "Cookie", cookie, page, "1"); res.Status != 200 {
			t.Fatalf("used after %s idle: %d", step, res.Status)
		}
	}
	advance(16 * time.Minute)
	if res := b.do("GET", "/tracker/session", "", nil, "Cookie", cookie, page, "1"); res.Status != 401 {
		t.Errorf("after 16 idle minutes: %d, want 401", res.Status)
	}
}
