package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// Scenario tests: prescriptions taken through their life over HTTP with a
// real broker, in the matrix nominated / non-nominated x acute / repeat
// prescribing, as EPS-DOMAIN.md (Transitions) describes it. After every
// step the prescription's status, its items' statuses and its history are
// checked through the tracker API (GET RequestGroup/{id}) and the store;
// every refused step must change nothing (the event log of the
// prescription does not grow).

// rxKind is one cell of the matrix: an order template, and whether its
// orders are nominated (site type P1, a performer) or not (0004, none).
type rxKind struct {
	name      string
	nominated bool
	therapy   string // acute or continuous
	tmpl      *fhirgen.Template
}

const prescriber = "A83008" // the sending organisation of every template

func rxKinds(t *testing.T) []rxKind {
	t.Helper()
	template := func(b []byte) *fhirgen.Template {
		t.Helper()
		tmpl, err := fhirgen.NewTemplate(b)
		if err != nil {
			t.Fatal(err)
		}
		return tmpl
	}
	repeat := readFile(t, filepath.Join(fixtures, "primary-care/repeat-prescribing/1-Process-Request-Send-200_OK.json"))
	din := readFile(t, filepath.Join(fixtures, "primary-care/acute/no-nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/din/1-Process-Request-Send-200_OK.json"))
	dinRepeat := fhirgen.Mutate(din, func(m map[string]any) {
		for _, mr := range medicationRequests(m) {
			mr["courseOfTherapyType"] = map[string]any{"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
				"code":   "continuous", "display": "Continuous long term therapy"}}}
		}
	})
	return []rxKind{
		{"nominated-acute", true, "acute", template(fhirgen.Order4Items)},
		{"nominated-repeat", true, "continuous", template(repeat)},
		{"non-nominated-acute", false, "acute", template(din)},
		{"non-nominated-repeat", false, "continuous", template(dinRepeat)},
	}
}

// odsSeq makes dispenser ODS codes that no other prescription of the test
// uses, so that a nominated release hands over only the prescription of
// the scenario.
var odsSeq atomic.Int64

func newODS(prefix string) string { return fmt.Sprintf("%s%04d", prefix, odsSeq.Add(1)) }

// History titles of the tracker (the NHS tracker's names).
const (
	hUpload          = "Prescription upload successful"
	hRelease         = "Release Request successful"
	hNominated       = "Nominated Release Request successful"
	hDispense        = "Dispense notification successful"
	hClaim           = "Dispense claim successful"
	hReturn          = "Dispense proposal return successful"
	hWithdraw        = "Dispense Withdrawal successful"
	hCancelled       = "Prescription/item was cancelled"
	hMarked          = "Prescription/item was not cancelled. With dispenser. Marked for cancellation"
	hMarkedActive    = "Prescription/item was not cancelled. With dispenser active. Marked for cancellation"
	hSubsequentCncl  = "Subsequent cancellation"
	codeInvalidState = "INVALID_STATE_TRANSITION"
)

// state is what a prescription should look like.
type state struct {
	status    string
	items     []string // line item statuses, in the order of the order's items
	dispenser string
	title     string // the title of the latest history entry
}

// scenarioRx is one prescription of a scenario and what the test expects of it.
type scenarioRx struct {
	b       *testBroker
	kind    rxKind
	g       *fhirgen.Generated
	home    string // the dispenser that releases it first (its nominated dispenser when nominated)
	want    state
	history int    // history entries expected
	events  uint64 // event log messages expected
}

// newRx makes an order of kind k (nominated to a dispenser of its own when
// nominated), without posting it.
func newRx(t *testing.T, b *testBroker, k rxKind) *scenarioRx {
	t.Helper()
	r := &scenarioRx{b: b, kind: k, home: newODS("DH")}
	opts := fhirgen.Options{}
	if k.nominated {
		opts.Performer = r.home
	}
	g, err := k.tmpl.Order(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.ItemIDs) == 0 {
		t.Fatalf("generated order has no ItemIDs")
	}
	r.g = g
	return r
}

