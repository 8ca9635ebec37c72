package tracker

import (
	"testing"
	"time"
)

// BenchmarkSearchBundle builds the search view of three prescriptions of
// the NHS examples (4 acute items, a repeat prescription, a repeat
// dispensing prescription of 6 issues: 8 RequestGroups).
func BenchmarkSearchBundle(b *testing.B) {
	acute, acuteD := fixtureRecord(b, orderAcute4Items, created)
	mixed, mixedD := fixtureRecord(b, orderAcuteRepeat, created.Add(time.Hour))
	erd, erdD := fixtureRecord(b, orderERD, created.Add(2*time.Hour))
	results := []SearchResult{{acute, acuteD.Patient}, {mixed, mixedD.Patient}, {erd, erdD.Patient}}
	b.ReportAllocs()
	for b.Loop() {
		SearchBundle(results)
	}
}

// BenchmarkDetailBundle builds the detail view of the NHS example of 4
// acute items, with its order details.
func BenchmarkDetailBundle(b *testing.B) {
	rec, d := fixtureRecord(b, orderAcute4Items, created)
	b.ReportAllocs()
	for b.Loop() {
		DetailBundle(rec, d)
	}
}
