package fhir

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Paths in order4Items used by the cases below.
const (
	longIDPath  = "groupIdentifier.extension('" + ExtPrescriptionLongID + "').valueIdentifier.value"
	siteTypeExt = "dispenseRequest.extension('" + ExtPerformerSiteType + "').valueCoding.code"
	rxTypeExt   = "extension('" + ExtPrescriptionType + "').valueCoding.code"
)

// eachItem applies fn to every MedicationRequest.
func eachItem(fn func(r map[string]any)) func(b bundle) {
	return func(b bundle) { eachOfType(b, "MedicationRequest", fn) }
}

// onEntry applies fn to the resource of entry k.
func onEntry(k int, fn func(r map[string]any)) func(b bundle) {
	return func(b bundle) { fn(res(b, k)) }
}

// setAt sets val at path in the resource of entry k.
func setAt(k int, val any, path ...any) func(b bundle) {
	return onEntry(k, func(r map[string]any) { set(r, val, path...) })
}

// setOnItems sets val at path in every MedicationRequest.
func setOnItems(val any, path ...any) func(b bundle) {
	return eachItem(func(r map[string]any) { set(r, val, path...) })
}

// newURN is a fresh urn:uuid.
func newURN() string { return "urn:uuid:" + uuid.NewString() }

// validShortID makes a well-formed short-form ID with a right check
// character.
func validShortID(body string) string { return body + string(ShortIDCheckChar(body)) }