// postRx posts a new order of kind k and checks it is To Be Dispensed.
func postRx(t *testing.T, b *testBroker, k rxKind) *scenarioRx {
	t.Helper()
	r := newRx(t, b, k)
	res := b.post(b.token(auth.RolePrescriber, prescriber), r.g.Body)
	if res.Status != 200 {
		t.Fatalf("order: %d %s", res.Status, res.Body)
	}
	r.events, r.history = 1, 1
	r.want = state{status: "0001", items: r.all("0007"), title: hUpload}
	r.check(t)
	cur, err := b.App.Store.Current(context.Background(), r.g.ShortID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Record.TherapyType != k.therapy {
		t.Errorf("therapy type %q, want %q", cur.Record.TherapyType, k.therapy)
	}
	if want := map[bool]string{true: r.home, false: ""}[k.nominated]; cur.Record.Nominated != want {
		t.Errorf("nominated to %q, want %q", cur.Record.Nominated, want)
	}
	return r
}

func (r *scenarioRx) id() string { return r.g.ShortID }

// all is every item at status s.
func (r *scenarioRx) all(s string) []string {
	out := make([]string, len(r.g.ItemIDs))
	for i := range out {
		out[i] = s
	}
	return out
}

// firstAnd is the first item at first, the others at rest.
func (r *scenarioRx) firstAnd(first, rest string) []string {
	out := r.all(rest)
	out[0] = first
	return out
}

// statuses maps the order's line items to dispense statuses.
func (r *scenarioRx) statuses(items []string) map[string]string {
	m := map[string]string{}
	for i, id := range r.g.ItemIDs {
		m[id] = items[i]
	}
	return m
}

func (r *scenarioRx) token(role auth.Role, ods string) string { return r.b.token(role, ods) }

// check compares the prescription with r.want through the store (b.status,
// the record's items and history), the tracker API and the event log.
func (r *scenarioRx) check(t *testing.T) {
	t.Helper()
	b, w := r.b, r.want
	if st, d := b.status(r.id()); st != w.status || d != w.dispenser {
		t.Errorf("store: status %s held by %q, want %s held by %q", st, d, w.status, w.dispenser)
	}
	cur, err := b.App.Store.Current(context.Background(), r.id())
	if err != nil {
		t.Fatal(err)
	}
	var items []string
	for _, id := range r.g.ItemIDs {
		st := "missing"
		for _, it := range cur.Record.Items {
			if strings.EqualFold(it.ID, id) {
				st = string(it.Status)
			}
		}
		items = append(items, st)
	}
	if !slices.Equal(items, w.items) {
		t.Errorf("store: items %v, want %v", items, w.items)
	}
	if len(cur.Record.History) != r.history {
		t.Errorf("store: %d history entries, want %d", len(cur.Record.History), r.history)
	}
	if n := b.events(r.id()); n != r.events {
		t.Errorf("event log: %d events, want %d", n, r.events)
	}

	d := trackerDetail(t, b, r.id())
	if d.status != w.status {
		t.Errorf("tracker: status %s, want %s", d.status, w.status)
	}
	items = items[:0]
	for _, id := range r.g.ItemIDs {
		items = append(items, d.items[strings.ToLower(id)])
	}
	if !slices.Equal(items, w.items) {
		t.Errorf("tracker: items %v, want %v", items, w.items)
	}
	if len(d.history) != r.history {
		t.Errorf("tracker: %d history actions, want %d: %v", len(d.history), r.history, d.history)
	} else if last := d.history[len(d.history)-1]; last.title != w.title || last.status != w.status {
		t.Errorf("tracker: latest history action %q (status %s), want %q (status %s)", last.title, last.status, w.title, w.status)
	}
}

// ok expects res to succeed (200) with one more event in the log and the
// prescription in state w after it, with added history entries (1 when 0).
func (r *scenarioRx) ok(t *testing.T, what string, res *response, w state, added ...int) {
	t.Helper()
	if res.Status != 200 {
		t.Fatalf("%s: %d %s", what, res.Status, res.Body)
	}
	n := 1
	if len(added) > 0 {
		n = added[0]
	}
	r.changed(t, w, n)
}

// changed expects one more event in the log, added more history entries
// and the prescription in state w.
func (r *scenarioRx) changed(t *testing.T, w state, added int) {
	t.Helper()
	r.events++
	r.history += added
	r.want = w
	r.check(t)
}

// same expects res to succeed (200) and change nothing: a message sent
// again.
func (r *scenarioRx) same(t *testing.T, what string, res *response) {
	t.Helper()
	if res.Status != 200 {
		t.Fatalf("%s: %d %s", what, res.Status, res.Body)
	}
	r.check(t)
}

// refused expects res to be refused with the HTTP status and the code, and
// nothing to have changed.
func (r *scenarioRx) refused(t *testing.T, what string, res *response, status int, code string) {
	t.Helper()
	if res.Status != status {
		t.Errorf("%s: %d %s, want %d %s", what, res.Status, res.Body, status, code)
	} else if oo := res.outcome(t); code != "" && !oo.hasCode(code) {
		t.Errorf("%s: codes %v, want %s: %s", what, oo.codes(), code, res.Body)
	}
	r.check(t)
}

// Requests.

func (r *scenarioRx) releaseByID(dispenser string) *response { return r.b.release(dispenser, r.id()) }

// releaseNominated is a nominated release by dispenser: the IDs released.
func (r *scenarioRx) releaseNominated(t *testing.T, dispenser string) []string {
	t.Helper()
	r.b.settle()
	ids, _ := released(t, r.b.release(dispenser, ""))
	return ids
}

// release releases the prescription to its home dispenser: nominated
// release when it is nominated, by ID otherwise.
func (r *scenarioRx) release(t *testing.T) {
	t.Helper()
	if r.kind.nominated {
		if ids := r.releaseNominated(t, r.home); !slices.Equal(ids, []string{r.id()}) {
			t.Fatalf("nominated release by %s handed over %v, want [%s]", r.home, ids, r.id())
		}
		r.changed(t, state{status: "0002", items: r.all("0008"), dispenser: r.home, title: hNominated}, 1)
		return
	}
	r.ok(t, "release by ID", r.releaseByID(r.home), state{status: "0002", items: r.all("0008"), dispenser: r.home, title: hRelease})
}

func (r *scenarioRx) dispense(dispenser string, items []string, status, replacementOf string) (*response, string, []byte) {
	body, id := fhirgen.DispenseNotification(r.g, dispenser, r.statuses(items), status, replacementOf)
	return r.b.post(r.token(auth.RoleDispenser, dispenser), body), id, body
}

func (r *scenarioRx) task(dispenser string, body []byte) *response {
	return r.b.do("POST", "/FHIR/R4/Task", r.token(auth.RoleDispenser, dispenser), body)
}

func (r *scenarioRx) returnBy(dispenser string) *response {
	return r.task(dispenser, fhirgen.ReturnTask(r.g, dispenser, "0003"))
}

func (r *scenarioRx) withdraw(dispenser, notification string) *response {
	return r.task(dispenser, fhirgen.WithdrawTask(r.g, dispenser, notification, "QU"))
}

func (r *scenarioRx) claim(dispenser, replacementOf string) (*response, string, []byte) {
	body, id := fhirgen.Claim(r.g, dispenser, replacementOf)
	return r.b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, dispenser), body), id, body
}

// cancel posts a cancellation of line item i by the prescriber.
func (r *scenarioRx) cancel(i int) *response {
	body, _ := fhirgen.Cancellation(r.g, r.g.ItemIDs[i], "0001")
	return r.b.post(r.token(auth.RolePrescriber, r.g.Sender), body)
}

