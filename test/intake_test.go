package test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Every signed NHS example order is accepted with a prescriber token for its
// sender, resending it answers 200 without a second record, and a nominated
// one enters its dispenser's ready queue (with a notification on NATS) while
// a non-nominated one enters none. Each runs in a fresh store: several
// examples share their Bundle.identifier and prescription ID. The examples
// are given today's dates (fhirgen.Redate): EPS refuses a repeat dispensing
// order whose validity has ended.
func TestNHSOrdersAccepted(t *testing.T) {
	for _, path := range orderFixtures(t) {
		rel, _ := filepath.Rel(fixtures, path)
		t.Run(rel, func(t *testing.T) {
			body := currentOrder(t, readFile(t, path), time.Now())
			f := factsOf(t, body)
			b := startBroker(t, "")
			tok := b.token(auth.RolePrescriber, f.Sender)

			var notes chan *nats.Msg
			if f.Performer != "" {
				notes = make(chan *nats.Msg, 4)
				sub, err := b.App.NATS.Conn.ChanSubscribe(broker.SubjectNotifyDispenser+f.Performer+".>", notes)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
			}

			res := b.post(tok, body)
			if res.Status != http.StatusOK {
				t.Fatalf("first post: status %d: %s", res.Status, res.Body)
			}
			oo := res.outcome(t)
			if oo.Issue[0].Severity != "information" || oo.Issue[0].Code != "informational" {
				t.Errorf("accepted answer is not an informational OperationOutcome: %s", res.Body)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("Content-Type %q", ct)
			}
			if n := b.events(f.ShortID); n != 1 {
				t.Fatalf("%d events stored for %s, want 1", n, f.ShortID)
			}
			res = b.post(tok, body)
			if res.Status != http.StatusOK {
				t.Fatalf("resend: status %d: %s", res.Status, res.Body)
			}
			if n := b.events(""); n != 1 {
				t.Errorf("resend stored something: %d events in the log, want 1", n)
			}

			// The stored message is the posted bytes, unchanged.
			cur, err := b.App.Store.Current(context.Background(), f.ShortID)
			if err != nil {
				t.Fatal(err)
			}
			if string(cur.Body) != string(body) {
				t.Error("stored message differs from the posted bytes")
			}
			if cur.Record.Status != "0001" || cur.Record.BundleID != f.BundleID {
				t.Errorf("record: status %s bundle %s", cur.Record.Status, cur.Record.BundleID)
			}
			for _, it := range cur.Record.Items {
				if it.Status != "0007" {
					t.Errorf("item %s status %s, want 0007", it.ID, it.Status)
				}
			}

			b.settle()
			nominated := f.Performer != "" && f.SiteType != "0004"
			if nominated {
				q, err := b.readyQueue(context.Background(), f.Performer, 25)
				if err != nil {
					t.Fatal(err)
				}
				if len(q) != 1 || q[0].PrescriptionID != f.ShortID {
					t.Errorf("ready queue of %s = %+v, want [%s]", f.Performer, q, f.ShortID)
				}
				select {
				case m := <-notes:
					var n broker.Notification
					if err := json.Unmarshal(m.Data, &n); err != nil || n.PrescriptionID != f.ShortID || n.Event != broker.NotifyReady {
						t.Errorf("notification on %s: %s (%v)", m.Subject, m.Data, err)
					}
				case <-time.After(5 * time.Second):
					t.Error("no notification on " + broker.SubjectNotifyDispenser + f.Performer + ".>")
				}
			} else if f.Performer != "" {
				if q, _ := b.readyQueue(context.Background(), f.Performer, 25); len(q) != 0 {
					t.Errorf("non-nominated order is in a queue: %+v", q)
				}
			}
			if !nominated {
				if cur.Record.Nominated != "" {
					t.Errorf("non-nominated order recorded as nominated to %s", cur.Record.Nominated)
				}
			}
		})
	}
}

