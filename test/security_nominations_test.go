package test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// Issue 11 (low): every read of nominations is audited; a dispenser
// nominating itself is recorded as a self-nomination and reported.

// auditOf lists the audit trail as an admin reads it, with a query
// (nhsNumber=, user=).
func (b *testBroker) auditOf(t *testing.T, query string) []service.AuditEntry {
	t.Helper()
	res := b.do("GET", "/api/v1/audit?limit=1000&"+query, b.token(auth.RoleAdmin, "X26"), nil)
	var list struct {
		Entries []service.AuditEntry `json:"entries"`
	}
	if res.Status != 200 || json.Unmarshal(res.Body, &list) != nil {
		t.Fatalf("audit %s: %d %s", query, res.Status, res.Body)
	}
	return list.Entries
}

func (b *testBroker) putNomination(t *testing.T, role auth.Role, ods, nhs, typ, to string) *response {
	t.Helper()
	return b.do("PUT", "/api/v1/nominations/"+nhs+"/"+typ, b.token(role, ods), []byte(`{"ods":"`+to+`"}`), "Content-Type", "application/json")
}

// A read of nominations by a role that cannot read the audit trail is
// audited before it is answered, and an admin finds it in the trail: by the
// patient, with who, which organisation and role, what and how much.
func TestSecurityNominationReadsAudited(t *testing.T) {
	b := startBroker(t, "")
	nhs, other := fhirgen.NHSNumber(), fhirgen.NHSNumber()
	if res := b.putNomination(t, auth.RoleAdmin, "X26", nhs, "P1", "FA565"); res.Status != 200 {
		t.Fatalf("set: %d %s", res.Status, res.Body)
	}
	if res := b.putNomination(t, auth.RoleAdmin, "X26", other, "P1", "FA565"); res.Status != 200 {
		t.Fatalf("set: %d %s", res.Status, res.Body)
	}
	today := time.Now().UTC().Format("2006-01-02")
	report := "/api/v1/nominations/reports/dispensers/FA565?from=" + today + "&to=" + today
	for _, tc := range []struct {
		name      string
		role      auth.Role
		ods       string
		method    string
		path      string
		body      string
		action    string
		patients  []string // audited by NHS number, each with results
		results   int
		requestOf int // results of the request's own entry (no NHS number); -1: none
	}{
		{"a service desk user reads a patient's nominations", auth.RoleTracker, "Y12345", "GET", "/api/v1/nominations/" + nhs, "", "nominations", []string{nhs}, 1, -1},
		{"a dispenser reads a patient's nominations", auth.RoleDispenser, "FCG71", "GET", "/api/v1/nominations/" + nhs, "", "nominations", []string{nhs}, 1, -1},
		{"a prescriber's change answers the patient's nominations", auth.RolePrescriber, "A83008", "PUT", "/api/v1/nominations/" + nhs + "/P3", `{"ods":"A83008"}`, "nomination-change", []string{nhs}, 2, -1},
		{"a dispenser's removal answers the patient's nominations", auth.RoleDispenser, "FCG71", "DELETE", "/api/v1/nominations/" + nhs + "/P3", "", "nomination-change", []string{nhs}, 1, -1},
		{"an admin reads nominations and their history", auth.RoleAdmin, "X26", "GET", "/api/v1/nominations/" + other, "", "nominations", []string{other}, 2, -1},
		{"a dispenser report with its detail shows NHS numbers", auth.RoleAdmin, "X26", "GET", report + "&detail=true", "", "nomination-report", []string{nhs, other}, 1, 2},
		{"a dispenser report in CSV shows NHS numbers", auth.RoleAdmin, "X26", "GET", report + "&format=csv", "", "nomination-report", []string{nhs, other}, 1, 2},
		{"a dispenser report without detail shows none", auth.RoleAdmin, "X26", "GET", report, "", "nomination-report", nil, 0, 0},
		{"the summary", auth.RoleAdmin, "X26", "GET", "/api/v1/nominations/reports/summary?from=" + today + "&to=" + today, "", "nomination-summary", nil, 0, 2}, // FA565 gained, A83008 lost P3
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := string(tc.role) + "-user-" + tc.ods
			before := map[string]int{}
			for _, n := range append([]string{""}, tc.patients...) {
				before[n] = len(b.auditOf(t, "user="+user+"&nhsNumber="+n))
			}
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			res := b.do(tc.method, tc.path, b.token(tc.role, tc.ods), body, "Content-Type", "application/json")
			if res.Status != 200 {
				t.Fatalf("%s %s: %d %s", tc.method, tc.path, res.Status, res.Body)
			}
			// A report's entries say which report was read; a patient's
			// own reads need not (their path holds the NHS number).
			wantQuery := ""
			if strings.HasPrefix(tc.path, "/api/v1/nominations/reports/") {
				wantQuery = tc.path
			}
			for _, n := range tc.patients {
				got := b.auditOf(t, "user="+user+"&nhsNumber="+n)
				if len(got) != before[n]+1 {
					t.Fatalf("audit of %s by %s: %d entries, want %d", n, user, len(got), before[n]+1)
				}
				e := got[0]
				if e.Action != tc.action || e.NHSNumber != n || e.Org != tc.ods || e.Role != string(tc.role) || e.Outcome != 200 || e.Results != tc.results {
					t.Errorf("audit entry %+v, want action %s, patient %s, org %s, role %s, outcome 200, results %d", e, tc.action, n, tc.ods, tc.role, tc.results)
				}
				if e.Query != wantQuery {
					t.Errorf("audit entry of %s: query %q, want %q", n, e.Query, wantQuery)
				}
			}
			if tc.requestOf >= 0 {
				var own []service.AuditEntry
				for _, e := range b.auditOf(t, "user="+user) {
					if e.NHSNumber == "" {
						own = append(own, e)
					}
				}
				if len(own) == 0 || own[0].Action != tc.action || own[0].Results != tc.requestOf || own[0].Outcome != 200 {
					t.Errorf("the request's own audit entry: %+v, want %s with results %d", own, tc.action, tc.requestOf)
				} else if own[0].Query != wantQuery {
					t.Errorf("the request's own audit entry: query %q, want %q", own[0].Query, wantQuery)
				}
			}
			if tc.role != auth.RoleAdmin {
				if res := b.do("GET", "/api/v1/audit?nhsNumber="+nhs, b.token(tc.role, tc.ods), nil); res.Status != 403 {
					t.Errorf("%s reading the audit trail: %d, want 403", tc.role, res.Status)
				}
			}
		})
	}
}