// cancelAnswer expects res to be the cancel response Bundle
// (prescription-order-response) with the R-code: 200 for R-0001, 400
// otherwise.
func cancelAnswer(t *testing.T, what string, res *response, rcode string) bool {
	t.Helper()
	want := 400
	if rcode == "R-0001" {
		want = 200
	}
	typ, code := rCode(res)
	if res.Status != want || typ != "Bundle" || code != rcode {
		t.Errorf("%s: %d %s %s, want %d Bundle %s: %.600s", what, res.Status, typ, code, want, rcode, res.Body)
		return false
	}
	m := mustDecode(res.Body)
	if ev, _ := resource(entries(m)[0])["eventCoding"].(map[string]any); ev["code"] != "prescription-order-response" {
		t.Errorf("%s: the answer's event is %v, want prescription-order-response", what, ev["code"])
	}
	return true
}

// rCode reads the R-code of a cancellation answer: the resourceType and the
// code of the response Bundle's Extension-DM-PrescriptionTaskStatusReason
// (R-0001) or Extension-DM-PrescriptionStatusHistory (the others),
// or of the OperationOutcome's details.
func rCode(res *response) (typ, code string) {
	var m map[string]any
	if json.Unmarshal(res.Body, &m) != nil {
		return "", ""
	}
	typ, _ = m["resourceType"].(string)
	switch typ {
	case "Bundle":
		for _, e := range entries(m) {
			r := resource(e)
			if r["resourceType"] != "MedicationRequest" {
				continue
			}
			for _, x := range asList(r["extension"]) {
				xm := x.(map[string]any)
				if xm["url"] != "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionTaskStatusReason" &&
					xm["url"] != "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionStatusHistory" {
					continue
				}
				for _, s := range asList(xm["extension"]) {
					if sm := s.(map[string]any); sm["url"] == "status" {
						code, _ = sm["valueCoding"].(map[string]any)["code"].(string)
					}
				}
			}
		}
	case "OperationOutcome":
		var oo outcome
		json.Unmarshal(res.Body, &oo)
		for _, c := range oo.codes() {
			if strings.HasPrefix(c, "R-") {
				code = c
			}
		}
	}
	return typ, code
}

func asList(v any) []any { l, _ := v.([]any); return l }

// detail is what the tracker's detail view says of a prescription.
type detail struct {
	status         string
	items          map[string]string // lower-case line item id -> status
	history        []historyEntry
	pending        bool            // prescriptionPendingCancellation
	pendingItems   map[string]bool // lower-case line item id -> lineItemPendingCancellation
	nominated      string          // dispenseRequest.performer of the items
	dispenserShown string          // performer of the items
}

type historyEntry struct{ title, status string }

func (h historyEntry) String() string { return h.title + " (" + h.status + ")" }

func trackerDetail(t *testing.T, b *testBroker, id string) detail {
	t.Helper()
	res := b.do("GET", "/FHIR/R4/RequestGroup/"+id, b.token(auth.RoleTracker, "X26"), nil)
	if res.Status != 200 {
		t.Fatalf("tracker detail %s: %d %s", id, res.Status, res.Body)
	}
	type ext struct {
		URL          string `json:"url"`
		ValueBoolean *bool  `json:"valueBoolean"`
		ValueCoding  struct{ Code string }
		Extension    []struct {
			URL          string `json:"url"`
			ValueBoolean *bool  `json:"valueBoolean"`
			ValueCoding  struct{ Code string }
		} `json:"extension"`
	}
	type ref struct {
		Identifier []struct{ Value string } // the tracker names an organisation by identifier[] (as the NHS tracker does)
	}
	odsOf := func(r *ref) string {
		if r == nil || len(r.Identifier) == 0 {
			return ""
		}
		return r.Identifier[0].Value
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				ResourceType    string
				Identifier      []struct{ System, Value string }
				Extension       []ext
				Performer       json.RawMessage // a MedicationRequest's (a MedicationDispense has a list)
				DispenseRequest struct{ Performer *ref }
				Action          []struct {
					Title  string
					Action []struct {
						Title string
						Code  []struct {
							Coding []struct{ System, Code string }
						}
					}
				}
			}
		}
	}
	if err := json.Unmarshal(res.Body, &bundle); err != nil {
		t.Fatalf("tracker detail: %v", err)
	}
	d := detail{items: map[string]string{}, pendingItems: map[string]bool{}}
	sub := func(exts []ext, url, name string) (string, *bool) {
		for _, x := range exts {
			if x.URL == url {
				for _, s := range x.Extension {
					if s.URL == name {
						return s.ValueCoding.Code, s.ValueBoolean
					}
				}
			}
		}
		return "", nil
	}
	const pendingExt = "https://fhir.nhs.uk/StructureDefinition/Extension-PendingCancellation"
	for _, e := range bundle.Entry {
		r := e.Resource
		switch r.ResourceType {
		case "RequestGroup":
			d.status, _ = sub(r.Extension, "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory", "status")
			if _, p := sub(r.Extension, pendingExt, "prescriptionPendingCancellation"); p != nil {
				d.pending = *p
			}
			for _, a := range r.Action {
				if a.Title != "Prescription status transitions" {
					continue
				}
				for _, h := range a.Action {
					he := historyEntry{title: h.Title}
					if len(h.Code) > 0 && len(h.Code[0].Coding) > 0 {
						he.status = h.Code[0].Coding[0].Code
					}
					d.history = append(d.history, he)
				}
			}
		case "MedicationRequest":
			id := ""
			for _, i := range r.Identifier {
				if i.System == "https://fhir.nhs.uk/Id/prescription-order-item-number" {
					id = strings.ToLower(i.Value)
				}
			}
			d.items[id], _ = sub(r.Extension, "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation", "dispenseStatus")
			if _, p := sub(r.Extension, pendingExt, "lineItemPendingCancellation"); p != nil {
				d.pendingItems[id] = *p
			}
			var shown *ref
			if len(r.Performer) > 0 && r.Performer[0] == '{' {
				shown = new(ref)
				if err := json.Unmarshal(r.Performer, shown); err != nil {
					t.Fatalf("tracker detail: MedicationRequest.performer: %v", err)
				}
			}
			d.nominated, d.dispenserShown = odsOf(r.DispenseRequest.Performer), odsOf(shown)
		}
	}
	return d
}