// Each NHS error example is rejected as its paired response says, and leaves
// nothing stored; each unsigned Prepare bundle is MISSING_DIGITAL_SIGNATURE.
func TestNHSErrorExamplesRejected(t *testing.T) {
	b := startBroker(t, "")
	type pair struct{ request, response string }
	var cases []pair
	reqs, _ := filepath.Glob(filepath.Join(fixtures, "errors", "*-Process-Request-Send-400_*.json"))
	for _, r := range reqs {
		cases = append(cases, pair{r, strings.Replace(r, "-Request-", "-Response-", 1)})
	}
	if len(cases) < 3 {
		t.Fatalf("only %d error examples", len(cases))
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.request), func(t *testing.T) {
			body := readFile(t, c.request)
			var want outcome
			if err := json.Unmarshal(readFile(t, c.response), &want); err != nil {
				t.Fatal(err)
			}
			res := b.post(b.token(auth.RolePrescriber, factsOf(t, body).Sender), body)
			if res.Status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", res.Status, res.Body)
			}
			got := res.outcome(t)
			for _, code := range want.codes() {
				if !got.hasCode(code) {
					t.Errorf("answer lacks code %s: %s", code, res.Body)
				}
			}
			if len(want.Issue[0].Expression) > 0 && strings.Join(got.Issue[0].Expression, ",") != strings.Join(want.Issue[0].Expression, ",") {
				t.Errorf("expression %v, want %v", got.Issue[0].Expression, want.Issue[0].Expression)
			}
			if want.Issue[0].Code != "" && got.Issue[0].Code != want.Issue[0].Code {
				t.Errorf("issue code %q, want %q", got.Issue[0].Code, want.Issue[0].Code)
			}
			if got.Issue[0].Severity != "error" || got.Issue[0].Diagnostics == "" && len(got.Issue[0].Details.Coding) == 0 {
				t.Errorf("issue does not say what is wrong: %s", res.Body)
			}
		})
	}
	if strings.Contains(filepath.Base(cases[0].request), "CHECKSUM") {
		// the NHS response names FAILURE_TO_PROCESS_MESSAGE; the contract names INVALID_CHECKSUM too
		res := b.post(b.token(auth.RolePrescriber, "RBA"), readFile(t, cases[0].request))
		if !res.outcome(t).hasCode("INVALID_CHECKSUM") {
			t.Errorf("checksum error lacks INVALID_CHECKSUM: %s", res.Body)
		}
	}

	var prepares []string
	filepath.WalkDir(fixtures, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), "Prepare-Request") {
			prepares = append(prepares, path)
		}
		return nil
	})
	for _, p := range prepares {
		body := readFile(t, p)
		f := factsOf(t, body)
		res := b.post(b.token(auth.RolePrescriber, f.Sender), body)
		if res.Status != http.StatusBadRequest || !res.outcome(t).hasCode("MISSING_DIGITAL_SIGNATURE") {
			// Prepare bundles whose other content is also invalid may fail for that first.
			if !strings.Contains(p, "errors") {
				t.Errorf("%s: status %d, want 400 MISSING_DIGITAL_SIGNATURE: %s", p, res.Status, res.Body)
			}
		}
	}
	if n := b.events(""); n != 0 {
		t.Errorf("rejected messages left %d events stored", n)
	}
}

