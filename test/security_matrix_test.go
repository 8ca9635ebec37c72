package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The route x role x organisation matrix of README "Authentication", written
// once: every route under /FHIR/R4/, /api/ and the tracker, sent by each
// role of the prescription's own organisation and of another organisation,
// and with no token, asserting the status each gets. The request of a row
// is always the one its own organisation would send (for a dispenser: the
// dispenser the prescription is nominated to or held by; for a prescriber:
// the organisation that sent it); the columns change only the token. Every
// cell runs on a prescription of its own, so what one cell changes never
// decides another.

// who is a column of the matrix.
type who int

const (
	prescriberOwn who = iota
	prescriberOther
	dispenserOwn
	dispenserOther
	trackerOwn
	trackerOther
	adminOwn
	adminOther
	noToken
	columns
)

func (w who) String() string {
	return [...]string{"prescriber/own", "prescriber/other", "dispenser/own", "dispenser/other",
		"tracker/own", "tracker/other", "admin/own", "admin/other", "no token"}[w]
}

func (w who) role() auth.Role {
	return [...]auth.Role{auth.RolePrescriber, auth.RolePrescriber, auth.RoleDispenser, auth.RoleDispenser,
		auth.RoleTracker, auth.RoleTracker, auth.RoleAdmin, auth.RoleAdmin, ""}[w]
}

func (w who) own() bool { return w%2 == 0 }

// Expected answers beyond a plain status: a search that finds the
// prescription, and one that answers 200 without it (the caller may not
// see it).
const (
	found  = 1200
	hidden = 1201
)

// notHolder is what a dispenser that does not hold a prescription gets for
// dispensing, returning, withdrawing or claiming it: the lifecycle's 400
// INVALID_STATE_TRANSITION ("accepted only by the dispenser holding it"),
// as README "The prescription lifecycle" says of every illegal transition,
// not the 403 of README "Authentication" (the acting dispenser is the
// token's organisation, so the request is a transition that organisation
// may not make from this state).
const notHolder = 400

// stage is how far a cell's prescription has gone before the request.
type stage int

const (
	noRx       stage = iota // no prescription needed
	unposted                // generated, not sent
	ordered                 // accepted, nominated to the cell's dispenser
	releasedTo              // released to the cell's dispenser
	dispensed               // and dispensed (complete) by it
)

// cell is the world one cell of the matrix runs in.
type cell struct {
	g      *fhirgen.Generated
	sender string // the prescribing organisation
	disp   string // the dispenser it is nominated to, held by, or the request is for
	dn     string // the dispense notification, once dispensed
	nhs    string // a patient: the prescription's, or a new one
}

func (c *cell) statuses(s string) map[string]string {
	m := map[string]string{}
	for _, id := range c.g.ItemIDs {
		m[id] = s
	}
	return m
}

// request is what a row sends.
type request struct {
	method, path string
	body         []byte
	headers      []string
	tokenInBody  bool // POST /tracker/session: the token is the body
}

type matrixRow struct {
	route string
	stage stage
	req   func(c *cell) request
	want  [columns]int
}

// all is the same answer for every column; allAuth for every token and
// none for no token.
func all(s int) [columns]int { return allAuth(s, s) }

func allAuth(s, none int) [columns]int {
	var w [columns]int
	for i := range w {
		w[i] = s
	}
	w[noToken] = none
	return w
}

// roles gives each role's answer (own and other organisation alike) and
// 401 without a token.
func roles(prescriber, dispenser, tracker, admin int) [columns]int {
	return [columns]int{prescriber, prescriber, dispenser, dispenser, tracker, tracker, admin, admin, 401}
}

// byOrg gives each column's answer; no token is 401.
func byOrg(presOwn, presOther, dispOwn, dispOther, tracker, admin int) [columns]int {
	return [columns]int{presOwn, presOther, dispOwn, dispOther, tracker, tracker, admin, admin, 401}
}