// forKinds runs a scenario for every cell of the matrix, on one broker.
func forKinds(t *testing.T, scenario func(t *testing.T, b *testBroker, k rxKind)) {
	b := startBroker(t, "")
	for _, k := range rxKinds(t) {
		t.Run(k.name, func(t *testing.T) { scenario(t, b, k) })
	}
}

// Release, dispense (part, then all), a resent notification, withdraw,
// amendment of the latest notification, claim, the same claim again, claim
// amendment.
func TestScenarioDispenseWithdrawAmendClaim(t *testing.T) {
	forKinds(t, func(t *testing.T, b *testBroker, k rxKind) {
		t.Run("dispensed", func(t *testing.T) { dispenseWithdrawAmendClaim(t, b, k) })
		t.Run("not dispensed", func(t *testing.T) {
			r := postRx(t, b, k)
			r.release(t)
			res, _, _ := r.dispense(r.home, r.all("0002"), "0007", "")
			r.ok(t, "not dispensed", res, state{status: "0007", items: r.all("0002"), dispenser: r.home, title: hDispense})
			body, _ := fhirgen.ClaimItems(r.g, r.home, "", r.statuses(r.all("0002")), "0007")
			res = b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, r.home), body)
			r.ok(t, "claim", res, state{status: "0008", items: r.all("0002"), dispenser: r.home, title: hClaim})
		})
	})
}

func dispenseWithdrawAmendClaim(t *testing.T, b *testBroker, k rxKind) {
	r := postRx(t, b, k)
	d := r.home
	r.release(t)

	partial := r.firstAnd("0003", "0001")
	res, n1, n1Body := r.dispense(d, partial, "0003", "")
	r.ok(t, "part dispensed", res, state{status: "0003", items: partial, dispenser: d, title: hDispense})
	r.same(t, "the same notification again", b.post(r.token(auth.RoleDispenser, d), n1Body))

	res, n2, _ := r.dispense(d, r.all("0001"), "0006", "")
	r.ok(t, "dispensed", res, state{status: "0006", items: r.all("0001"), dispenser: d, title: hDispense})

	r.refused(t, "withdraw of a notification that is not the latest", r.withdraw(d, n1), 400, codeInvalidState)
	r.ok(t, "withdraw", r.withdraw(d, n2), state{status: "0003", items: partial, dispenser: d, title: hWithdraw})

	// n1 is the latest again: amend it (items owed instead of part dispensed).
	owing := r.firstAnd("0004", "0001")
	res, _, _ = r.dispense(d, owing, "0003", n1)
	r.ok(t, "amendment of the latest", res, state{status: "0003", items: owing, dispenser: d, title: hDispense})
	res, _, _ = r.dispense(d, r.all("0001"), "0006", n2)
	r.refused(t, "amendment of a withdrawn notification", res, 400, codeInvalidState)
	res, _, _ = r.dispense(d, r.all("0001"), "0006", n1)
	r.refused(t, "amendment of a replaced notification", res, 400, codeInvalidState)

	notDispensed := r.firstAnd("0002", "0001")
	res, n4, _ := r.dispense(d, notDispensed, "0006", "")
	r.ok(t, "the rest dispensed", res, state{status: "0006", items: notDispensed, dispenser: d, title: hDispense})
	res, n5, _ := r.dispense(d, r.all("0001"), "0006", n4)
	r.ok(t, "amendment: all dispensed", res, state{status: "0006", items: r.all("0001"), dispenser: d, title: hDispense})

	res, c1, c1Body := r.claim(d, "")
	r.ok(t, "claim", res, state{status: "0008", items: r.all("0001"), dispenser: d, title: hClaim})
	r.same(t, "the same claim again", b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, d), c1Body))
	res, _, _ = r.claim(d, c1)
	r.ok(t, "claim amendment", res, state{status: "0008", items: r.all("0001"), dispenser: d, title: hClaim})
	res, _, _ = r.claim(d, c1)
	r.refused(t, "amendment of a replaced claim", res, 400, codeInvalidState)
	r.refused(t, "withdraw after the claim", r.withdraw(d, n5), 400, codeInvalidState)
	res, _, _ = r.dispense(d, r.all("0001"), "0006", "")
	r.refused(t, "dispense notification after the claim", res, 400, codeInvalidState)
}

// A return gives the prescription back (nominated dispenser cleared): the
// nominated queue no longer has it, and another dispenser releases it by
// ID and dispenses it.
func TestScenarioReturnThenReleasedElsewhere(t *testing.T) {
	forKinds(t, func(t *testing.T, b *testBroker, k rxKind) {
		r := postRx(t, b, k)
		home, other := r.home, newODS("DO")
		r.release(t)
		r.refused(t, "return by a dispenser that does not hold it", r.returnBy(other), 400, codeInvalidState)
		r.ok(t, "return", r.returnBy(home), state{status: "0001", items: r.all("0007"), title: hReturn})
		cur, err := b.App.Store.Current(context.Background(), r.id())
		if err != nil {
			t.Fatal(err)
		}
		if cur.Record.Nominated != "" {
			t.Errorf("after the return it is still nominated to %q", cur.Record.Nominated)
		}
		if d := trackerDetail(t, b, r.id()); d.nominated != "" || d.dispenserShown != "" {
			t.Errorf("tracker after the return: nominated %q, with dispenser %q; want neither", d.nominated, d.dispenserShown)
		}
		if ids := r.releaseNominated(t, home); len(ids) != 0 {
			t.Errorf("nominated release by %s after the return handed over %v", home, ids)
		}
		r.check(t)
		r.refused(t, "return of a returned prescription", r.returnBy(home), 400, codeInvalidState)
		r.ok(t, "release by ID elsewhere", r.releaseByID(other), state{status: "0002", items: r.all("0008"), dispenser: other, title: hRelease})
		res, _, _ := r.dispense(home, r.all("0001"), "0006", "")
		r.refused(t, "dispense by the dispenser that returned it", res, 400, codeInvalidState)
		res, _, _ = r.dispense(other, r.all("0001"), "0006", "")
		r.ok(t, "dispensed elsewhere", res, state{status: "0006", items: r.all("0001"), dispenser: other, title: hDispense})
	})
}

