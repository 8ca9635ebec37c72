package fhir_test

import (
	"testing"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// An item's Extension-DM-ControlledDrug schedule is read; the most
// controlled schedule of the order counts.
func TestControlledDrugSchedule(t *testing.T) {
	cd := func(code string) map[string]any {
		return map[string]any{"url": fhir.ExtControlledDrug, "extension": []any{
			map[string]any{"url": "quantityWords", "valueString": "twenty"},
			map[string]any{"url": "schedule", "valueCoding": map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug", "code": code}},
		}}
	}
	body := fhirgen.Mutate(fhirgen.Order4Items, func(m map[string]any) {
		n := 0
		for _, e := range m["entry"].([]any) {
			r := e.(map[string]any)["resource"].(map[string]any)
			if r["resourceType"] == "MedicationRequest" {
				code := []string{"CD5", "CD3", "", "CD4-1"}[n]
				if code != "" {
					r["extension"] = append(r["extension"].([]any), cd(code))
				}
				n++
			}
		}
	})
	msg, err := fhir.DecodeMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	o, err := msg.Order()
	if err != nil {
		t.Fatal(err)
	}
	if o.ControlledDrug != "CD3" || !o.ShortValidity() {
		t.Errorf("schedule %q short %v, want CD3 and 28-day validity", o.ControlledDrug, o.ShortValidity())
	}
	plain, _ := fhir.DecodeMessage(fhirgen.Order4Items)
	if o, _ := plain.Order(); o.ControlledDrug != "" || o.ShortValidity() {
		t.Errorf("plain order: %q", o.ControlledDrug)
	}
}
