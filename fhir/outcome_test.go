package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// The OperationOutcome's bytes, member order included, for the answers whose
// parts are samply's types (contained Organization, extension, meta) and an
// internal error's: clients and stored idempotent replays see these bytes.
func TestOutcomeBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"with another dispenser: contained Organization and supportingInfo", ErrorOutcome(&Error{Kind: KindInvalid, IssueType: "business-rule",
			Code: CodePrescriptionWithAnother, CodeSystem: SystemEPSIssueCode, Display: "Prescription is with another dispenser",
			Diagnostics: "prescription X is with another dispenser (FA565)", SupportingOrg: "FA565"}),
			`{"resourceType":"OperationOutcome","contained":[{"id":"org-fa565","identifier":[{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"FA565"}],"resourceType":"Organization"}],"extension":[{"url":"https://fhir.nhs.uk/StructureDefinition/Extension-Spine-supportingInfo","valueReference":{"reference":"#org-fa565"}}],"issue":[{"severity":"error","code":"business-rule","details":{"coding":[{"system":"https://fhir.nhs.uk/CodeSystem/EPS-IssueCode","code":"PRESCRIPTION_WITH_ANOTHER_DISPENSER","display":"Prescription is with another dispenser"}]},"diagnostics":"prescription X is with another dispenser (FA565)"}]}`},
		{"informational with a warning: meta.lastUpdated", InformationalOutcome(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
			Issue{Severity: "warning", Code: "business-rule", Diagnostics: "w"}),
			`{"resourceType":"OperationOutcome","meta":{"lastUpdated":"2026-03-01T09:00:00Z"},"issue":[{"severity":"information","code":"informational"},{"severity":"warning","code":"business-rule","diagnostics":"w"}]}`},
		{"internal error: nothing of the cause", ErrorOutcome(errors.New("x")),
			`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","details":{"coding":[{"system":"https://fhir.nhs.uk/CodeSystem/Spine-ErrorOrWarningCode","code":"SERVER_ERROR","display":"Unexpected internal server error"}]},"diagnostics":"the broker could not process the request; it has not changed anything it did not acknowledge, and the request may be retried"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", tc.got, tc.want)
			}
		})
	}
}

// TestInformationalOutcome: the OperationOutcome of an accepted message
// without warnings is written byte for byte as json.Marshal writes it from
// the FHIR types, whatever the time and its zone.
func TestInformationalOutcome(t *testing.T) {
	for _, now := range []time.Time{
		time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2026, 6, 1, 1, 2, 3, 4, time.FixedZone("BST", 3600)),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(),
	} {
		oo := OperationOutcome{ResourceType: "OperationOutcome",
			Meta:  &fm.Meta{LastUpdated: ptr(now.UTC().Format(time.RFC3339))},
			Issue: []Issue{{Severity: "information", Code: "informational"}}}
		want, err := json.Marshal(oo)
		if err != nil {
			t.Fatal(err)
		}
		if got := InformationalOutcome(now); !bytes.Equal(got, want) {
			t.Errorf("%v:\n got %s\nwant %s", now, got, want)
		}
	}
}

// BenchmarkInformationalOutcome writes the answer to an accepted order.
func BenchmarkInformationalOutcome(b *testing.B) {
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		InformationalOutcome(now)
	}
}