// Cancellations: before release (R-0001 per item; all items cancelled: the
// prescription is), twice (R-0006), after release (R-0002, applied on
// return, or when the dispenser marks the item not dispensed), after
// dispensing (R-0004), part dispensed (R-0003), unknown (R-0008, kept and
// applied when the order arrives), another patient (R-5000).
func TestScenarioCancellation(t *testing.T) {
	forKinds(t, func(t *testing.T, b *testBroker, k rxKind) {
		t.Run("before release", func(t *testing.T) {
			r := postRx(t, b, k)
			n := len(r.g.ItemIDs)
			want := r.all("0007")
			for i := range n {
				res := r.cancel(i)
				if !cancelAnswer(t, fmt.Sprintf("cancel item %d", i), res, "R-0001") {
					t.FailNow()
				}
				want[i] = "0005"
				status := "0001"
				if i == n-1 {
					status = "0005"
				}
				r.ok(t, "cancel", res, state{status: status, items: slices.Clone(want), title: hCancelled})
				if i == 0 && n > 1 {
					res := r.cancel(0)
					cancelAnswer(t, "the cancelled item again", res, "R-0006")
					r.check(t)
				}
			}
			res := r.cancel(0)
			cancelAnswer(t, "cancel a cancelled prescription", res, "R-0006")
			r.check(t)
			r.refused(t, "release by ID of a cancelled prescription", r.releaseByID(newODS("DO")), 400, codeInvalidState)
			if k.nominated {
				if ids := r.releaseNominated(t, r.home); len(ids) != 0 {
					t.Errorf("nominated release of a cancelled prescription handed over %v", ids)
				}
				r.check(t)
			}
			res, _, _ = r.dispense(r.home, r.all("0001"), "0006", "")
			r.refused(t, "dispense of a cancelled prescription", res, 400, codeInvalidState)
		})

		t.Run("after release, applied on return", func(t *testing.T) {
			r := postRx(t, b, k)
			r.release(t)
			for i := range r.g.ItemIDs {
				res := r.cancel(i)
				if !cancelAnswer(t, fmt.Sprintf("cancel item %d", i), res, "R-0002") {
					t.FailNow()
				}
				r.changed(t, state{status: "0002", items: r.all("0008"), dispenser: r.home, title: hMarked}, 1)
			}
			if d := trackerDetail(t, b, r.id()); !d.pending || !d.pendingItems[strings.ToLower(r.g.ItemIDs[0])] {
				t.Errorf("tracker: prescriptionPendingCancellation %v, lineItemPendingCancellation %v; want true while the cancellation waits for the dispenser",
					d.pending, d.pendingItems[strings.ToLower(r.g.ItemIDs[0])])
			}
			r.ok(t, "return", r.returnBy(r.home), state{status: "0005", items: r.all("0005"), title: hSubsequentCncl}, 2)
			if d := trackerDetail(t, b, r.id()); d.pending {
				t.Errorf("tracker: still pending cancellation after it took effect")
			}
			r.refused(t, "release after the cancellation took effect", r.releaseByID(newODS("DO")), 400, codeInvalidState)
		})

		t.Run("after release, applied when not dispensed", func(t *testing.T) {
			r := postRx(t, b, k)
			r.release(t)
			res := r.cancel(0)
			if !cancelAnswer(t, "cancel item 0", res, "R-0002") {
				t.FailNow()
			}
			r.changed(t, state{status: "0002", items: r.all("0008"), dispenser: r.home, title: hMarked}, 1)
			res, _, _ = r.dispense(r.home, r.firstAnd("0002", "0001"), "0006", "")
			r.ok(t, "item not dispensed", res, state{status: "0006", items: r.firstAnd("0005", "0001"), dispenser: r.home, title: hDispense})
		})

		t.Run("part dispensed", func(t *testing.T) {
			r := postRx(t, b, k)
			r.release(t)
			// A part-dispensed item (0003) is still with the dispenser:
			// R-0003, and it is marked for cancellation (issue 10).
			owed := r.firstAnd("0003", "0001")
			res, _, _ := r.dispense(r.home, owed, "0003", "")
			r.ok(t, "part dispensed", res, state{status: "0003", items: owed, dispenser: r.home, title: hDispense})
			res = r.cancel(0)
			if cancelAnswer(t, "cancel a part-dispensed item", res, "R-0003") {
				r.changed(t, state{status: "0003", items: owed, dispenser: r.home, title: hMarkedActive}, 1)
			}
			if len(r.g.ItemIDs) > 1 {
				res = r.cancel(1)
				cancelAnswer(t, "cancel a dispensed item", res, "R-0004")
				r.check(t)
			}
		})

		t.Run("after dispensing", func(t *testing.T) {
			r := postRx(t, b, k)
			r.release(t)
			res, _, _ := r.dispense(r.home, r.all("0001"), "0006", "")
			r.ok(t, "dispensed", res, state{status: "0006", items: r.all("0001"), dispenser: r.home, title: hDispense})
			cancelAnswer(t, "cancel after dispensing", r.cancel(0), "R-0004")
			r.check(t)
		})

		t.Run("unknown prescription", func(t *testing.T) {
			r := newRx(t, b, k)
			res := r.cancel(0)
			if typ, code := rCode(res); res.Status != 400 || typ != "OperationOutcome" || code != "R-0008" {
				t.Fatalf("cancel of an unknown prescription: %d %s %s, want 400 OperationOutcome R-0008: %s", res.Status, typ, code, res.Body)
			}
			// Kept, and applied when the order arrives.
			if res := b.post(b.token(auth.RolePrescriber, prescriber), r.g.Body); res.Status != 200 {
				t.Fatalf("order after its cancellation: %d %s", res.Status, res.Body)
			}
			status := "0001"
			if len(r.g.ItemIDs) == 1 {
				status = "0005"
			}
			if st, _ := b.status(r.id()); st != status {
				t.Errorf("order after its cancellation: %s, want %s", st, status)
			}
			if d := trackerDetail(t, b, r.id()); d.items[strings.ToLower(r.g.ItemIDs[0])] != "0005" {
				t.Errorf("order after its cancellation: the cancelled item is %s, want 0005", d.items[strings.ToLower(r.g.ItemIDs[0])])
			}
		})

		t.Run("NHS number mismatch", func(t *testing.T) {
			r := postRx(t, b, k)
			other := *r.g
			other.NHSNumber = fhirgen.NHSNumber()
			body, _ := fhirgen.Cancellation(&other, r.g.ItemIDs[0], "0001")
			res := b.post(b.token(auth.RolePrescriber, prescriber), body)
			if typ, code := rCode(res); res.Status != 400 || typ != "OperationOutcome" || code != "R-5000" {
				t.Errorf("cancel naming another patient: %d %s %s, want 400 OperationOutcome R-5000: %s", res.Status, typ, code, res.Body)
			}
			r.check(t)
		})
	})
}

