package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The tracker of an electronic repeat dispensing prescription, end to end:
// a RequestGroup per issue in the search, the detail of one issue with
// ?issueNumber=n, and the answers to issue numbers that are not valid or
// that the prescription does not have.

// trackerIssue is what the tests read of one RequestGroup of a tracker
// answer.
type trackerIssue struct {
	FullURL       string
	ID            string
	Status        string
	Category      string
	Issued        int
	Allowed       int
	AvailableFrom string
	History       []string // titles of the detail's history
}

// trackerIssues decodes the RequestGroups (search mode match) of a tracker
// searchset.
func trackerIssues(t *testing.T, res *response) (rows []trackerIssue, total int) {
	t.Helper()
	if res.Status != 200 {
		t.Fatalf("status %d: %s", res.Status, res.Body)
	}
	type ext struct {
		URL           string `json:"url"`
		ValueCoding   struct{ Code string }
		ValueInteger  int    `json:"valueInteger"`
		ValueString   string `json:"valueString"`
		ValueDateTime string `json:"valueDateTime"`
		Extension     []ext  `json:"extension"`
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Total        int    `json:"total"`
		Entry        []struct {
			FullURL  string                `json:"fullUrl"`
			Search   struct{ Mode string } `json:"search"`
			Resource struct {
				ResourceType string `json:"resourceType"`
				Identifier   []struct{ Value string }
				Extension    []ext `json:"extension"`
				Action       []struct {
					Action []struct {
						Title string `json:"title"`
					} `json:"action"`
				} `json:"action"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(res.Body, &b); err != nil || b.ResourceType != "Bundle" {
		t.Fatalf("not a Bundle (%v): %s", err, res.Body)
	}
	for _, e := range b.Entry {
		r := e.Resource
		if r.ResourceType != "RequestGroup" || e.Search.Mode != "match" {
			continue
		}
		row := trackerIssue{FullURL: e.FullURL, ID: r.Identifier[0].Value}
		for _, x := range r.Extension {
			switch x.URL {
			case "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory":
				row.Status = x.Extension[0].ValueCoding.Code
			case "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation":
				for _, part := range x.Extension {
					switch part.URL {
					case "numberOfRepeatsIssued":
						row.Issued = part.ValueInteger
					case "numberOfRepeatsAllowed":
						row.Allowed = part.ValueInteger
					}
				}
			case "https://github.com/nhs-eps/epsbroker/StructureDefinition/search-category":
				row.Category = x.ValueString
			case "https://github.com/nhs-eps/epsbroker/StructureDefinition/issue-available-from":
				row.AvailableFrom = x.ValueDateTime
			}
		}
		if len(r.Action) > 1 {
			for _, h := range r.Action[1].Action {
				row.History = append(row.History, h.Title)
			}
		}
		rows = append(rows, row)
	}
	return rows, b.Total
}

// expectIssues checks the RequestGroups of one eRD prescription of
// len(statuses) issues: the ID, issue n of N, the status and its category,
// and a fullUrl of its own.
func expectIssues(t *testing.T, what string, rows []trackerIssue, id string, statuses ...string) {
	t.Helper()
	if len(rows) != len(statuses) {
		t.Fatalf("%s: %d RequestGroups, want %d: %+v", what, len(rows), len(statuses), rows)
	}
	categories := map[string]string{"0000": "future", "0001": "current", "0002": "current", "0006": "past", "9000": "future"}
	seen := map[string]bool{}
	for i, r := range rows {
		if r.ID != id || r.Issued != i+1 || r.Allowed != len(statuses) || r.Status != statuses[i] || r.Category != categories[statuses[i]] {
			t.Errorf("%s: issue %d is %+v; want %s issue %d of %d, status %s (%s)", what, i+1, r, id, i+1, len(statuses), statuses[i], categories[statuses[i]])
		}
		if seen[r.FullURL] {
			t.Errorf("%s: fullUrl %s twice", what, r.FullURL)
		}
		seen[r.FullURL] = true
	}
}

func TestTrackerRepeatDispensing(t *testing.T) {
	b, clock := erdBroker(t)
	dispenser := newODS("TK")
	c := newCourse(t, b, clock, 6, 28, dispenser)
	c.post()
	id := c.g.ShortID
	tok := b.token(auth.RoleTracker, "X26")
	get := func(path string) *response { t.Helper(); return b.do("GET", path, tok, nil) }
	detail := func(query string) *response {
		t.Helper()
		return get("/FHIR/R4/RequestGroup/" + id + query)
	}
	one := func(what string, res *response) trackerIssue {
		t.Helper()
		rows, total := trackerIssues(t, res)
		if total != 1 || len(rows) != 1 {
			t.Fatalf("%s: total %d, %d RequestGroups: %s", what, total, len(rows), res.Body)
		}
		return rows[0]
	}

	// The search: six RequestGroups, issue 1 To Be Dispensed, 2..6 future.
	rows, total := trackerIssues(t, get("/FHIR/R4/RequestGroup?prescriptionId="+id))
	if total != 6 {
		t.Errorf("search by ID: total %d, want 6", total)
	}
	expectIssues(t, "search by ID", rows, id, "0001", "9000", "9000", "9000", "9000", "9000")
	byNHS, total := trackerIssues(t, get("/FHIR/R4/RequestGroup?nhsNumber="+c.g.NHSNumber))
	if total != 6 || len(byNHS) != 6 || byNHS[3].FullURL != rows[3].FullURL || byNHS[3].Status != "9000" {
		t.Errorf("search by NHS number: total %d %+v", total, byNHS)
	}

	// The detail: the current issue, or the issue asked for.
	cur := detail("")
	if r := one("detail", cur); r.Status != "0001" || r.Issued != 1 || r.Allowed != 6 || r.AvailableFrom != "" || r.FullURL != rows[0].FullURL {
		t.Errorf("detail without issueNumber: %+v", r)
	}
	if res := detail("?issueNumber=1"); !bytes.Equal(res.Body, cur.Body) {
		t.Errorf("issueNumber=1 is not the current issue 1: %s", res.Body)
	}
	if res := detail("?foo=bar"); res.Status != 200 || !bytes.Equal(res.Body, cur.Body) {
		t.Errorf("an unknown parameter: %d %s", res.Status, res.Body)
	}
	two := one("issue 2", detail("?issueNumber=2"))
	wantFrom := c.availableAt(2).UTC().Format("2006-01-02T15:04:05.000Z")
	if two.Status != "9000" || two.Category != "future" || two.Issued != 2 || two.Allowed != 6 || two.AvailableFrom != wantFrom || two.FullURL != rows[1].FullURL {
		t.Errorf("issue 2: %+v; want 9000 future, 2 of 6, available from %s", two, wantFrom)
	}
	if !slices.Equal(two.History, []string{"Prescription upload successful"}) {
		t.Errorf("issue 2 history %q", two.History)
	}
	if six := one("issue 6", detail("?issueNumber=6")); six.Status != "9000" || six.Issued != 6 {
		t.Errorf("issue 6: %+v", six)
	}

	// Not a positive whole number: 400 INVALID_VALUE at issueNumber.
	for _, q := range []string{"0", "x", "-1", "", "1.5", "+2", "2e0", "2&issueNumber=3"} {
		res := detail("?issueNumber=" + q)
		if res.Status != 400 {
			t.Errorf("issueNumber=%s: %d, want 400: %s", q, res.Status, res.Body)
			continue
		}
		oo := res.outcome(t)
		if !oo.hasCode("INVALID_VALUE") || !slices.Contains(oo.Issue[0].Expression, "issueNumber") || !strings.Contains(oo.Issue[0].Diagnostics, "issueNumber") {
			t.Errorf("issueNumber=%s: %s", q, res.Body)
		}
	}
	// An issue it does not have: 404, saying how many it has.
	for _, q := range []string{"7", "99", "99999999999999999999"} {
		res := detail("?issueNumber=" + q)
		if res.Status != 404 {
			t.Errorf("issueNumber=%s: %d, want 404: %s", q, res.Status, res.Body)
			continue
		}
		if oo := res.outcome(t); !oo.hasCode("RESOURCE_NOT_FOUND") || !strings.Contains(oo.Issue[0].Diagnostics, "has 6 issues") {
			t.Errorf("issueNumber=%s: %s", q, res.Body)
		}
	}
	// Someone who may not see it learns nothing from the issue number.
	outsider := b.token(auth.RolePrescriber, "B81001")
	for _, q := range []string{"2", "7"} {
		if res := b.do("GET", "/FHIR/R4/RequestGroup/"+id+"?issueNumber="+q, outsider, nil); res.Status != 403 {
			t.Errorf("outsider, issueNumber=%s: %d, want 403", q, res.Status)
		}
	}

	// The look-ups of an issue are audited with the issue.
	var audit struct {
		Entries []service.AuditEntry `json:"entries"`
	}
	res := b.do("GET", "/api/v1/audit?nhsNumber="+c.g.NHSNumber+"&limit=100", b.token(auth.RoleAdmin, "X26"), nil)
	if res.Status != 200 || json.Unmarshal(res.Body, &audit) != nil {
		t.Fatalf("audit: %d %s", res.Status, res.Body)
	}
	found := map[string]int{}
	for _, e := range audit.Entries {
		if e.PrescriptionID == id && e.User == "tracker-user-X26" {
			action := e.Action
			if e.Issue != 0 {
				action = fmt.Sprintf("%s issue %d", e.Action, e.Issue)
			}
			found[action] = e.Outcome
		}
	}
	for action, outcome := range map[string]int{"detail": 200, "detail issue 2": 200, "detail issue 7": 404} {
		if got, ok := found[action]; !ok || got != outcome {
			t.Errorf("audit: no %q look-up answered %d: %v", action, outcome, found)
		}
	}

	// Issue 1 released and dispensed; at issue 2's date it becomes available.
	if ids, issues := c.releaseNominated(dispenser); !slices.Equal(ids, []string{id}) || !slices.Equal(issues, []int{1}) {
		t.Fatalf("nominated release: %v issues %v", ids, issues)
	}
	if res, _ := c.dispense(dispenser, 1, "0001", "0006"); res.Status != 200 {
		t.Fatalf("dispense issue 1: %d %s", res.Status, res.Body)
	}
	c.tick(c.availableAt(2))
	b.settle()
	rows, _ = trackerIssues(t, get("/FHIR/R4/RequestGroup?prescriptionId="+id))
	expectIssues(t, "after issue 1", rows, id, "0006", "0001", "9000", "9000", "9000", "9000")
	now := one("current issue", detail(""))
	if now.Status != "0001" || now.Issued != 2 || now.FullURL != rows[1].FullURL ||
		!slices.Equal(now.History, []string{"Prescription upload successful", "Awaiting release ready", "Available for download"}) {
		t.Errorf("the current issue is now 2: %+v", now)
	}
	first := one("issue 1", detail("?issueNumber=1"))
	if first.Status != "0006" || first.Issued != 1 ||
		!slices.Equal(first.History, []string{"Prescription upload successful", "Nominated Release Request successful", "Dispense notification successful"}) {
		t.Errorf("issue 1 after dispensing: %+v", first)
	}
}

// A prescription that is not repeat dispensing has issue 1 only.
func TestTrackerIssueNumberAcute(t *testing.T) {
	b := startBroker(t, "")
	g := postOrders(t, b, 1, fhirgen.Options{})[0]
	tok := b.token(auth.RoleTracker, "X26")
	path := "/FHIR/R4/RequestGroup/" + g.ShortID
	plain := b.do("GET", path, tok, nil)
	if res := b.do("GET", path+"?issueNumber=1", tok, nil); res.Status != 200 || !bytes.Equal(res.Body, plain.Body) {
		t.Errorf("issueNumber=1 of an acute prescription: %d %s", res.Status, res.Body)
	}
	res := b.do("GET", path+"?issueNumber=2", tok, nil)
	if res.Status != 404 || !strings.Contains(res.outcome(t).Issue[0].Diagnostics, "1 issue") {
		t.Errorf("issueNumber=2 of an acute prescription: %d %s", res.Status, res.Body)
	}
	if res := b.do("GET", path+"?issueNumber=first", tok, nil); res.Status != 400 {
		t.Errorf("issueNumber=first: %d", res.Status)
	}
	rows, total := trackerIssues(t, b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, tok, nil))
	if total != 1 || len(rows) != 1 || rows[0].Issued != 0 || rows[0].Status != "0001" {
		t.Errorf("acute search: %d %+v", total, rows)
	}
}
