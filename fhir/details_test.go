package fhir

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeOrderDetailsAcuteNominated(t *testing.T) {
	d, err := DecodeOrderDetails(readFixture(t, order4Items))
	if err != nil {
		t.Fatal(err)
	}
	wantPatient := PatientDetails{NHSNumber: "5839945242", Prefix: "MS", Family: "TWITCHETT", Gender: "female",
		BirthDate: "1948-04-30", Given: []string{"STACEY", "MARISA"},
		Address: []string{"10 HEATHFIELD", "COBHAM", "SURREY"}, PostalCode: "KT11 2QY"}
	if !reflect.DeepEqual(d.Patient, wantPatient) {
		t.Errorf("patient\n got %+v\nwant %+v", d.Patient, wantPatient)
	}
	wantPrescriber := PrescriberDetails{PractitionerName: "DR C BOIN", SDSUserID: "555086689106",
		RoleProfileID: "200102238987", OrgODS: "A83008", OrgName: "HALLGARTH SURGERY", Telecom: "01234567890"}
	if d.Prescriber != wantPrescriber {
		t.Errorf("prescriber\n got %+v\nwant %+v", d.Prescriber, wantPrescriber)
	}
	wantItems := []ItemDetails{
		{ID: "a54219b8-f741-4c47-b662-e4f8dfa49ab6", MedicationCode: "39732311000001104", MedicationDisplay: "Amoxicillin 250mg capsules",
			Dosage: "2 times a day for 10 days", Quantity: 20, QuantityUnit: "tablet"},
		{MedicationDisplay: "Co-codamol 30mg/500mg tablets"},
		{MedicationDisplay: "Pseudoephedrine hydrochloride 60mg tablets"},
		{MedicationDisplay: "Azithromycin 250mg capsules"},
	}
	if len(d.Items) != len(wantItems) {
		t.Fatalf("%d items, want %d: %+v", len(d.Items), len(wantItems), d.Items)
	}
	if d.Items[0] != wantItems[0] {
		t.Errorf("item 0\n got %+v\nwant %+v", d.Items[0], wantItems[0])
	}
	for i, it := range d.Items {
		if it.MedicationDisplay != wantItems[i].MedicationDisplay {
			t.Errorf("item %d medication %q, want %q", i, it.MedicationDisplay, wantItems[i].MedicationDisplay)
		}
		if !ValidUUID(it.ID) || it.MedicationCode == "" || it.Dosage == "" || it.Quantity <= 0 || it.QuantityUnit == "" {
			t.Errorf("item %d incomplete: %+v", i, it)
		}
	}
	if d.AuthoredOn != "" {
		t.Errorf("AuthoredOn %q: the fixture has none", d.AuthoredOn)
	}
	if d.PrescriptionTypeDisplay != "Primary Care Prescriber - Medical Prescriber" {
		t.Errorf("PrescriptionTypeDisplay %q", d.PrescriptionTypeDisplay)
	}
}

// TestDecodeOrderDetailsFixtures checks every accepted NHS order fixture:
// the details agree with what Order reads of the same message.
func TestDecodeOrderDetailsFixtures(t *testing.T) {
	n := 0
	for _, rel := range findFixtures(t, func(string) bool { return true }) {
		b := readFixture(t, rel)
		_, o, err := validate(b)
		if err != nil || o == nil {
			continue // not an accepted prescription-order
		}
		n++
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			d, err := DecodeOrderDetails(b)
			if err != nil {
				t.Fatal(err)
			}
			if d.Patient.NHSNumber != o.NHSNumber || d.Patient.Family == "" || len(d.Patient.Given) == 0 {
				t.Errorf("patient %+v; order NHS number %s", d.Patient, o.NHSNumber)
			}
			if o.PrescriberOrg != "" && d.Prescriber.OrgODS != o.PrescriberOrg {
				t.Errorf("prescriber org %q, order's %q", d.Prescriber.OrgODS, o.PrescriberOrg)
			}
			if d.Prescriber.PractitionerName == "" || d.Prescriber.OrgName == "" {
				t.Errorf("prescriber %+v", d.Prescriber)
			}
			if len(d.Items) != len(o.Items) {
				t.Fatalf("%d items, order has %d", len(d.Items), len(o.Items))
			}
			for i, it := range d.Items {
				oi := o.Items[i]
				if it.ID != oi.ID || it.MedicationCode != oi.MedicationCode || it.MedicationDisplay != oi.MedicationDisplay ||
					it.Quantity != oi.Quantity || it.QuantityUnit != oi.QuantityUnit || !strings.HasPrefix(it.Dosage, oi.Dosage) {
					t.Errorf("item %d\n got %+v\norder %+v", i, it, oi)
				}
				if it.RepeatsAllowed > o.RepeatsAllowed {
					t.Errorf("item %d repeats %d > order's %d", i, it.RepeatsAllowed, o.RepeatsAllowed)
				}
			}
		})
	}
	if n < 10 {
		t.Errorf("only %d order fixtures found", n)
	}
}