func TestBadInputs(t *testing.T) {
	base := readFixture(t, order4Items)
	edit := func(fn func(b bundle)) []byte { return mutate(t, base, fn) }
	raw := func(fn func(v bundle) any) []byte {
		var b bundle
		if err := json.Unmarshal(base, &b); err != nil {
			t.Fatal(err)
		}
		out, _ := json.Marshal(fn(b))
		return out
	}
	for _, tc := range []struct {
		name, code, issueType, expr string
		in                          any // the body, or an edit of base
	}{
		// DecodeMessage
		{"not JSON", CodeInvalidValue, "structure", "Bundle", base[:len(base)/2]},
		{"trailing garbage", CodeInvalidValue, "structure", "Bundle", append(bytes.Clone(base), '}')},
		{"not UTF-8", CodeInvalidValue, "structure", "Bundle", bytes.Replace(base, []byte("HALLGARTH"), []byte("HALL\xffGARTH"), 1)},
		{"JSON array", CodeInvalidValue, "structure", "Bundle", raw(func(b bundle) any { return []any{b} })},
		{"JSON string", CodeInvalidValue, "structure", "Bundle", raw(func(b bundle) any { return b["resourceType"] })},
		{"wrong resourceType", CodeInvalidValue, "value", "Bundle.resourceType", edit(func(b bundle) { b["resourceType"] = "Patient" })},
		{"no resourceType", CodeMissingValue, "required", "Bundle.resourceType", edit(func(b bundle) { delete(b, "resourceType") })},
		{"resourceType not a string", CodeInvalidValue, "structure", "Bundle.resourceType", edit(func(b bundle) { b["resourceType"] = 1 })},
		{"resourceType twice", CodeInvalidValue, "structure", "Bundle.resourceType",
			bytes.Replace(base, []byte(`"resourceType": "Bundle",`), []byte(`"resourceType": "Bundle", "resourceType": "Bundle",`), 1)},
		{"not a message", CodeInvalidValue, "value", "Bundle.type", edit(func(b bundle) { b["type"] = "document" })},
		{"bad Bundle.identifier UUID", CodeFailureToProcessMessage, "processing", "Bundle.identifier.value", edit(func(b bundle) { set(b, "46183abc-9fad-4673-85db", "identifier", "value") })},
		{"no Bundle.identifier", CodeTooFewValues, "invalid", "Bundle.identifier", edit(func(b bundle) { delete(b, "identifier") })},
		{"Bundle.identifier not an object", CodeInvalidValue, "structure", "Bundle.identifier", edit(func(b bundle) { b["identifier"] = "46183abc-9fad-4673-85db-ce2cb6614732" })},
		{"Bundle.identifier.value a number", CodeInvalidValue, "structure", "Bundle.identifier.value", edit(func(b bundle) { set(b, 7, "identifier", "value") })},
		{"no entry", CodeMissingValue, "required", "Bundle.entry", edit(func(b bundle) { delete(b, "entry") })},
		{"empty entry", CodeMissingValue, "required", "Bundle.entry", edit(func(b bundle) { b["entry"] = []any{} })},
		{"entry not an array", CodeInvalidValue, "structure", "Bundle.entry", edit(func(b bundle) { b["entry"] = map[string]any{} })},
		{"entry without resource", CodeMissingValue, "required", "Bundle.entry[5].resource", edit(func(b bundle) { delete(entries(b)[5].(map[string]any), "resource") })},
		{"resource without resourceType", CodeMissingValue, "required", "Bundle.entry[7].resource.resourceType", onEntry(7, func(r map[string]any) { delete(r, "resourceType") })},
		{"resourceType null (null is absent)", CodeMissingValue, "required", "Bundle.entry[7].resource.resourceType", setAt(7, nil, "resourceType")},
		{"no MessageHeader", CodeMissingValue, "required", "Bundle.entry.resource.ofType(MessageHeader)", edit(func(b bundle) { b["entry"] = entries(b)[1:] })},
		{"MessageHeader not first", CodeInvalidValue, "invalid", "Bundle.entry[0].resource", edit(func(b bundle) {
			e := entries(b)
			e[0], e[1] = e[1], e[0]
		})},
		{"two MessageHeaders", CodeInvalidValue, "invalid", "Bundle.entry[10].resource", edit(func(b bundle) {
			second := clone(entries(b)[0]).(map[string]any)
			second["fullUrl"] = newURN()
			b["entry"] = append(entries(b), second)
		})},
		{"unknown event", CodeInvalidValue, "value", "MessageHeader.eventCoding.code", setAt(0, "prescription-order-response", "eventCoding", "code")},
		{"no event", CodeMissingValue, "required", "MessageHeader.eventCoding.code", onEntry(0, func(r map[string]any) { delete(r, "eventCoding") })},
		{"eventCoding a string", CodeInvalidValue, "structure", "MessageHeader.eventCoding", setAt(0, "prescription-order", "eventCoding")},
		{"dangling reference", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).subject", setAt(3, newURN(), "subject", "reference")},
		{"dangling relative reference", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).requester", setAt(2, "PractitionerRole/56166769", "requester", "reference")},
		{"duplicate fullUrl", CodeInvalidValue, "duplicate", "Bundle.entry[8].fullUrl", edit(func(b bundle) {
			set(b, at(b, "entry", 7, "fullUrl"), "entry", 8, "fullUrl")
		})},

		// Order
		{"no MedicationRequest", CodeMissingValue, "required", "Bundle.entry.resource.ofType(MedicationRequest)", edit(func(b bundle) {
			b["entry"] = append(entries(b)[:1], entries(b)[5:]...)
			delete(res(b, 0), "focus")
			delete(res(b, len(entries(b))-1), "target")
		})},
		{"5 items", CodeFailureToProcessMessage, "processing", "Bundle.entry.resource.ofType(MedicationRequest)", edit(func(b bundle) {
			fifth := clone(entries(b)[1]).(map[string]any)
			id := uuid.NewString()
			fifth["fullUrl"] = "urn:uuid:" + id
			set(fifth, id, "resource", "identifier", 0, "value")
			b["entry"] = append(entries(b), fifth)
		})},
		{"mixed prescription IDs", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).groupIdentifier", setAt(2, validShortID("ABCDEF-A83008-12345"), "groupIdentifier", "value")},
		{"mixed performers", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).dispenseRequest.performer", setAt(3, "FA566", "dispenseRequest", "performer", "identifier", "value")},
		{"mixed validity start", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).dispenseRequest.validityPeriod", setAt(4, "2022-10-22", "dispenseRequest", "validityPeriod", "start")},
		{"mixed validity end", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).dispenseRequest.validityPeriod", setAt(2, "2022-12-22", "dispenseRequest", "validityPeriod", "end")},
		{"mixed site types", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).dispenseRequest.extension(\"" + ExtPerformerSiteType + "\")", setAt(2, "P2", "dispenseRequest", "extension", 0, "valueCoding", "code")},
		{"mixed prescription types", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).extension(\"" + ExtPrescriptionType + "\")", setAt(4, "1001", "extension", 0, "valueCoding", "code")},
		{"status cancelled", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).status", setAt(2, "cancelled", "status")},
		{"no status", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).status", onEntry(1, func(r map[string]any) { delete(r, "status") })},
		{"status a number", CodeInvalidValue, "structure", "Bundle.entry[1].resource.status", setAt(1, 5, "status")},
		{"intent plan", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).intent", setAt(3, "plan", "intent")},
		{"therapy acute and repeat dispensing", CodeInvalidValue, "invalid", "MedicationRequest.courseOfTherapyType.coding", setAt(2, TherapyRepeatDispensing, "courseOfTherapyType", "coding", 0, "code")},
		{"therapy unknown", CodeInvalidValue, "invalid", "MedicationRequest.courseOfTherapyType.coding", setAt(1, "sometimes", "courseOfTherapyType", "coding", 0, "code")},
		{"bad line item UUID", CodeFailureToProcessMessage, "processing", "Bundle.entry[2].resource.identifier[0].value", setAt(2, "6989b7bd8db6428ca5934022e3044c00", "identifier", 0, "value")},
		{"no line item id", CodeTooFewValues, "invalid", "MedicationRequest.identifier", setAt(2, []any{}, "identifier")},
		{"short ID without check character", CodeFailureToProcessMessage, "processing", "Bundle.entry[1].resource.groupIdentifier.value", setOnItems("24F5DA-A83008-7EFE6", "groupIdentifier", "value")},
		{"short ID in lower case", CodeFailureToProcessMessage, "processing", "Bundle.entry[1].resource.groupIdentifier.value", setOnItems("24f5da-a83008-7efe6z", "groupIdentifier", "value")},
		{"short ID bad check character", CodeInvalidChecksum, "processing", "Bundle.entry[1].resource.groupIdentifier.value", setOnItems("24F5DA-A83008-7EFE6Y", "groupIdentifier", "value")},
		{"medication code missing", CodeMissingValue, "required", "Bundle.entry[1].resource.medicationCodeableConcept.coding[0].code", setOnItems("", "medicationCodeableConcept", "coding", 0, "code")},
		{"no short ID", CodeTooFewValues, "invalid", "MedicationRequest.groupIdentifier.extension", eachItem(func(r map[string]any) { delete(r, "groupIdentifier") })},
		{"bad long-form ID", CodeInvalidValue, "value", "Bundle.entry[1].resource." + longIDPath, setOnItems("20ba5fb5-cb58-462c-923e", "groupIdentifier", "extension", 0, "valueIdentifier", "value")},
		{"no long-form ID", CodeTooFewValues, "invalid", "MedicationRequest.groupIdentifier.extension", setOnItems([]any{}, "groupIdentifier", "extension")},
		{"mixed long-form IDs", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).groupIdentifier", setAt(4, uuid.NewString(), "groupIdentifier", "extension", 0, "valueIdentifier", "value")},
		{"mixed subjects", CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).subject", setAt(2, "urn:uuid:a8c85454-f8cb-498d-9629-78e2cb5fa47a", "subject", "reference")},
		{"bad NHS number", CodeFailureToProcessMessage, "processing", "Bundle.entry[5].resource.identifier[0].value", setAt(5, "5839945243", "identifier", 0, "value")},
		{"no NHS number", CodeTooFewValues, "invalid", "Patient.identifier", setAt(5, "https://fhir.nhs.uk/Id/other", "identifier", 0, "system")},
		{"bad performer ODS", CodeFailureToProcessMessage, "processing", "Bundle.entry[1].resource.dispenseRequest.performer.identifier.value", setOnItems("FA 565", "dispenseRequest", "performer", "identifier", "value")},
		{"bad Organization ODS", CodeFailureToProcessMessage, "processing", "Organization.identifier", setAt(8, "A83008/1", "identifier", 0, "value")},
		{"no Organization ODS", CodeFailureToProcessMessage, "processing", "Organization.identifier", setAt(8, "", "identifier", 0, "value")},
		{"bad partOf ODS", CodeFailureToProcessMessage, "processing", "Organization.identifier", setAt(8, "8 4", "partOf", "identifier", "value")},
		{"empty signature", CodeInvalidValue, "invalid", "Provenance.signature.data", setAt(9, "", "signature", 0, "data")},
		{"no Provenance", CodeMissingDigitalSignature, "required", "Bundle.entry.resource.ofType(Provenance).signature", edit(func(b bundle) { b["entry"] = entries(b)[:9] })},
		{"bad validity start", CodeInvalidValue, "invalid", "MedicationRequest.dispenseRequest.validityPeriod.start", setOnItems("21/10/2022", "dispenseRequest", "validityPeriod", "start")},
		{"impossible validity start", CodeInvalidValue, "invalid", "MedicationRequest.dispenseRequest.validityPeriod.start", setOnItems("2022-02-30", "dispenseRequest", "validityPeriod", "start")},
		{"validity period a string", CodeInvalidValue, "structure", "Bundle.entry[1].resource.dispenseRequest.validityPeriod", setAt(1, "2022-10-21", "dispenseRequest", "validityPeriod")},
		// EPS reads neither the supply nor the repeats of an acute order
		// (conformance_order_test.go has what it refuses for eRD).
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ok := tc.in.([]byte)
			if !ok {
				body = edit(tc.in.(func(bundle)))
			}
			_, _, err := validate(body)
			if err == nil {
				t.Fatal("accepted")
			}
			e := fhirErr(t, err)
			if e.Code != tc.code || e.IssueType != tc.issueType || e.Expression[0] != tc.expr {
				t.Errorf("got %s %s at %q: %s\nwant %s %s at %q", e.Code, e.IssueType, e.Expression[0], e.Diagnostics, tc.code, tc.issueType, tc.expr)
			}
			var oo OperationOutcome
			if err := json.Unmarshal(ErrorOutcome(err), &oo); err != nil || len(oo.Issue) != 1 || oo.Issue[0].Severity != "error" {
				t.Errorf("ErrorOutcome: %v %+v", err, oo)
			}
		})
	}
}