// Illegal transitions and senders: each refused (4xx with the code) and
// changes nothing.
func TestIllegalTransitions(t *testing.T) {
	forKinds(t, func(t *testing.T, b *testBroker, k rxKind) {
		r := postRx(t, b, k)
		home, other := r.home, newODS("DO")

		res, _, _ := r.dispense(home, r.all("0001"), "0006", "")
		r.refused(t, "dispense before release", res, 400, codeInvalidState)
		res, _, _ = r.claim(home, "")
		r.refused(t, "claim before release", res, 400, codeInvalidState)
		r.refused(t, "return before release", r.returnBy(home), 400, codeInvalidState)
		r.refused(t, "withdraw before any notification", r.withdraw(home, "3f2504e0-4f89-41d3-9a0c-0305e82c3301"), 400, codeInvalidState)

		// A prescriber may not act as a dispenser, a dispenser not as a
		// prescriber, nor for another organisation.
		body, _ := fhirgen.DispenseNotification(r.g, home, r.statuses(r.all("0001")), "0006", "")
		r.refused(t, "prescriber posting a dispense notification", b.post(r.token(auth.RolePrescriber, prescriber), body), 403, "")
		ownBody, _ := fhirgen.DispenseNotification(r.g, prescriber, r.statuses(r.all("0001")), "0006", "")
		r.refused(t, "prescriber posting a dispense notification as its own organisation", b.post(r.token(auth.RolePrescriber, prescriber), ownBody), 403, "")
		cancel, _ := fhirgen.Cancellation(r.g, r.g.ItemIDs[0], "0001")
		r.refused(t, "dispenser cancelling", b.post(r.token(auth.RoleDispenser, home), cancel), 403, "")
		r.refused(t, "prescriber of another organisation cancelling with the order's sender", b.post(r.token(auth.RolePrescriber, "B81001"), cancel), 403, "")
		foreign := *r.g
		foreign.Sender = "B81001"
		cancelB, _ := fhirgen.Cancellation(&foreign, r.g.ItemIDs[0], "0001")
		r.keptElsewhere(t, "cancellation by another prescribing organisation", b.post(r.token(auth.RolePrescriber, "B81001"), cancelB))
		r.refused(t, "release for another organisation", b.do("POST", "/FHIR/R4/Task/$release", r.token(auth.RoleDispenser, other), releaseBody(t, home, r.id())), 403, "")

		r.release(t)
		res, _, _ = r.claim(home, "")
		r.refused(t, "claim before dispense", res, 400, codeInvalidState)
		strangerReturn := *r.g
		strangerReturn.NHSNumber = fhirgen.NHSNumber()
		// A return's Task.for is not compared (return.ts sends Spine no
		// recordTarget): a return naming another patient is a return.
		r.ok(t, "return naming another patient", r.task(home, fhirgen.ReturnTask(&strangerReturn, home, "0003")),
			state{status: "0001", items: r.all("0007"), title: hReturn})
		r.ok(t, "release by ID after the return", r.releaseByID(home), state{status: "0002", items: r.all("0008"), dispenser: home, title: hRelease})
		r.refused(t, "release by ID of a prescription with another dispenser", r.releaseByID(other), 400, "PRESCRIPTION_WITH_ANOTHER_DISPENSER")
		r.refused(t, "return by a dispenser that does not hold it", r.returnBy(other), 400, codeInvalidState)
		res, _, _ = r.dispense(other, r.all("0001"), "0006", "")
		r.refused(t, "dispense by a dispenser that does not hold it", res, 400, codeInvalidState)
		// The acting dispenser is the token's organisation, whatever the
		// message names: a non-holder sending the holder's messages is a
		// non-holder (400 INVALID_STATE_TRANSITION).
		r.refused(t, "dispense notification sent for the holder by another dispenser",
			b.post(r.token(auth.RoleDispenser, other), body), 400, codeInvalidState)
		r.refused(t, "return sent for the holder by another dispenser",
			r.b.do("POST", "/FHIR/R4/Task", r.token(auth.RoleDispenser, other), fhirgen.ReturnTask(r.g, home, "0003")), 400, codeInvalidState)
		r.refused(t, "dispenser cancelling a released prescription", b.post(r.token(auth.RoleDispenser, home), cancel), 403, "")

		// A dispense notification, withdraw and cancellation name the
		// patient, and Spine compares it (R-5000).
		stranger := *r.g
		stranger.NHSNumber = fhirgen.NHSNumber()
		body, _ = fhirgen.DispenseNotification(&stranger, home, r.statuses(r.all("0001")), "0006", "")
		r.refused(t, "dispense notification naming another patient", b.post(r.token(auth.RoleDispenser, home), body), 400, "R-5000")

		partial := r.firstAnd("0003", "0001")
		res, n1, _ := r.dispense(home, partial, "0003", "")
		r.ok(t, "part dispensed", res, state{status: "0003", items: partial, dispenser: home, title: hDispense})
		r.refused(t, "withdraw naming another patient", r.task(home, fhirgen.WithdrawTask(&stranger, home, n1, "QU")), 400, "R-5000")
		res, _, _ = r.dispense(home, r.all("0001"), "0006", "")
		r.ok(t, "dispensed", res, state{status: "0006", items: r.all("0001"), dispenser: home, title: hDispense})
		r.refused(t, "withdraw of a notification that is not the latest", r.withdraw(home, n1), 400, codeInvalidState)
		r.refused(t, "withdraw of an unknown notification", r.withdraw(home, "3f2504e0-4f89-41d3-9a0c-0305e82c3301"), 400, codeInvalidState)
		r.refused(t, "withdraw by a dispenser that does not hold it", r.withdraw(other, n1), 400, codeInvalidState)
		res, _, _ = r.claim(other, "")
		r.refused(t, "claim by a dispenser that does not hold it", res, 400, codeInvalidState)
		r.refused(t, "return of a dispensed prescription", r.returnBy(home), 400, codeInvalidState)
		r.refused(t, "release of a dispensed prescription", r.releaseByID(home), 400, codeInvalidState)
		claimBody, _ := fhirgen.Claim(r.g, home, "")
		r.refused(t, "prescriber claiming", b.do("POST", "/FHIR/R4/Claim", r.token(auth.RolePrescriber, prescriber), claimBody), 403, "")
		// Claim.patient is not read (claim-validator.ts, dispense-claim.ts):
		// a claim naming another patient is the holder's claim.
		strangerClaim, _ := fhirgen.Claim(&stranger, home, "")
		r.ok(t, "claim naming another patient", b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, home), strangerClaim),
			state{status: "0008", items: r.all("0001"), dispenser: home, title: hClaim})
	})
}