func TestDecodeOrderDetailsVariants(t *testing.T) {
	base := readFixture(t, order4Items)

	t.Run("multiple dosage instructions", func(t *testing.T) {
		d, err := DecodeOrderDetails(readFixture(t, "primary-care/acute/nominated-pharmacy/medical-prescriber/3-Process-Request-Multiple-DosageInstructions-Send_200_OK.json"))
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Items[0].Dosage; got != "2 times a day for 10 days; 2 times a day for 10 days" {
			t.Errorf("dosage %q", got)
		}
	})
	t.Run("repeat dispensing", func(t *testing.T) {
		d, err := DecodeOrderDetails(readFixture(t, "spec/prescribing/prescription-order/eRD-primary-example-req.json"))
		if err != nil {
			t.Fatal(err)
		}
		if d.Items[0].RepeatsAllowed != 6 {
			t.Errorf("repeats allowed %d, want 6", d.Items[0].RepeatsAllowed)
		}
	})
	t.Run("authoredOn, home address, organisation by identifier", func(t *testing.T) {
		b := mutate(t, base, func(b bundle) {
			eachOfType(b, "MedicationRequest", func(r map[string]any) { r["authoredOn"] = "2026-02-27T15:35:28+00:00" })
			eachOfType(b, "Patient", func(r map[string]any) {
				r["address"] = []any{
					map[string]any{"use": "temp", "line": []any{"1 ELSEWHERE"}},
					map[string]any{"use": "home", "line": []any{"2 HOME ROAD"}, "city": "LEEDS", "postalCode": "LS1 1AA"},
				}
			})
			eachOfType(b, "PractitionerRole", func(r map[string]any) {
				r["organization"] = map[string]any{"identifier": map[string]any{"system": SystemODSCode, "value": "A83008"}, "display": "THE SURGERY"}
				delete(r, "telecom")
			})
		})
		d, err := DecodeOrderDetails(b)
		if err != nil {
			t.Fatal(err)
		}
		if d.AuthoredOn != "2026-02-27T15:35:28+00:00" {
			t.Errorf("AuthoredOn %q", d.AuthoredOn)
		}
		if !reflect.DeepEqual(d.Patient.Address, []string{"2 HOME ROAD", "LEEDS"}) || d.Patient.PostalCode != "LS1 1AA" {
			t.Errorf("address %q %q", d.Patient.Address, d.Patient.PostalCode)
		}
		if p := d.Prescriber; p.OrgODS != "A83008" || p.OrgName != "THE SURGERY" || p.Telecom != "" || p.PractitionerName != "DR C BOIN" {
			t.Errorf("prescriber %+v", p)
		}
	})
	t.Run("organisation telecom when the role has none", func(t *testing.T) {
		b := mutate(t, base, func(b bundle) {
			eachOfType(b, "PractitionerRole", func(r map[string]any) { delete(r, "telecom") })
		})
		d, err := DecodeOrderDetails(b)
		if err != nil {
			t.Fatal(err)
		}
		if d.Prescriber.Telecom != "0115 9737320" {
			t.Errorf("telecom %q", d.Prescriber.Telecom)
		}
	})
	t.Run("contained practitioner, name text", func(t *testing.T) {
		b := mutate(t, base, func(b bundle) {
			eachOfType(b, "PractitionerRole", func(r map[string]any) {
				r["contained"] = []any{map[string]any{"resourceType": "Practitioner", "id": "p1",
					"name":       []any{map[string]any{"text": "Dr Jane Smith"}},
					"identifier": []any{map[string]any{"system": SystemSDSUserID, "value": "555000000001"}}}}
				r["practitioner"] = map[string]any{"reference": "#p1"}
			})
		})
		d, err := DecodeOrderDetails(b)
		if err != nil {
			t.Fatal(err)
		}
		if d.Prescriber.PractitionerName != "Dr Jane Smith" || d.Prescriber.SDSUserID != "555000000001" {
			t.Errorf("prescriber %+v", d.Prescriber)
		}
	})
	t.Run("unexpected JSON types are left empty", func(t *testing.T) {
		b := mutate(t, base, func(b bundle) {
			eachOfType(b, "Patient", func(r map[string]any) { r["name"] = "TWITCHETT"; r["gender"] = 7 })
		})
		d, err := DecodeOrderDetails(b)
		if err != nil {
			t.Fatal(err)
		}
		if d.Patient.NHSNumber != "5839945242" || d.Patient.Family != "" || d.Patient.Gender != "" || d.Patient.BirthDate != "1948-04-30" {
			t.Errorf("patient %+v", d.Patient)
		}
	})
}

func TestDecodeOrderDetailsErrors(t *testing.T) {
	for name, b := range map[string][]byte{
		"not JSON":       []byte("{"),
		"not a Bundle":   []byte(`{"resourceType":"Patient"}`),
		"cancel message": readFixture(t, "primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/4-Process-Request-Cancel-200_OK.json"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeOrderDetails(b); err == nil || ErrorKind(err) != KindInvalid {
				t.Errorf("err %v, want an invalid-input error", err)
			}
		})
	}
}