// TestGoodVariants checks that variations the profiles allow are accepted.
func TestGoodVariants(t *testing.T) {
	base := readFixture(t, order4Items)
	for _, tc := range []struct {
		name  string
		edit  func(b bundle)
		check func(t *testing.T, o *Order)
	}{
		// course-of-therapy-type.ts getCourseOfTherapyTypeCode: the mix is acute.
		{"acute and continuous mixed", setAt(2, TherapyContinuous, "courseOfTherapyType", "coding", 0, "code"),
			func(t *testing.T, o *Order) {
				if o.TherapyType != TherapyAcute {
					t.Errorf("therapy %q, want acute", o.TherapyType)
				}
			}},
		{"relative reference by resource id", func(b bundle) {
			res(b, 5)["id"] = "pat-1"
			eachItem(func(r map[string]any) { set(r, "Patient/pat-1", "subject", "reference") })(b)
		}, nil},
		{"relative reference by RESTful fullUrl", func(b bundle) {
			set(b, "https://example.org/fhir/Patient/pat-2", "entry", 5, "fullUrl")
			eachItem(func(r map[string]any) { set(r, "Patient/pat-2/_history/3", "subject", "reference") })(b)
			set(b, "https://example.org/fhir/Patient/pat-2", "entry", 0, "resource", "focus", 5, "reference")
		}, nil},
		{"local reference to a contained resource", onEntry(9, func(r map[string]any) {
			r["contained"] = []any{map[string]any{"resourceType": "Device", "id": "dev<1>"}}
			set(r, map[string]any{"reference": "#dev<1>"}, "agent", 0, "who")
		}), nil},
		{"reference to the Bundle itself", func(b bundle) {
			b["id"] = "0cb82cfa-76c8-4fb2-a08e-bf0e326e5487"
			set(res(b, 9), "urn:uuid:0cb82cfa-76c8-4fb2-a08e-bf0e326e5487", "target", 0, "reference")
		}, nil},
		{"dateTimes", func(b bundle) {
			eachItem(func(r map[string]any) {
				set(r, "2022-10-21T13:47:00.123+01:00", "dispenseRequest", "validityPeriod", "start")
				set(r, "2023-04", "dispenseRequest", "validityPeriod", "end")
				r["authoredOn"] = "2022-10-21T12:00:00Z"
			})(b)
		}, func(t *testing.T, o *Order) {
			start := time.Date(2022, 10, 21, 12, 47, 0, 123e6, time.UTC)
			end := time.Date(2023, 5, 1, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond)
			if !o.ValidityStart.Equal(start) || !o.ValidityEnd.Equal(end) || !o.AuthoredOn.Equal(time.Date(2022, 10, 21, 12, 0, 0, 0, time.UTC)) {
				t.Errorf("validity %v - %v, authored %v", o.ValidityStart, o.ValidityEnd, o.AuthoredOn)
			}
		}},
		{"repeats and supply", func(b bundle) {
			eachItem(func(r map[string]any) { set(r, 5, "dispenseRequest", "numberOfRepeatsAllowed") })(b)
			eachItem(func(r map[string]any) { set(r, 28, "dispenseRequest", "expectedSupplyDuration", "value") })(b)
		}, func(t *testing.T, o *Order) {
			if o.RepeatsAllowed != 5 || o.SupplyDays != 28 {
				t.Errorf("repeats %d supply %d", o.RepeatsAllowed, o.SupplyDays)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, o, err := validate(mutate(t, base, tc.edit))
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// TestOrderNeedsPrescriptionOrder checks Order on other events.
func TestOrderNeedsPrescriptionOrder(t *testing.T) {
	m, err := DecodeMessage(readFixture(t, "primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/1-Process-Request-Cancel-200_OK.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Order(time.Now()); fhirErr(t, err).Code != CodeInvalidValue {
		t.Errorf("Order on %s: %v", m.Event, err)
	}
	if _, err := (&Message{Event: EventPrescriptionOrder}).Order(time.Now()); fhirErr(t, err).Code != CodeMissingValue {
		t.Errorf("Order on an empty message: %v", err)
	}
}