// regressionShaped edits a dispensing message made by fhirgen into the
// shape dispensing systems (and NHS England's regression suite) send to
// EPS: a dispense notification without MessageHeader.sender whose
// Organization entry (the performer's) is the prescriber's; a Task without
// owner whose contained Organization is the prescriber's; a claim whose
// contained Organization is the prescriber's.
func regressionShaped(body []byte) []byte {
	return fhirgen.Mutate(body, func(m map[string]any) {
		setODS := func(org map[string]any) {
			org["identifier"] = []any{map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": prescriber}}
		}
		switch m["resourceType"] {
		case "Bundle":
			for _, e := range m["entry"].([]any) {
				r := e.(map[string]any)["resource"].(map[string]any)
				switch r["resourceType"] {
				case "MessageHeader":
					delete(r, "sender")
				case "Organization":
					setODS(r)
				}
			}
		case "Task", "Claim":
			delete(m, "owner")
			for _, c := range m["contained"].([]any) {
				if cm := c.(map[string]any); cm["resourceType"] == "Organization" {
					setODS(cm)
				}
			}
		}
	})
}

// Dispensing messages as dispensing systems send them (issue 10): the
// acting dispenser is the token's organisation, checked against the holder;
// no MessageHeader.sender, the prescriber's organisation in the message,
// are recorded and never used to refuse. A dispense notification names
// every line item of the prescription (Spine's ITEM_NOT_FOUND otherwise);
// the prescription takes the status it states.
func TestScenarioDispensingAsSystemsSendThem(t *testing.T) {
	forKinds(t, func(t *testing.T, b *testBroker, k rxKind) {
		r := postRx(t, b, k)
		home, other := r.home, newODS("DO")
		r.release(t)

		notification := func(items []string, status, replacementOf string) ([]byte, string) {
			body, id := fhirgen.DispenseNotification(r.g, home, r.statuses(items), status, replacementOf)
			return regressionShaped(body), id
		}
		partial := r.firstAnd("0003", "0001")
		body, n1 := notification(partial, "0003", "")
		r.refused(t, "the holder's notification (no sender, prescriber's Organization) from a non-holder",
			b.post(r.token(auth.RoleDispenser, other), body), 400, codeInvalidState)
		r.refused(t, "a prescriber posting it", b.post(r.token(auth.RolePrescriber, prescriber), body), 403, "")

		// Spine's ITEM_NOT_FOUND (record.py compare_line_items_for_dispense):
		// the notification names exactly the prescription's line items.
		extra := r.statuses(partial)
		extra["3f2504e0-4f89-41d3-9a0c-0305e82c3301"] = "0001"
		withExtra, _ := fhirgen.DispenseNotification(r.g, home, extra, "0003", "")
		r.refused(t, "a notification naming a line item the prescription does not have",
			b.post(r.token(auth.RoleDispenser, home), regressionShaped(withExtra)), 400, "ITEM_NOT_FOUND")
		if len(r.g.ItemIDs) > 1 {
			fewer := r.statuses(partial)
			delete(fewer, r.g.ItemIDs[len(r.g.ItemIDs)-1])
			withFewer, _ := fhirgen.DispenseNotification(r.g, home, fewer, "0003", "")
			r.refused(t, "a notification leaving a line item out",
				b.post(r.token(auth.RoleDispenser, home), regressionShaped(withFewer)), 400, "ITEM_NOT_FOUND")
		}

		r.ok(t, "the holder's notification (no sender, prescriber's Organization)", b.post(r.token(auth.RoleDispenser, home), body),
			state{status: "0003", items: partial, dispenser: home, title: hDispense})
		stored, err := b.App.Store.Current(context.Background(), r.id())
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := b.App.Store.Event(context.Background(), stored.Seq); err != nil || !bytes.Equal(ev.Body, body) {
			t.Errorf("the notification is not stored as sent: %v", err)
		}

		// A withdraw as the regression suite sends it (no owner, the
		// prescriber's organisation contained), by a non-holder and by the
		// holder.
		withdraw := regressionShaped(fhirgen.WithdrawTask(r.g, home, n1, "MU"))
		r.refused(t, "the holder's withdraw from a non-holder", r.task(other, withdraw), 400, codeInvalidState)
		r.ok(t, "withdraw (no owner, prescriber's Organization)", r.task(home, withdraw),
			state{status: "0002", items: r.all("0008"), dispenser: home, title: hWithdraw})

		// The status stated is taken (record.py update_for_dispense), even
		// when an item is still owed. The line item ids are GUIDs compared
		// as EPS compares them (upper-cased: dispense-notification.ts
		// mapMedicationDispenses): here sent in upper case.
		owed := r.firstAnd("0004", "0001")
		body, _ = notification(owed, "0006", "")
		body = upperLineItemIDs(body)
		r.ok(t, "stated Dispensed with an item owed, line item ids in upper case", b.post(r.token(auth.RoleDispenser, home), body),
			state{status: "0006", items: owed, dispenser: home, title: hDispense})

		claim, _ := fhirgen.ClaimItems(r.g, home, "", r.statuses(owed), "0006")
		claim = regressionShaped(claim)
		r.refused(t, "the holder's claim from a non-holder", b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, other), claim), 400, codeInvalidState)
		r.ok(t, "claim (prescriber's Organization contained)", b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, home), claim),
			state{status: "0008", items: owed, dispenser: home, title: hClaim})
	})
}

