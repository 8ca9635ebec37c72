package fhir_test

import (
	"os"
	"strings"
	"testing"
	"time"

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
	o, err := msg.Order(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if o.ControlledDrug != "CD3" || !o.ShortValidity() {
		t.Errorf("schedule %q short %v, want CD3 and 28-day validity", o.ControlledDrug, o.ShortValidity())
	}
	plain, _ := fhir.DecodeMessage(fhirgen.Order4Items)
	written, _ := fhirgen.MessageDate(fhirgen.Order4Items)
	if o, _ := plain.Order(written); o.ControlledDrug != "" || o.ShortValidity() {
		t.Errorf("plain order: %q", o.ControlledDrug)
	}
}

// Repeat dispensing: no Schedule 2 or 3 controlled drugs, at most 99 issues,
// a days supply of at most 366, the course within 12 months.
func TestRepeatDispensingRules(t *testing.T) {
	erd, err := os.ReadFile("../test/testdata/nhs/nhs-eps-api/spec/prescribing/prescription-order/eRD-primary-example-req.json")
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(mr map[string]any)) []byte {
		return fhirgen.Mutate(erd, func(m map[string]any) {
			for _, e := range m["entry"].([]any) {
				if r := e.(map[string]any)["resource"].(map[string]any); r["resourceType"] == "MedicationRequest" {
					f(r)
				}
			}
		})
	}
	cd := func(code string) func(map[string]any) {
		return func(mr map[string]any) {
			ext, _ := mr["extension"].([]any)
			mr["extension"] = append(ext, map[string]any{"url": fhir.ExtControlledDrug, "extension": []any{
				map[string]any{"url": "schedule", "valueCoding": map[string]any{"code": code}}}})
		}
	}
	dr := func(key string, v any) func(map[string]any) {
		return func(mr map[string]any) { mr["dispenseRequest"].(map[string]any)[key] = v }
	}
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
		want string // part of the FHIRPath named
	}{
		{"the NHS example", erd, true, ""},
		{"Schedule 5 is allowed", edit(cd("CD5")), true, ""},
		{"Schedule 2 is refused", edit(cd("CD2")), false, "ControlledDrug"},
		{"Schedule 3 is refused", edit(cd("CD3")), false, "ControlledDrug"},
		{"100 issues", edit(dr("numberOfRepeatsAllowed", 99)), false, "numberOfRepeatsAllowed"},
		// Spine has no "issues x days supply" rule (it checks the validity
		// period's end instead: conformance_order_test.go).
		{"40 issues of 10 days", edit(dr("numberOfRepeatsAllowed", 39)), true, ""},
		{"99 issues", edit(dr("numberOfRepeatsAllowed", 98)), true, ""},
		{"a supply over 366 days", edit(dr("expectedSupplyDuration", map[string]any{"value": 400, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"})), false, "expectedSupplyDuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := fhir.DecodeMessage(tc.body)
			if err == nil {
				written, _ := fhirgen.MessageDate(tc.body)
				_, err = msg.Order(written)
			}
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				e, isFHIR := err.(*fhir.Error)
				if !isFHIR || e.Kind != fhir.KindInvalid || len(e.Expression) == 0 || !strings.Contains(e.Expression[0], tc.want) {
					t.Errorf("err = %#v, want an INVALID error naming %s", err, tc.want)
				}
			}
		})
	}
}