func matrixRows(t *testing.T) []matrixRow {
	jsonCT := []string{"Content-Type", "application/json"}
	period := "from=2026-01-01&to=2026-01-31"
	return []matrixRow{
		{"GET /FHIR/R4/metadata", noRx, func(c *cell) request { return request{method: "GET", path: "/FHIR/R4/metadata"} }, all(200)},
		{"POST /FHIR/R4/$process-message prescription-order", unposted, func(c *cell) request {
			return request{method: "POST", path: "/FHIR/R4/$process-message", body: c.g.Body}
		}, byOrg(200, 403, 403, 403, 403, 403)},
		{"POST /FHIR/R4/$process-message cancellation", ordered, func(c *cell) request {
			body, _ := fhirgen.Cancellation(c.g, c.g.ItemIDs[0], "0001")
			return request{method: "POST", path: "/FHIR/R4/$process-message", body: body}
		}, byOrg(200, 403, 403, 403, 403, 403)},
		{"POST /FHIR/R4/$process-message dispense-notification", releasedTo, func(c *cell) request {
			body, _ := fhirgen.DispenseNotification(c.g, c.disp, c.statuses("0001"), "0006", "")
			return request{method: "POST", path: "/FHIR/R4/$process-message", body: body}
		}, byOrg(403, 403, 200, notHolder, 403, 403)},
		{"POST /FHIR/R4/Task/$release nominated", ordered, func(c *cell) request {
			return request{method: "POST", path: "/FHIR/R4/Task/$release", body: releaseBody(t, c.disp, "")}
		}, byOrg(403, 403, 200, 403, 403, 403)},
		{"POST /FHIR/R4/Task/$release by ID", ordered, func(c *cell) request {
			return request{method: "POST", path: "/FHIR/R4/Task/$release", body: releaseBody(t, c.disp, c.g.ShortID)}
		}, byOrg(403, 403, 200, 403, 403, 403)},
		{"POST /FHIR/R4/Task return", releasedTo, func(c *cell) request {
			return request{method: "POST", path: "/FHIR/R4/Task", body: fhirgen.ReturnTask(c.g, c.disp, "0003")}
		}, byOrg(403, 403, 200, notHolder, 403, 403)},
		{"POST /FHIR/R4/Task withdraw", dispensed, func(c *cell) request {
			return request{method: "POST", path: "/FHIR/R4/Task", body: fhirgen.WithdrawTask(c.g, c.disp, c.dn, "QU")}
		}, byOrg(403, 403, 200, notHolder, 403, 403)},
		{"POST /FHIR/R4/Claim", dispensed, func(c *cell) request {
			body, _ := fhirgen.Claim(c.g, c.disp, "")
			return request{method: "POST", path: "/FHIR/R4/Claim", body: body}
		}, byOrg(403, 403, 200, notHolder, 403, 403)},
		{"POST /FHIR/R4/$validate", unposted, func(c *cell) request {
			return request{method: "POST", path: "/FHIR/R4/$validate", body: c.g.Body}
		}, roles(200, 200, 403, 403)},
		{"GET /FHIR/R4/RequestGroup?prescriptionId", ordered, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup?prescriptionId=" + c.g.ShortID}
		}, byOrg(found, hidden, found, hidden, found, found)},
		{"GET /FHIR/R4/RequestGroup?nhsNumber", ordered, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup?nhsNumber=" + c.nhs}
		}, byOrg(found, hidden, found, hidden, found, found)},
		{"GET /FHIR/R4/RequestGroup?prescriptionId (held)", releasedTo, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup?prescriptionId=" + c.g.ShortID}
		}, byOrg(found, hidden, found, hidden, found, found)},
		{"GET /FHIR/R4/RequestGroup/{id}", ordered, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup/" + c.g.ShortID}
		}, byOrg(200, 403, 200, 403, 200, 200)},
		{"GET /FHIR/R4/RequestGroup/{id} (held)", releasedTo, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup/" + c.g.ShortID}
		}, byOrg(200, 403, 200, 403, 200, 200)},
		{"GET /FHIR/R4/RequestGroup/{id} unknown", noRx, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup/" + fhirgen.ShortID(c.sender)}
		}, byOrg(403, 403, 403, 403, 404, 404)},
		{"GET /FHIR/R4/RequestGroup/ without ID", noRx, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/RequestGroup/"}
		}, allAuth(400, 401)},
		{"GET /FHIR/R4/Patient (unknown route)", noRx, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/Patient"}
		}, allAuth(404, 401)},
		{"GET /FHIR/R4/$process-message (wrong method)", noRx, func(c *cell) request {
			return request{method: "GET", path: "/FHIR/R4/$process-message"}
		}, allAuth(405, 401)},
		{"GET /api/v1/audit", noRx, func(c *cell) request {
			return request{method: "GET", path: "/api/v1/audit?limit=1"}
		}, roles(403, 403, 403, 200)},
		{"GET /api/v1/nominations/{nhsNumber}", noRx, func(c *cell) request {
			return request{method: "GET", path: "/api/v1/nominations/" + c.nhs}
		}, roles(200, 200, 200, 200)},
		{"PUT /api/v1/nominations/{nhsNumber}/{type}", noRx, func(c *cell) request {
			return request{method: "PUT", path: "/api/v1/nominations/" + c.nhs + "/P1", body: []byte(`{"ods":"` + c.disp + `"}`), headers: jsonCT}
		}, roles(200, 200, 403, 200)},
		{"DELETE /api/v1/nominations/{nhsNumber}/{type}", noRx, func(c *cell) request {
			return request{method: "DELETE", path: "/api/v1/nominations/" + c.nhs + "/P1"}
		}, roles(200, 200, 403, 200)},
		{"POST /api/v1/nominations/import", noRx, func(c *cell) request {
			body := fmt.Sprintf(`{"nhsNumber":%q,"type":"P1","ods":%q}`+"\n", c.nhs, c.disp)
			return request{method: "POST", path: "/api/v1/nominations/import", body: []byte(body), headers: []string{"Content-Type", "application/x-ndjson"}}
		}, roles(403, 403, 403, 200)},
		{"GET /api/v1/nominations/reports/dispensers/{ods}", noRx, func(c *cell) request {
			return request{method: "GET", path: "/api/v1/nominations/reports/dispensers/" + c.disp + "?" + period}
		}, roles(403, 403, 403, 200)},
		{"GET /api/v1/nominations/reports/summary", noRx, func(c *cell) request {
			return request{method: "GET", path: "/api/v1/nominations/reports/summary?" + period}
		}, roles(403, 403, 403, 200)},
		{"GET /api/v2/unknown", noRx, func(c *cell) request { return request{method: "GET", path: "/api/v2/unknown"} }, allAuth(404, 401)},
		{"GET /_ping", noRx, func(c *cell) request { return request{method: "GET", path: "/_ping"} }, all(200)},
		{"GET /healthz", noRx, func(c *cell) request { return request{method: "GET", path: "/healthz"} }, all(200)},
		{"GET /readyz", noRx, func(c *cell) request { return request{method: "GET", path: "/readyz"} }, all(200)},
		{"GET /metrics", noRx, func(c *cell) request { return request{method: "GET", path: "/metrics"} }, all(200)},
		{"GET /tracker", noRx, func(c *cell) request { return request{method: "GET", path: "/tracker"} }, all(200)},
		{"POST /tracker/session", noRx, func(c *cell) request {
			return request{method: "POST", path: "/tracker/session", tokenInBody: true,
				headers: []string{"Content-Type", "application/json", "X-EPS-Tracker", "1"}}
		}, allAuth(204, 400)}, // no token in the body: 400 MISSING_VALUE, a bad one 401
		{"GET /tracker/session", noRx, func(c *cell) request { return request{method: "GET", path: "/tracker/session"} }, allAuth(200, 401)},
		{"DELETE /tracker/session", noRx, func(c *cell) request {
			return request{method: "DELETE", path: "/tracker/session", headers: []string{"X-EPS-Tracker", "1"}}
		}, all(204)},
	}
}

