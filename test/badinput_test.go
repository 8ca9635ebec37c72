package test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// entries returns the bundle's entry list from a generic decoding.
func entries(m map[string]any) []any { return m["entry"].([]any) }

func resource(e any) map[string]any { return e.(map[string]any)["resource"].(map[string]any) }

// medicationRequests returns the MedicationRequest resources of a bundle.
func medicationRequests(m map[string]any) []map[string]any {
	var out []map[string]any
	for _, e := range entries(m) {
		if r := resource(e); r["resourceType"] == "MedicationRequest" {
			out = append(out, r)
		}
	}
	return out
}

func firstOfType(m map[string]any, typ string) map[string]any {
	for _, e := range entries(m) {
		if r := resource(e); r["resourceType"] == typ {
			return r
		}
	}
	return nil
}

// Generated bad inputs: each answers its 4xx OperationOutcome, saying what is
// wrong and where, and none leaves anything stored.
func TestBadInputRejectedAndNothingStored(t *testing.T) {
	b := startBroker(t, "", func(c *configT) { c.MaxBodyBytes = 64 << 10 })
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	good := func() []byte {
		g, err := tmpl.Order(fhirgen.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return g.Body
	}
	mutate := func(edit func(m map[string]any)) []byte { return fhirgen.Mutate(good(), edit) }
	prescriber := b.token(auth.RolePrescriber, "A83008")

	cases := []struct {
		name   string
		body   []byte
		token  string
		status int
		code   string // an EPS code the answer must carry ("" to skip)
		where  string // a part of the FHIRPath the answer must name ("" to skip)
	}{
		{"not JSON", []byte(`{"resourceType": "Bundle",`), prescriber, 400, "INVALID_VALUE", ""},
		{"a JSON array", []byte(`[{"resourceType":"Bundle"}]`), prescriber, 400, "INVALID_VALUE", ""},
		{"wrong resourceType", mutate(func(m map[string]any) { m["resourceType"] = "Parameters" }), prescriber, 400, "INVALID_VALUE", "resourceType"},
		{"not a message bundle", mutate(func(m map[string]any) { m["type"] = "collection" }), prescriber, 400, "INVALID_VALUE", "type"},
		{"Bundle.identifier not a UUID", mutate(func(m map[string]any) { m["identifier"].(map[string]any)["value"] = "not-a-uuid" }), prescriber, 400, "FAILURE_TO_PROCESS_MESSAGE", "hl7EventID"},
		{"no MessageHeader", mutate(func(m map[string]any) { m["entry"] = entries(m)[1:] }), prescriber, 400, "", "MessageHeader"},
		{"five items", mutate(func(m map[string]any) {
			e := entries(m)
			extra := fhirgen.Mutate(mustJSON(e[1]), func(x map[string]any) {
				id := uuid.NewString()
				x["fullUrl"] = "urn:uuid:" + id
				x["resource"].(map[string]any)["identifier"].([]any)[0].(map[string]any)["value"] = id
			})
			m["entry"] = append(e, mustDecode(extra))
		}), prescriber, 400, "FAILURE_TO_PROCESS_MESSAGE", "lineItems over expected max count of 4"},
		{"mixed prescription IDs", mutate(func(m map[string]any) {
			medicationRequests(m)[1]["groupIdentifier"].(map[string]any)["value"] = fhirgen.ShortID("A83008")
		}), prescriber, 400, "INVALID_VALUE", "groupIdentifier"},
		{"bad NHS number", mutate(func(m map[string]any) {
			firstOfType(m, "Patient")["identifier"].([]any)[0].(map[string]any)["value"] = "9449305553"
		}), prescriber, 400, "FAILURE_TO_PROCESS_MESSAGE", "nhsNumber is not valid"},
		{"bad line item UUID", mutate(func(m map[string]any) {
			medicationRequests(m)[0]["identifier"].([]any)[0].(map[string]any)["value"] = "item-1"
		}), prescriber, 400, "FAILURE_TO_PROCESS_MESSAGE", "item-1 is not a valid GUID format"},
		{"bad long-form ID", mutate(func(m map[string]any) {
			for _, mr := range medicationRequests(m) {
				ext := mr["groupIdentifier"].(map[string]any)["extension"].([]any)[0].(map[string]any)
				ext["valueIdentifier"].(map[string]any)["value"] = "20ba5fb5"
			}
		}), prescriber, 400, "INVALID_VALUE", "Extension-DM-PrescriptionId"},
		{"dangling reference", mutate(func(m map[string]any) {
			medicationRequests(m)[0]["requester"].(map[string]any)["reference"] = "urn:uuid:" + uuid.NewString()
		}), prescriber, 400, "INVALID_VALUE", "requester"},
		{"bad check character", mutate(func(m map[string]any) {
			id := medicationRequests(m)[0]["groupIdentifier"].(map[string]any)["value"].(string)
			bad := id[:19] + map[bool]string{true: "1", false: "2"}[id[19] != '1']
			for _, mr := range medicationRequests(m) {
				mr["groupIdentifier"].(map[string]any)["value"] = bad
			}
		}), prescriber, 400, "INVALID_CHECKSUM", "groupIdentifier"},
		{"no signature", mutate(func(m map[string]any) {
			var keep []any
			for _, e := range entries(m) {
				if resource(e)["resourceType"] != "Provenance" {
					keep = append(keep, e)
				}
			}
			m["entry"] = keep
		}), prescriber, 400, "MISSING_DIGITAL_SIGNATURE", ""},
		// Refused by EPS (issue 10): each with its EPS code.
		{"Bundle.identifier of another system", mutate(func(m map[string]any) {
			m["identifier"].(map[string]any)["system"] = "https://example.org/id"
		}), prescriber, 400, "TOO_FEW_VALUES_SUBMITTED", "Bundle.identifier"},
		{"authoredOn differs between items", mutate(func(m map[string]any) {
			medicationRequests(m)[1]["authoredOn"] = time.Now().AddDate(0, 0, -1).Format(time.RFC3339)
		}), prescriber, 400, "INVALID_VALUE", "authoredOn"},
		{"telecom without use", mutate(func(m map[string]any) {
			firstOfType(m, "Practitioner")["telecom"] = []any{map[string]any{"system": "phone", "value": "01234567890"}}
		}), prescriber, 400, "MISSING_VALUE", "telecom[0].use"},
		{"two SNOMED codings", mutate(func(m map[string]any) {
			mr := medicationRequests(m)[0]
			c := mr["medicationCodeableConcept"].(map[string]any)
			c["coding"] = append(c["coding"].([]any), map[string]any{"system": "http://snomed.info/sct", "code": "323509004"})
		}), prescriber, 400, "TOO_MANY_VALUES_SUBMITTED", "medicationCodeableConcept"},
		{"signature not the requester's", mutate(func(m map[string]any) {
			sig := firstOfType(m, "Provenance")["signature"].([]any)[0].(map[string]any)
			sig["who"] = map[string]any{"reference": "urn:uuid:" + uuid.NewString()}
		}), prescriber, 400, "MISSING_DIGITAL_SIGNATURE", ""},
		// Spine's window check (create.py check_repeat_dispense_window); the
		// UK Core authorisationExpiryDate, which the facade refuses first
		// when past (prescription.ts extractReviewDate), is left out.
		{"eRD validity ended", fhirgen.Mutate(fhirgen.RepeatDispensing(good(), 5, 28, time.Now().AddDate(-1, 0, -7)), func(m map[string]any) {
			for _, mr := range medicationRequests(m) {
				var keep []any
				for _, x := range mr["extension"].([]any) {
					if x.(map[string]any)["url"] != fhir.ExtUKCoreRepeatInformation {
						keep = append(keep, x)
					}
				}
				mr["extension"] = keep
			}
		}),
			prescriber, 400, "FAILURE_TO_PROCESS_MESSAGE", "validityPeriod.end"},
		{"eRD authorisation expired", fhirgen.RepeatDispensing(good(), 5, 28, time.Now().AddDate(-1, 0, -7)),
			prescriber, 400, "INVALID_VALUE", "authorisationExpiryDate is not in the future"},
		{"eRD validity ends beyond 12 months", fhirgen.Mutate(fhirgen.RepeatDispensing(good(), 5, 28, time.Now()), func(m map[string]any) {
			for _, mr := range medicationRequests(m) {
				mr["dispenseRequest"].(map[string]any)["validityPeriod"].(map[string]any)["end"] = time.Now().AddDate(1, 0, 2).Format(time.DateOnly)
			}
		}), prescriber, 400, "FAILURE_TO_PROCESS_MESSAGE", "validityPeriod.end"},
		{"sender a PractitionerRole of another organisation", mutate(func(m map[string]any) {
			for _, e := range entries(m) {
				if resource(e)["resourceType"] == "PractitionerRole" {
					firstOfType(m, "MessageHeader")["sender"] = map[string]any{"reference": e.(map[string]any)["fullUrl"]}
				}
			}
		}), b.token(auth.RolePrescriber, "B81001"), 403, "ACCESS_DENIED", "sender"},
		{"oversized body", append(good(), bytes.Repeat([]byte(" "), 70<<10)...), prescriber, 413, "", ""},
		{"sender is not the token's organisation", good(), b.token(auth.RolePrescriber, "B81001"), 403, "", ""},
		{"dispenser may not send orders", good(), b.token(auth.RoleDispenser, "A83008"), 403, "", ""},
		{"no token", good(), "", 401, "", ""},
		{"bad token", good(), "eyJhbGciOiJub25lIn0.e30.", 401, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := b.post(tc.token, tc.body)
			if res.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.Status, tc.status, res.Body)
			}
			oo := res.outcome(t)
			is := oo.Issue[0]
			if is.Severity != "error" || is.Code == "" {
				t.Errorf("issue severity %q code %q", is.Severity, is.Code)
			}
			if is.Diagnostics == "" {
				t.Errorf("no diagnostics: %s", res.Body)
			}
			if tc.code != "" && !oo.hasCode(tc.code) {
				t.Errorf("answer lacks %s: %s", tc.code, res.Body)
			}
			if tc.where != "" && !strings.Contains(strings.Join(is.Expression, " ")+is.Diagnostics, tc.where) {
				t.Errorf("answer does not say where (%s): %s", tc.where, res.Body)
			}
			if tc.status == 401 && res.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	if n := b.events(""); n != 0 {
		t.Errorf("bad input left %d events stored", n)
	}
}

// Another bundle reusing an accepted prescription ID is refused; the same
// bundle again is not.
func TestDuplicatePrescriptionID(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	first, _ := tmpl.Order(fhirgen.Options{})
	tok := b.token(auth.RolePrescriber, first.Sender)
	if res := b.post(tok, first.Body); res.Status != 200 {
		t.Fatalf("first: %d %s", res.Status, res.Body)
	}
	other, _ := tmpl.Order(fhirgen.Options{ShortID: first.ShortID})
	res := b.post(tok, other.Body)
	if res.Status != 400 || !res.outcome(t).hasCode("DUPLICATE_PRESCRIPTION_ID") {
		t.Fatalf("reuse of %s: status %d %s", first.ShortID, res.Status, res.Body)
	}
	if res := b.post(tok, first.Body); res.Status != 200 {
		t.Errorf("resend after the duplicate: %d %s", res.Status, res.Body)
	}
	if n := b.events(first.ShortID); n != 1 {
		t.Errorf("%d events for %s, want 1", n, first.ShortID)
	}
}

// X-Request-ID: the same key with the same request answers as the first time
// and changes nothing; the same key with another request is refused;
// X-Correlation-ID is echoed.
func TestRequestIDIdempotency(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	tok := b.token(auth.RolePrescriber, g.Sender)
	key := uuid.NewString()
	first := b.post(tok, g.Body, "X-Request-ID", key, "X-Correlation-ID", "corr-1")
	if first.Status != 200 || first.Header.Get("X-Correlation-ID") != "corr-1" || first.Header.Get("X-Request-ID") != key {
		t.Fatalf("first: %d %v %s", first.Status, first.Header, first.Body)
	}
	again := b.post(tok, g.Body, "X-Request-ID", key)
	if again.Status != 200 || !bytes.Equal(again.Body, first.Body) || again.Header.Get("X-Idempotent-Replay") != "true" {
		t.Errorf("replay: %d %s (first %s)", again.Status, again.Body, first.Body)
	}
	other, _ := tmpl.Order(fhirgen.Options{})
	conflict := b.post(tok, other.Body, "X-Request-ID", key)
	if conflict.Status != http.StatusConflict {
		t.Errorf("same key, other body: %d %s", conflict.Status, conflict.Body)
	}
	if n := b.events(""); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
	// A rejected request's answer is replayed too, and a different user's
	// key space is separate.
	bad := []byte(`{"resourceType":"Bundle"}`)
	k2 := uuid.NewString()
	r1 := b.post(tok, bad, "X-Request-ID", k2)
	r2 := b.post(tok, bad, "X-Request-ID", k2)
	if r1.Status != 400 || r2.Status != 400 || !bytes.Equal(r1.Body, r2.Body) {
		t.Errorf("rejected replay: %d/%d", r1.Status, r2.Status)
	}
	r3 := b.post(b.token(auth.RolePrescriber, "B81001"), other.Body, "X-Request-ID", key)
	if r3.Status != 403 {
		t.Errorf("another organisation's request with the same key: %d %s", r3.Status, r3.Body)
	}
}

// A post-dated order is stored as a future instance (9001) and waits in no
// queue.
func TestPostDatedOrder(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	start := time.Now().AddDate(0, 0, 10).Format("2006-01-02")
	today := time.Now().UTC().Format(time.DateOnly) // fhirgen dates the order today
	body := bytes.ReplaceAll(g.Body, []byte(`"start": "`+today+`"`), []byte(`"start": "`+start+`"`))
	if res := b.post(b.token(auth.RolePrescriber, g.Sender), body); res.Status != 200 {
		t.Fatalf("%d %s", res.Status, res.Body)
	}
	cur, err := b.App.Store.Current(t.Context(), g.ShortID)
	if err != nil || cur.Record.Status != "9001" {
		t.Fatalf("status %v %v, want 9001", cur, err)
	}
	b.settle()
	if q, _ := b.readyQueue(t.Context(), g.Performer, 25); len(q) != 0 {
		t.Errorf("post-dated order in the queue: %+v", q)
	}
}

// The service endpoints: metadata without a token, health, readiness,
// metrics per route and stage, and OperationOutcomes for unknown paths.
func TestServiceEndpoints(t *testing.T) {
	b := startBroker(t, "")
	res := b.do("GET", "/FHIR/R4/metadata", "", nil)
	if res.Status != 200 || !bytes.Contains(res.Body, []byte(`"CapabilityStatement"`)) || !bytes.Contains(res.Body, []byte("prescription-order")) {
		t.Errorf("metadata: %d %s", res.Status, res.Body)
	}
	if res := b.do("GET", "/healthz", "", nil); res.Status != 200 {
		t.Errorf("healthz %d", res.Status)
	}
	if res := b.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Errorf("readyz %d %s", res.Status, res.Body)
	}
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	b.post(b.token(auth.RolePrescriber, g.Sender), g.Body)
	res = b.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`eps_http_requests_total{code="200",method="POST",route="POST /FHIR/R4/$process-message"} 1`,
		`eps_intake_stage_duration_seconds_count{stage="validate"} 1`,
		`eps_intake_stage_duration_seconds_count{stage="store"} 1`,
		`eps_jetstream_publish_duration_seconds_count{outcome="ok",stream="EPS_EVENTS"} 1`,
		`eps_orders_total{outcome="accepted"} 1`,
	} {
		if !bytes.Contains(res.Body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if res := b.do("GET", "/FHIR/R4/Nothing", b.token(auth.RoleTracker, "A83008"), nil); res.Status != 404 {
		t.Errorf("unknown path: %d", res.Status)
	} else {
		res.outcome(t)
	}
	if res := b.do("GET", "/FHIR/R4/Nothing", "", nil); res.Status != 401 {
		t.Errorf("unknown path without token: %d (must not tell what exists)", res.Status)
	}
	if res := b.do("POST", "/FHIR/R4/metadata", "", []byte(`{}`)); res.Status != 405 || res.Header.Get("Allow") != "GET" {
		t.Errorf("POST metadata: %d", res.Status)
	}
	if res := b.do("GET", "/FHIR/R4/$process-message", b.token(auth.RolePrescriber, "A83008"), nil); res.Status != 405 {
		t.Errorf("GET $process-message: %d", res.Status)
	}
	if res := b.do("BREW", "/", "", nil); res.Status != 404 {
		t.Errorf("BREW /: %d", res.Status)
	}
	if res := b.do("GET", "/metrics", "", nil); !bytes.Contains(res.Body, []byte(`method="other"`)) || bytes.Contains(res.Body, []byte(`BREW`)) {
		t.Error("an unknown method must be counted as method=\"other\"")
	}
	if res := b.post(b.token(auth.RolePrescriber, "A83008"), []byte(`<Bundle/>`), "Content-Type", "application/fhir+xml"); res.Status != 415 {
		t.Errorf("XML: %d", res.Status)
	}
}