// upperLineItemIDs upper-cases the line item ids (the contained
// MedicationRequests' prescription-order-item-number identifiers) of a
// dispense notification.
func upperLineItemIDs(body []byte) []byte {
	return fhirgen.Mutate(body, func(m map[string]any) {
		for _, e := range m["entry"].([]any) {
			md := e.(map[string]any)["resource"].(map[string]any)
			if md["resourceType"] != "MedicationDispense" {
				continue
			}
			for _, c := range md["contained"].([]any) {
				mr := c.(map[string]any)
				if mr["resourceType"] != "MedicationRequest" {
					continue
				}
				for _, x := range mr["identifier"].([]any) {
					if id := x.(map[string]any); id["system"] == fhir.SystemLineItemID {
						id["value"] = strings.ToUpper(id["value"].(string))
					}
				}
			}
		}
	})
}

// A return as the regression suite sends it (no owner, the prescriber's
// organisation contained) is the holder's to send; another dispenser then
// releases it by ID. A cancellation without MessageHeader.sender is the
// prescribing organisation's (the token's); an unknown prescription is
// R-0008 with HTTP 400, and releasing one 400 RESOURCE_NOT_FOUND.
func TestScenarioReturnAndCancelAsSystemsSendThem(t *testing.T) {
	forKinds(t, func(t *testing.T, b *testBroker, k rxKind) {
		r := postRx(t, b, k)
		home, other := r.home, newODS("DO")
		r.release(t)
		ret := regressionShaped(fhirgen.ReturnTask(r.g, home, "0003"))
		r.refused(t, "the holder's return from a non-holder", r.task(other, ret), 400, codeInvalidState)
		r.ok(t, "return (no owner, prescriber's Organization)", r.task(home, ret),
			state{status: "0001", items: r.all("0007"), title: hReturn})
		r.ok(t, "released by ID elsewhere", r.releaseByID(other),
			state{status: "0002", items: r.all("0008"), dispenser: other, title: hRelease})

		cancel, _ := fhirgen.Cancellation(r.g, r.g.ItemIDs[0], "0001")
		noSender := fhirgen.Mutate(cancel, func(m map[string]any) {
			delete(m["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any), "sender")
		})
		r.keptElsewhere(t, "a cancellation without sender from another prescribing organisation",
			b.post(r.token(auth.RolePrescriber, "B81001"), noSender))
		if cancelAnswer(t, "a cancellation without sender", b.post(r.token(auth.RolePrescriber, prescriber), noSender), "R-0002") {
			r.changed(t, state{status: "0002", items: r.all("0008"), dispenser: other, title: hMarked}, 1)
		}

		unknown := newRx(t, b, k)
		cancelUnknown, _ := fhirgen.Cancellation(unknown.g, unknown.g.ItemIDs[0], "0001")
		res := b.post(r.token(auth.RolePrescriber, prescriber), cancelUnknown)
		if typ, code := rCode(res); res.Status != 400 || typ != "OperationOutcome" || code != "R-0008" {
			t.Errorf("cancel of an unknown prescription: %d %s %s, want 400 R-0008", res.Status, typ, code)
		}
		res = b.release(other, fhirgen.ShortID(prescriber))
		if res.Status != 400 || !res.outcome(t).hasCode("RESOURCE_NOT_FOUND") {
			t.Errorf("release of an unknown prescription: %d %s, want 400 RESOURCE_NOT_FOUND", res.Status, res.Body)
		}
	})
}