// Orders EPS accepts although the broker refused them before issue 10: a
// sender-less order (the acting organisation is the token's), a sender given
// as a reference (resolved to its ODS code), lower-case and '-' ODS codes
// (Spine's REGEX_ALPHANUMERIC8), ODS fields Spine does not check, the
// short-form ID of another system. Each is stored with the token's
// organisation as prescriber and, when nominated, queued for its dispenser
// with a notification on the dispenser's subject.
func TestOrderSendersAndODSCodes(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	entryOf := func(m map[string]any, typ string) map[string]any {
		for _, e := range entries(m) {
			if resource(e)["resourceType"] == typ {
				return e.(map[string]any)
			}
		}
		return nil
	}
	header := func(m map[string]any) map[string]any { return firstOfType(m, "MessageHeader") }
	performer := func(ods string) func(m map[string]any) {
		return func(m map[string]any) {
			for _, mr := range medicationRequests(m) {
				mr["dispenseRequest"].(map[string]any)["performer"].(map[string]any)["identifier"].(map[string]any)["value"] = ods
			}
			header(m)["destination"].([]any)[0].(map[string]any)["receiver"].(map[string]any)["identifier"].(map[string]any)["value"] = ods
		}
	}
	for _, tc := range []struct {
		name, performer string
		edit            func(m map[string]any)
	}{
		{"no sender", "FA565", func(m map[string]any) { delete(header(m), "sender") }},
		{"sender a reference to the Organization", "FA565", func(m map[string]any) {
			header(m)["sender"] = map[string]any{"reference": entryOf(m, "Organization")["fullUrl"]}
		}},
		{"sender a reference to the PractitionerRole", "FA565", func(m map[string]any) {
			header(m)["sender"] = map[string]any{"reference": entryOf(m, "PractitionerRole")["fullUrl"]}
		}},
		{"performer in lower case with '-'", "fa-565", performer("fa-565")},
		{"performer of one character", "X", performer("X")},
		// Fields neither the facade nor Spine checks as ODS codes
		// (common.py checks agentOrganization and nominatedPerformer only,
		// create.py hcplOrgCode): a sender that is no ODS code names no
		// organisation, so the token's acts.
		{"sender identifier not an ODS code", "FA565", func(m map[string]any) {
			header(m)["sender"].(map[string]any)["identifier"].(map[string]any)["value"] = "A83 008/x"
		}},
		{"receiver not an ODS code", "FA565", func(m map[string]any) {
			header(m)["destination"].([]any)[0].(map[string]any)["receiver"].(map[string]any)["identifier"].(map[string]any)["value"] = "FA 565!"
		}},
		{"generalPractitioner not an ODS code", "FA565", func(m map[string]any) {
			firstOfType(m, "Patient")["generalPractitioner"] = []any{map[string]any{"identifier": map[string]any{
				"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A83 008!"}}}
		}},
		// prescription.ts convertPrescriptionIds reads groupIdentifier.value
		// whatever its system (NHS example-b sends prescription-short-form).
		{"groupIdentifier of the prescription-short-form system", "FA565", func(m map[string]any) {
			for _, mr := range medicationRequests(m) {
				mr["groupIdentifier"].(map[string]any)["system"] = "https://fhir.nhs.uk/Id/prescription-short-form"
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := tmpl.Order(fhirgen.Options{})
			if err != nil {
				t.Fatal(err)
			}
			body := fhirgen.Mutate(g.Body, tc.edit)
			notes := make(chan *nats.Msg, 4)
			sub, err := b.App.NATS.Conn.ChanSubscribe(broker.DispenserNotifySubject(tc.performer, broker.NotifyReady), notes)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()

			res := b.post(b.token(auth.RolePrescriber, "A83008"), body)
			if res.Status != http.StatusOK {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
			cur, err := b.App.Store.Current(context.Background(), g.ShortID)
			if err != nil {
				t.Fatal(err)
			}
			if cur.Record.Status != "0001" || cur.Record.Prescriber != "A83008" || cur.Record.Nominated != tc.performer {
				t.Errorf("record: status %s prescriber %q nominated %q", cur.Record.Status, cur.Record.Prescriber, cur.Record.Nominated)
			}
			b.settle()
			q, err := b.readyQueue(context.Background(), tc.performer, 25)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(q, func(e service.QueueEntry) bool { return e.PrescriptionID == g.ShortID }) {
				t.Errorf("ready queue of %s = %+v, without %s", tc.performer, q, g.ShortID)
			}
			select {
			case m := <-notes:
				if !strings.Contains(string(m.Data), g.ShortID) {
					t.Errorf("notification %s", m.Data)
				}
			case <-time.After(5 * time.Second):
				t.Error("no notification on " + broker.DispenserNotifySubject(tc.performer, broker.NotifyReady))
			}
		})
	}
}

// A sender naming another organisation than the token's, as an identifier
// or as a reference, is 403 and stores nothing.
func TestOrderSenderOfAnotherOrganisation(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
	}{
		{"identifier", func(m map[string]any) {}},
		{"reference to the Organization", func(m map[string]any) {
			for _, e := range entries(m) {
				if resource(e)["resourceType"] == "Organization" {
					firstOfType(m, "MessageHeader")["sender"] = map[string]any{"reference": e.(map[string]any)["fullUrl"]}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := tmpl.Order(fhirgen.Options{})
			res := b.post(b.token(auth.RolePrescriber, "B81001"), fhirgen.Mutate(g.Body, tc.edit))
			if res.Status != http.StatusForbidden || !res.outcome(t).hasCode("ACCESS_DENIED") {
				t.Fatalf("status %d: %s", res.Status, res.Body)
			}
		})
	}
	if n := b.events(""); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// Every subject the broker builds from an ODS code is safe: codes of
// Spine's characters stand as they are, anything else is encoded into one
// token without '.', '*', '>' or white space, distinct from every code.
func TestSubjectToken(t *testing.T) {
	for ods, want := range map[string]string{"FA565": "FA565", "fa-565": "fa-565", "X": "X", "*": "*"} {
		if got := broker.SubjectToken(ods); got != want {
			t.Errorf("SubjectToken(%q) = %q, want %q", ods, got, want)
		}
	}
	seen := map[string]string{}
	for _, ods := range []string{"FA.565", "FA 565", "F>", "F*", "", "_46412e353635", "FA\t1", "Ä1"} {
		tok := broker.SubjectToken(ods)
		if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Errorf("SubjectToken(%q) = %q is not one safe token", ods, tok)
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("SubjectToken(%q) = SubjectToken(%q) = %q", ods, other, tok)
		}
		seen[tok] = ods
		if got := broker.DispenserNotifySubject(ods, broker.NotifyReady); strings.Count(got, ".") != 4 {
			t.Errorf("DispenserNotifySubject(%q) = %q", ods, got)
		}
	}
}

// currentOrder is the NHS example order body dated today as Spine dates a
// prescription (its validityPeriod.start, else its requester's signature
// time: rx.PrescriptionDate). fhirgen.Redate dates a message by its
// authoredOn, validity start or Provenance.recorded; an example whose
// signature was made days after its Provenance was recorded would otherwise
// be future-dated.
func currentOrder(t *testing.T, raw []byte, now time.Time) []byte {
	t.Helper()
	body := fhirgen.Redate(raw, now)
	m, err := fhir.DecodeMessage(body)
	if err != nil {
		return body
	}
	o, err := m.Order(now)
	if err != nil {
		return body
	}
	if days := fhirgen.DaysBetween(rx.PrescriptionDate(o.RxOrder(), now), now); days != 0 {
		body = fhirgen.ShiftDates(body, days)
	}
	return body
}

// ODS codes are compared as sent: an order nominated to "fa-565" waits for
// "fa-565", and a dispenser whose token says "FA-565" is another
// organisation (Spine's REGEX_ALPHANUMERIC8 allows both cases; nothing in
// EPS folds them).
func TestODSCodesComparedAsSent(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, err := tmpl.Order(fhirgen.Options{Performer: "fa-565"})
	if err != nil {
		t.Fatal(err)
	}
	if res := b.post(b.token(auth.RolePrescriber, "A83008"), g.Body); res.Status != http.StatusOK {
		t.Fatalf("order: %d %s", res.Status, res.Body)
	}
	b.settle()
	if ids, _ := released(t, b.release("FA-565", "")); len(ids) != 0 {
		t.Errorf("FA-565 was handed %v, nominated to fa-565", ids)
	}
	if ids, _ := released(t, b.release("fa-565", "")); len(ids) != 1 || ids[0] != g.ShortID {
		t.Errorf("fa-565 was handed %v, want [%s]", ids, g.ShortID)
	}
}