// A read that cannot be audited is not answered (503, no nominations in
// the answer), as a tracker look-up is not.
func TestSecurityNominationReadUnaudited(t *testing.T) {
	b := startBroker(t, "")
	nhs := fhirgen.NHSNumber()
	if res := b.putNomination(t, auth.RoleAdmin, "X26", nhs, "P1", "FA565"); res.Status != 200 {
		t.Fatalf("set: %d %s", res.Status, res.Body)
	}
	// The audit stream no longer takes the audit subjects: every audit
	// write fails.
	ctx := context.Background()
	js := b.App.Store.JetStream()
	st, err := js.Stream(ctx, broker.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Subjects = []string{"eps.audit-off.>"}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Format("2006-01-02")
	for _, tc := range []struct {
		name   string
		role   auth.Role
		ods    string
		method string
		path   string
		body   string
	}{
		{"the tracker search (the reference)", auth.RoleTracker, "Y12345", "GET", "/FHIR/R4/RequestGroup?nhsNumber=" + nhs, ""},
		{"a patient's nominations", auth.RoleTracker, "Y12345", "GET", "/api/v1/nominations/" + nhs, ""},
		{"a change's answer", auth.RoleDispenser, "FCG71", "PUT", "/api/v1/nominations/" + nhs + "/P2", `{"ods":"FA565"}`},
		{"a removal's answer", auth.RoleAdmin, "X26", "DELETE", "/api/v1/nominations/" + nhs + "/P2", ""},
		{"a dispenser report's detail", auth.RoleAdmin, "X26", "GET", "/api/v1/nominations/reports/dispensers/FA565?detail=true&from=" + today + "&to=" + today, ""},
		{"a dispenser report's CSV", auth.RoleAdmin, "X26", "GET", "/api/v1/nominations/reports/dispensers/FA565?format=csv&from=" + today + "&to=" + today, ""},
		{"the summary", auth.RoleAdmin, "X26", "GET", "/api/v1/nominations/reports/summary?from=" + today + "&to=" + today, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			res := b.do(tc.method, tc.path, b.token(tc.role, tc.ods), body, "Content-Type", "application/json")
			if res.Status != http.StatusServiceUnavailable {
				t.Fatalf("%s %s: %d %s, want 503", tc.method, tc.path, res.Status, res.Body)
			}
			if bytes.Contains(res.Body, []byte(nhs)) || bytes.Contains(res.Body, []byte("FA565")) {
				t.Errorf("the refused answer shows the patient's data: %s", res.Body)
			}
			oo := res.outcome(t)
			if !oo.hasCode("SERVICE_UNAVAILABLE") {
				t.Errorf("codes %v, want SERVICE_UNAVAILABLE", oo.codes())
			}
			// A change is made even when its answer cannot be sent: the
			// caller is told so, and a retry reads it.
			if changes := tc.method != "GET"; changes != strings.Contains(oo.Issue[0].Diagnostics, "the change was made") {
				t.Errorf("diagnostics %q", oo.Issue[0].Diagnostics)
			}
			if tc.method == "PUT" {
				cur, _, err := b.App.Store.Nominations(ctx, nhs)
				if err != nil || cur.Of("P2") != "FA565" {
					t.Errorf("the change was not made: %+v %v", cur, err)
				}
			}
		})
	}
}

