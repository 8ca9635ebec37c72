package rx

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// courseRecord is a repeat dispensing record of issues issues, four items,
// every issue but the last released, dispensed and claimed (the record's
// largest state), or a one-issue acute record when issues is 1.
func courseRecord(issues int) *Prescription {
	o := &Order{PrescriptionID: "7B7EF0-A83008-3220F7", BundleID: "0f3bd3e3-6d9e-4f43-8b2f-5b3a4c1e2d10", NHSNumber: "9449305552",
		Sender: "A83008", SiteType: "P1", Performer: "FA565", ValidityStart: t0, TherapyType: TherapyAcute,
		Items: []OrderItem{{ID: "a54219b8-f741-4c47-b662-e4f8dfa49ab6", MedicationCode: "39720311000001101"},
			{ID: "b54219b8-f741-4c47-b662-e4f8dfa49ab6", MedicationCode: "39720311000001101"},
			{ID: "c54219b8-f741-4c47-b662-e4f8dfa49ab6", MedicationCode: "39720311000001101"},
			{ID: "d54219b8-f741-4c47-b662-e4f8dfa49ab6", MedicationCode: "39720311000001101"}}}
	if issues > 1 {
		o.TherapyType, o.RepeatsAllowed, o.SupplyDays = TherapyRepeatDispensing, issues-1, 3
	}
	p := Create(o, gp, t0)
	all := map[string]ItemStatus{}
	for _, it := range o.Items {
		all[it.ID] = ItemFullyDispensed
	}
	at := t0
	for n := 1; n < issues || (issues == 1 && n == 1); n++ {
		at = at.Add(time.Hour)
		p = must(Release(p, "FA565", pharmacy, "0f3bd3e3-6d9e-4f43-8b2f-5b3a4c1e2d11", true, at))
		p = must(Dispense(p, "FA565", pharmacy, DispenseInput{ID: fmt.Sprintf("0f3bd3e3-6d9e-4f43-8b2f-%012d", n), Items: all}, at))
		p = must(Claim(p, "FA565", pharmacy, fmt.Sprintf("1f3bd3e3-6d9e-4f43-8b2f-%012d", n), "", at))
		if issues > 1 {
			at = p.IssueAvailableAt(n + 1)
			p = ApplyScheduled(p, at, nil)
		}
	}
	return p
}

// BenchmarkRecordDecode is what every read of a prescription's current
// state costs (the Eps-Record header decoded): an acute prescription
// dispensed and claimed against repeat dispensing courses near their end.
func BenchmarkRecordDecode(b *testing.B) {
	for _, issues := range []int{1, 6, 13, 99} {
		raw, _ := json.Marshal(courseRecord(issues))
		b.Run(fmt.Sprintf("issues=%d", issues), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var p Prescription
				if err := json.Unmarshal(raw, &p); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(raw)), "record-bytes")
		})
	}
}
