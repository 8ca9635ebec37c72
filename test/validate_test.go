package test

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// TestValidate posts every kind of message the broker takes to
// POST /FHIR/R4/$validate, valid and invalid: a valid one is answered as the
// EPS FHIR API answers it (routes/debug/validate.ts: 200, an
// OperationOutcome with one informational issue); an invalid one with the
// very answer (status and issue) of the endpoint it is meant for; and
// nothing is ever stored: the event log does not grow, no prescription is
// released, dispensed or cancelled.
func TestValidate(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	const dispenser = "FA565"
	// A prescription that is in the store, To Be Dispensed, nominated to
	// FA565, and one that is not (its order is only validated).
	posted := postOrders(t, b, 1, fhirgen.Options{Performer: dispenser})[0]
	unposted, err := tmpl.Order(fhirgen.Options{Performer: dispenser})
	if err != nil {
		t.Fatal(err)
	}
	prescriberTok := b.token(auth.RolePrescriber, posted.Sender)
	dispenserTok := b.token(auth.RoleDispenser, dispenser)

	dn, _ := fhirgen.DispenseNotification(posted, dispenser, map[string]string{posted.ItemIDs[0]: "0001", posted.ItemIDs[1]: "0001",
		posted.ItemIDs[2]: "0001", posted.ItemIDs[3]: "0001"}, "0006", "")
	cancel, _ := fhirgen.Cancellation(unposted, unposted.ItemIDs[0], "0001")
	claim, _ := fhirgen.Claim(posted, dispenser, "")
	nhsFixture := func(rel string) []byte {
		return fhirgen.Redate(readFile(t, filepath.Join(fixtures, rel)), time.Now())
	}
	badChecksum := nhsFixture("errors/1-Process-Request-Send-400_INVALID_CHECKSUM.json")
	mixedTherapy := nhsFixture("errors/2-Process-Request-Send-400_Invalid_Course_of_Therapy_mixed.json")
	badIntent := nhsFixture("errors/4-Process-Request-Send-400_invalid_intent.json")
	dnMixedReasons := nhsFixture("errors/3-Process-Request-Dispense-400_Invalid_Value.json")

	processMessage := func(tok string) func(body []byte) *response {
		return func(body []byte) *response { return b.post(tok, body) }
	}
	endpoint := func(path, tok string) func(body []byte) *response {
		return func(body []byte) *response { return b.do("POST", path, tok, body) }
	}
	for _, tc := range []struct {
		name  string
		token string
		body  []byte
		valid bool
		// the endpoint the message is meant for, to compare an invalid
		// message's answer with (nil: none)
		real func(body []byte) *response
		code string // EPS code of an invalid message
	}{
		{name: "prescription-order", token: prescriberTok, body: unposted.Body, valid: true},
		{name: "prescription-order, asked by a dispenser", token: dispenserTok, body: unposted.Body, valid: true},
		{name: "prescription-order with a wrong check character", token: b.token(auth.RolePrescriber, factsOf(t, badChecksum).Sender), body: badChecksum,
			real: processMessage(b.token(auth.RolePrescriber, factsOf(t, badChecksum).Sender)), code: "INVALID_CHECKSUM"},
		{name: "prescription-order with mixed courses of therapy", token: b.token(auth.RolePrescriber, factsOf(t, mixedTherapy).Sender), body: mixedTherapy,
			real: processMessage(b.token(auth.RolePrescriber, factsOf(t, mixedTherapy).Sender))},
		{name: "prescription-order with an invalid intent", token: b.token(auth.RolePrescriber, factsOf(t, badIntent).Sender), body: badIntent,
			real: processMessage(b.token(auth.RolePrescriber, factsOf(t, badIntent).Sender))},
		{name: "prescription-order-update (cancel)", token: prescriberTok, body: cancel, valid: true},
		{name: "cancel with an unknown reason", token: prescriberTok, body: fhirgen.Mutate(cancel, func(m map[string]any) {
			mr := firstOfType(m, "MedicationRequest")
			mr["statusReason"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"] = "9999"
		}), real: processMessage(prescriberTok), code: "INVALID_VALUE"},
		{name: "dispense-notification", token: dispenserTok, body: dn, valid: true},
		{name: "dispense-notification, asked by a prescriber", token: prescriberTok, body: dn, valid: true},
		{name: "dispense-notification with different non-dispensing reasons", token: dispenserTok, body: dnMixedReasons,
			real: processMessage(dispenserTok), code: "INVALID_VALUE"},
		{name: "dispense-notification with an unknown item status", token: dispenserTok, body: fhirgen.Mutate(dn, func(m map[string]any) {
			md := firstOfType(m, "MedicationDispense")
			md["type"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"] = "0099"
		}), real: processMessage(dispenserTok)},
		{name: "Bundle of an event the broker does not take", token: prescriberTok, body: fhirgen.Mutate(unposted.Body, func(m map[string]any) {
			firstOfType(m, "MessageHeader")["eventCoding"].(map[string]any)["code"] = "prescription-order-response"
		}), real: processMessage(prescriberTok), code: "INVALID_VALUE"},
		{name: "release by ID", token: dispenserTok, body: releaseBody(t, dispenser, posted.ShortID), valid: true},
		{name: "nominated release", token: dispenserTok, body: releaseBody(t, dispenser, ""), valid: true},
		{name: "release with a wrong check character", token: dispenserTok, body: releaseBody(t, dispenser, "24F5DA-A83008-7EFE6Y"),
			real: endpoint("/FHIR/R4/Task/$release", dispenserTok), code: "INVALID_CHECKSUM"},
		{name: "return", token: dispenserTok, body: fhirgen.ReturnTask(posted, dispenser, "0003"), valid: true},
		{name: "withdraw", token: dispenserTok, body: fhirgen.WithdrawTask(posted, dispenser, "c8d0dc3b-a4b0-4a1e-9fa4-1f6f5a1b0c66", "MU"), valid: true},
		{name: "Task of an unknown status", token: dispenserTok, body: fhirgen.Mutate(fhirgen.ReturnTask(posted, dispenser, "0003"), func(m map[string]any) {
			m["status"] = "bogus"
		}), real: endpoint("/FHIR/R4/Task", dispenserTok)},
		{name: "claim", token: dispenserTok, body: claim, valid: true},
		{name: "claim with two insurances", token: dispenserTok, body: fhirgen.Mutate(claim, func(m map[string]any) {
			m["insurance"] = append(m["insurance"].([]any), m["insurance"].([]any)[0])
		}), real: endpoint("/FHIR/R4/Claim", dispenserTok)},
		{name: "not JSON", token: prescriberTok, body: []byte(`{"resourceType": "Bundle",`), real: processMessage(prescriberTok)},
		{name: "no resourceType", token: prescriberTok, body: []byte(`{"type": "message"}`), real: processMessage(prescriberTok)},
		{name: "a resource the broker does not take", token: prescriberTok, body: []byte(`{"resourceType": "Patient"}`), code: "INVALID_VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.events("")
			res := b.do("POST", "/FHIR/R4/$validate", tc.token, tc.body)
			if after := b.events(""); after != before {
				t.Errorf("$validate stored %d events", after-before)
			}
			oo := res.outcome(t)
			if tc.valid {
				if res.Status != 200 || len(oo.Issue) != 1 || oo.Issue[0].Severity != "information" || oo.Issue[0].Code != "informational" {
					t.Errorf("%d %s, want 200 with one informational issue", res.Status, res.Body)
				}
				return
			}
			if res.Status != 400 || oo.Issue[0].Severity != "error" {
				t.Errorf("%d %s, want 400 with an error", res.Status, res.Body)
			}
			if tc.code != "" && !oo.hasCode(tc.code) {
				t.Errorf("codes %v, want %s", oo.codes(), tc.code)
			}
			if tc.real != nil {
				want := tc.real(tc.body)
				if want.Status != res.Status || !reflect.DeepEqual(want.outcome(t).Issue, oo.Issue) {
					t.Errorf("$validate answers %d %s\nthe endpoint %d %s", res.Status, res.Body, want.Status, want.Body)
				}
			}
		})
	}

	// Nothing happened to either prescription.
	if st, holder := b.status(posted.ShortID); st != "0001" || holder != "" {
		t.Errorf("validated prescription %s is %s held by %q, want 0001 held by none", posted.ShortID, st, holder)
	}
	if n := b.events(unposted.ShortID); n != 0 {
		t.Errorf("the validated order and cancellation of %s left %d events", unposted.ShortID, n)
	}
	// The validated order can still be sent, once.
	if res := b.post(prescriberTok, unposted.Body); res.Status != 200 {
		t.Errorf("order after $validate: %d %s", res.Status, res.Body)
	}
}

// TestValidateAccess: $validate needs a token like every FHIR endpoint but
// metadata, and is for prescribers and dispensers (the EPS API's prescribing
// and dispensing apps); it takes POST only.
func TestValidateAccess(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	for _, tc := range []struct {
		name, method, token string
		status              int
	}{
		{"no token", "POST", "", 401},
		{"bad token", "POST", "not-a-token", 401},
		{"tracker", "POST", b.token(auth.RoleTracker, "X26"), 403},
		{"admin", "POST", b.token(auth.RoleAdmin, "X26"), 403},
		{"prescriber", "POST", b.token(auth.RolePrescriber, "A83008"), 200},
		{"dispenser", "POST", b.token(auth.RoleDispenser, "FA565"), 200},
		{"GET", "GET", b.token(auth.RolePrescriber, "A83008"), 405},
		{"GET without a token", "GET", "", 401},
	} {
		body := g.Body
		if tc.method == "GET" {
			body = nil
		}
		res := b.do(tc.method, "/FHIR/R4/$validate", tc.token, body)
		if res.Status != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.name, res.Status, tc.status, res.Body)
		}
		var oo map[string]any
		if json.Unmarshal(res.Body, &oo) != nil || oo["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: not an OperationOutcome: %s", tc.name, res.Body)
		}
	}
	if n := b.events(""); n != 0 {
		t.Errorf("%d events stored", n)
	}
}
