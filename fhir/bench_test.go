package fhir

import (
	"encoding/json"
	"testing"

	samply "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// BenchmarkDecodeValidateOrder4Items decodes and validates a signed order of
// four items: the broker's hot path.
func BenchmarkDecodeValidateOrder4Items(b *testing.B) {
	body := readFixture(b, order4Items)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		m, err := DecodeMessage(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Order(written(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeOrderSamply is the baseline: the same bytes decoded into
// the generated FHIR models of github.com/samply/golang-fhir-models (the
// Bundle, then each entry's resource by its type), with no validation.
func BenchmarkDecodeOrderSamply(b *testing.B) {
	body := readFixture(b, order4Items)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := decodeSamply(body); err != nil {
			b.Fatal(err)
		}
	}
}

// decodeSamply decodes body with the samply models.
func decodeSamply(body []byte) error {
	bundle, err := samply.UnmarshalBundle(body)
	if err != nil {
		return err
	}
	for _, e := range bundle.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal(e.Resource, &head); err != nil {
			return err
		}
		switch head.ResourceType {
		case "MessageHeader":
			_, err = samply.UnmarshalMessageHeader(e.Resource)
		case "MedicationRequest":
			_, err = samply.UnmarshalMedicationRequest(e.Resource)
		case "Patient":
			_, err = samply.UnmarshalPatient(e.Resource)
		case "PractitionerRole":
			_, err = samply.UnmarshalPractitionerRole(e.Resource)
		case "Practitioner":
			_, err = samply.UnmarshalPractitioner(e.Resource)
		case "Organization":
			_, err = samply.UnmarshalOrganization(e.Resource)
		case "Provenance":
			_, err = samply.UnmarshalProvenance(e.Resource)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func TestSamplyBaselineDecodes(t *testing.T) {
	if err := decodeSamply(readFixture(t, order4Items)); err != nil {
		t.Fatal(err)
	}
}
