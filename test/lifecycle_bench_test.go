package test

import (
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// BenchmarkNominatedRelease25 measures one nominated release of 25
// prescriptions over HTTP (25 compare-and-set writes, 25 order reads, the
// answer with 25 order Bundles), and reports it per prescription next to
// the intake of the same prescriptions measured in the same run (the
// baseline: one durable write per order).
//
//	go test -run '^$' -bench NominatedRelease25 -benchtime 20x -count 3 ./test/
func BenchmarkNominatedRelease25(b *testing.B) {
	tb := startBroker(b, b.TempDir())
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := tb.token(auth.RolePrescriber, "A83008")
	n := 25 * b.N
	t0 := time.Now()
	for i := 0; i < n; i++ {
		g, _ := tmpl.Order(fhirgen.Options{Performer: "FA565"})
		if res := tb.post(tok, g.Body); res.Status != 200 {
			b.Fatalf("%d", res.Status)
		}
	}
	intakePer := time.Since(t0) / time.Duration(n)
	tb.settle()
	body := releaseBody(b, "FA565", "")
	disp := tb.token(auth.RoleDispenser, "FA565")
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		res := tb.do("POST", "/FHIR/R4/Task/$release", disp, body)
		if ids, _ := released(b, res); len(ids) != 25 {
			b.Fatalf("released %d", len(ids))
		}
	}
	b.StopTimer()
	releasePer := time.Since(start) / time.Duration(n)
	b.ReportMetric(float64(releasePer.Microseconds()), "µs/prescription-released")
	b.ReportMetric(float64(intakePer.Microseconds()), "µs/order-accepted")
	b.ReportMetric(float64(releasePer)/float64(intakePer), "release/intake")
}

// BenchmarkDispenseNotification measures a dispense notification over HTTP
// (decode and validate, one compare-and-set write) against the intake of
// the same prescriptions' orders in the same run.
//
//	go test -run '^$' -bench DispenseNotification -benchtime 300x -count 3 ./test/
func BenchmarkDispenseNotification(b *testing.B) {
	tb := startBroker(b, b.TempDir())
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := tb.token(auth.RolePrescriber, "A83008")
	disp := tb.token(auth.RoleDispenser, "FCG71")
	orders := make([]*fhirgen.Generated, b.N)
	t0 := time.Now()
	for i := range orders {
		orders[i], _ = tmpl.Order(fhirgen.Options{})
		if res := tb.post(tok, orders[i].Body); res.Status != 200 {
			b.Fatalf("%d", res.Status)
		}
	}
	intakePer := time.Since(t0) / time.Duration(b.N)
	bodies := make([][]byte, b.N)
	for i, g := range orders {
		if res := tb.release("FCG71", g.ShortID); res.Status != 200 {
			b.Fatalf("release %d", res.Status)
		}
		st := map[string]string{}
		for _, id := range g.ItemIDs {
			st[id] = "0001"
		}
		bodies[i], _ = fhirgen.DispenseNotification(g, "FCG71", st, "0006", "")
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if res := tb.post(disp, bodies[i]); res.Status != 200 {
			b.Fatalf("dispense: %d %s", res.Status, res.Body)
		}
	}
	b.StopTimer()
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(per.Microseconds()), "µs/notification")
	b.ReportMetric(float64(intakePer.Microseconds()), "µs/order-accepted")
	b.ReportMetric(float64(per)/float64(intakePer), "dispense/intake")
}