type selfReport struct {
	ODS           string `json:"ods"`
	Gained        int    `json:"gained"`
	SelfNominated int    `json:"selfNominated"`
	Detail        []struct {
		NHSNumber      string `json:"nhsNumber"`
		To             string `json:"to"`
		Org            string `json:"org"`
		SelfNomination bool   `json:"selfNomination"`
	} `json:"detail"`
}

type selfSummaryLine struct {
	ODS           string `json:"ods"`
	Gained        int    `json:"gained"`
	SelfNominated int    `json:"selfNominated"`
}

// A dispenser changing a patient's nomination to itself is recorded as a
// self-nomination in the change's "by", and the reports count and list
// self-nominations per dispensing organisation.
func TestSecurityNominationSelfNomination(t *testing.T) {
	b := startBroker(t, "")
	p := map[string]string{}
	for _, k := range []string{"self", "forOther", "byGP", "moved", "admin"} {
		p[k] = fhirgen.NHSNumber()
	}
	for _, c := range []struct {
		role      auth.Role
		by, nhs   string
		typ, to   string
		selfAfter bool
	}{
		{auth.RoleDispenser, "FCG71", p["self"], "P1", "FCG71", true},      // FCG71 nominates itself
		{auth.RoleDispenser, "FCG71", p["forOther"], "P1", "FA565", false}, // FCG71 nominates another pharmacy
		{auth.RolePrescriber, "FCG71", p["byGP"], "P1", "FCG71", false},    // a prescriber whose ODS is FCG71
		{auth.RoleAdmin, "X26", p["moved"], "P1", "FA565", false},
		{auth.RoleDispenser, "FH542", p["moved"], "P1", "FH542", true}, // FH542 takes FA565's patient
		{auth.RoleAdmin, "FCG71", p["admin"], "P1", "FCG71", false},
	} {
		if res := b.putNomination(t, c.role, c.by, c.nhs, c.typ, c.to); res.Status != 200 {
			t.Fatalf("%s %s nominates %s: %d %s", c.role, c.by, c.to, res.Status, res.Body)
		}
		var a struct {
			History []struct {
				To string
				By struct {
					Org            string
					SelfNomination bool `json:"selfNomination"`
				}
			} `json:"history"`
			Nominations map[string]struct {
				By struct {
					SelfNomination bool `json:"selfNomination"`
				}
			} `json:"nominations"`
		}
		res := b.do("GET", "/api/v1/nominations/"+c.nhs, b.token(auth.RoleAdmin, "X26"), nil)
		if res.Status != 200 || json.Unmarshal(res.Body, &a) != nil || len(a.History) == 0 {
			t.Fatalf("nominations: %d %s", res.Status, res.Body)
		}
		last := a.History[len(a.History)-1]
		if last.To != c.to || last.By.SelfNomination != c.selfAfter || a.Nominations[c.typ].By.SelfNomination != c.selfAfter {
			t.Errorf("%s %s nominating %s: recorded %s", c.role, c.by, c.to, res.Body)
		}
	}
	today := time.Now().UTC().Format("2006-01-02")
	period := "from=" + today + "&to=" + today
	admin := b.token(auth.RoleAdmin, "X26")

	for _, tc := range []struct {
		ods           string
		gained, self  int
		selfPatients  []string
		otherPatients []string
	}{
		{"FCG71", 3, 1, []string{p["self"]}, []string{p["byGP"], p["admin"]}},
		{"FH542", 1, 1, []string{p["moved"]}, nil},
		{"FA565", 2, 0, nil, []string{p["forOther"], p["moved"]}},
	} {
		res := b.do("GET", "/api/v1/nominations/reports/dispensers/"+tc.ods+"?detail=true&"+period, admin, nil)
		var rep selfReport
		if res.Status != 200 || json.Unmarshal(res.Body, &rep) != nil {
			t.Fatalf("report %s: %d %s", tc.ods, res.Status, res.Body)
		}
		if rep.Gained != tc.gained || rep.SelfNominated != tc.self {
			t.Errorf("report %s: gained %d self-nominated %d, want %d %d", tc.ods, rep.Gained, rep.SelfNominated, tc.gained, tc.self)
		}
		flagged := map[string]bool{}
		for _, d := range rep.Detail {
			if d.To == tc.ods {
				flagged[d.NHSNumber] = d.SelfNomination
			}
		}
		for _, n := range tc.selfPatients {
			if f, ok := flagged[n]; !ok || !f {
				t.Errorf("report %s: patient %s not shown as a self-nomination: %s", tc.ods, n, res.Body)
			}
		}
		for _, n := range tc.otherPatients {
			if flagged[n] {
				t.Errorf("report %s: patient %s shown as a self-nomination: %s", tc.ods, n, res.Body)
			}
		}
	}

	// CSV: the selfNomination column.
	res := b.do("GET", "/api/v1/nominations/reports/dispensers/FCG71?format=csv&"+period, admin, nil)
	rows, err := csv.NewReader(bytes.NewReader(res.Body)).ReadAll()
	if res.Status != 200 || err != nil || len(rows) != 4 || rows[0][len(rows[0])-1] != "selfNomination" {
		t.Fatalf("CSV: %d %v %s", res.Status, err, res.Body)
	}
	for _, r := range rows[1:] {
		if want := r[2] == p["self"]; (r[len(r)-1] == "true") != want {
			t.Errorf("CSV row %v: selfNomination %s", r, r[len(r)-1])
		}
	}

	// The summary: every dispenser's count; with selfNominated=true only
	// those that nominated themselves.
	summary := func(q string) []selfSummaryLine {
		res := b.do("GET", "/api/v1/nominations/reports/summary?"+period+q, admin, nil)
		var lines []selfSummaryLine
		if res.Status != 200 || json.Unmarshal(res.Body, &lines) != nil {
			t.Fatalf("summary %s: %d %s", q, res.Status, res.Body)
		}
		return lines
	}
	counts := map[string]int{}
	for _, l := range summary("") {
		counts[l.ODS] = l.SelfNominated
	}
	if counts["FCG71"] != 1 || counts["FH542"] != 1 || counts["FA565"] != 0 || len(counts) != 3 {
		t.Errorf("summary self-nominations %v", counts)
	}
	var only []string
	for _, l := range summary("&selfNominated=true") {
		only = append(only, l.ODS)
	}
	if strings.Join(only, ",") != "FCG71,FH542" && strings.Join(only, ",") != "FH542,FCG71" || len(only) != 2 {
		t.Errorf("selfNominated=true lists %v, want FCG71 and FH542", only)
	}
	res = b.do("GET", "/api/v1/nominations/reports/summary?"+period+"&format=csv&selfNominated=true", admin, nil)
	if rows, err := csv.NewReader(bytes.NewReader(res.Body)).ReadAll(); res.Status != 200 || err != nil || len(rows) != 3 ||
		rows[0][len(rows[0])-1] != "selfNominated" || rows[1][len(rows[1])-1] != "1" {
		t.Errorf("summary CSV: %d %v %s", res.Status, err, res.Body)
	}
	if res := b.do("GET", "/api/v1/nominations/reports/summary?"+period+"&selfNominated=yes", admin, nil); res.Status != 400 {
		t.Errorf("selfNominated=yes: %d, want 400", res.Status)
	}
	// Whoever may not read reports today still may not.
	if res := b.do("GET", "/api/v1/nominations/reports/summary?"+period+"&selfNominated=true", b.token(auth.RoleDispenser, "FCG71"), nil); res.Status != 403 {
		t.Errorf("a dispenser reading the self-nominations: %d, want 403", res.Status)
	}

	// The metric counts the two self-nominations.
	res = b.do("GET", "/metrics", "", nil)
	if !bytes.Contains(res.Body, []byte(`eps_nomination_self_nominations_total{type="P1"} 2`)) {
		t.Errorf("metrics: no eps_nomination_self_nominations_total{type=\"P1\"} 2")
	}
}