func TestSecurityMatrix(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	// setup makes the world of one cell.
	setup := func(t *testing.T, s stage) *cell {
		t.Helper()
		c := &cell{sender: prescriber, disp: newODS("MX"), nhs: fhirgen.NHSNumber()}
		if s == noRx {
			return c
		}
		g, err := tmpl.Order(fhirgen.Options{Performer: c.disp})
		if err != nil {
			t.Fatal(err)
		}
		c.g, c.nhs = g, g.NHSNumber
		if s == unposted {
			return c
		}
		if r := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); r.Status != 200 {
			t.Fatalf("order: %d %s", r.Status, r.Body)
		}
		if s >= releasedTo {
			if r := b.release(c.disp, g.ShortID); r.Status != 200 {
				t.Fatalf("release: %d %s", r.Status, r.Body)
			}
		}
		if s >= dispensed {
			body, id := fhirgen.DispenseNotification(g, c.disp, c.statuses("0001"), "0006", "")
			if r := b.post(b.token(auth.RoleDispenser, c.disp), body); r.Status != 200 {
				t.Fatalf("dispense: %d %s", r.Status, r.Body)
			}
			c.dn = id
		}
		b.settle()
		return c
	}
	var mismatches []string
	for _, row := range matrixRows(t) {
		t.Run(row.route, func(t *testing.T) {
			for w := range columns {
				c := setup(t, row.stage)
				req := row.req(c)
				token := ""
				if w != noToken {
					ods := c.sender
					if w.role() != auth.RolePrescriber {
						ods = c.disp
					}
					if !w.own() {
						ods = newODS("OT")
					}
					token = b.token(w.role(), ods)
				}
				var res *response
				if req.tokenInBody {
					res = b.do(req.method, req.path, "", mustJSON(map[string]string{"token": token}), req.headers...)
				} else {
					res = b.do(req.method, req.path, token, req.body, req.headers...)
				}
				got := res.Status
				if got == 200 && (row.want[w] == found || row.want[w] == hidden) {
					var bundle struct{ Total *int }
					if err := json.Unmarshal(res.Body, &bundle); err != nil || bundle.Total == nil {
						t.Fatalf("%s: not a searchset: %s", w, res.Body)
					}
					got = hidden
					if *bundle.Total > 0 {
						got = found
					}
				}
				if got != row.want[w] {
					mismatches = append(mismatches, fmt.Sprintf("%s as %s: %s, want %s", row.route, w, show(got), show(row.want[w])))
					t.Errorf("%s: %s, want %s: %.300s", w, show(got), show(row.want[w]), res.Body)
				}
				if res.Status >= 400 && strings.HasPrefix(req.path, "/FHIR/") {
					res.outcome(t) // every refusal is an OperationOutcome
				}
			}
		})
	}
	if len(mismatches) > 0 {
		t.Logf("the matrix differs from README in %d cells:\n%s", len(mismatches), strings.Join(mismatches, "\n"))
	}
}

func show(status int) string {
	switch status {
	case found:
		return "200 (found)"
	case hidden:
		return "200 (not shown)"
	}
	return fmt.Sprint(status, " ", http.StatusText(status))
}