// The cost of auditing a large report's detail (one fsynced audit entry per
// patient shown), measured on demand:
// EPS_NOMREPORT_AUDIT=20000 go test ./test/ -run TestSecurityNominationReportAuditCost -v -timeout 20m
func TestSecurityNominationReportAuditCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EPS_NOMREPORT_AUDIT"))
	if n <= 0 {
		t.Skip("set EPS_NOMREPORT_AUDIT to the number of patients")
	}
	b := startBroker(t, "")
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&buf, `{"nhsNumber":"%s","type":"P1","ods":"FA565"}`+"\n", fhirgen.NHSNumber())
	}
	admin := b.token(auth.RoleAdmin, "X26")
	if res := b.do("POST", "/api/v1/nominations/import", admin, buf.Bytes(), "Content-Type", "application/x-ndjson"); res.Status != 200 {
		t.Fatalf("import: %d %s", res.Status, res.Body)
	}
	today := time.Now().UTC().Format("2006-01-02")
	for _, q := range []string{"", "&detail=true", "&format=csv"} {
		start := time.Now()
		res := b.do("GET", "/api/v1/nominations/reports/dispensers/FA565?from="+today+"&to="+today+q, admin, nil)
		if res.Status != 200 {
			t.Fatalf("report %s: %d %.300s", q, res.Status, res.Body)
		}
		t.Logf("report%s: %d bytes in %v", q, len(res.Body), time.Since(start).Round(time.Millisecond))
	}
}
