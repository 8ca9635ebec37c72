package test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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

// BenchmarkNominatedRelease25Queued measures one nominated release of 25
// from a dispenser whose ready queue holds many prescriptions
// (EPS_BENCH_QUEUE, default 20,000, filled over HTTP by 16 clients before
// the timer starts): the release must cost the same whatever the queue's
// length. It reports each release's p50 and p99.
//
//	go test -run '^$' -bench NominatedRelease25Queued -benchtime 40x -count 3 ./test/
func BenchmarkNominatedRelease25Queued(b *testing.B) {
	queued := 20_000
	if v, err := strconv.Atoi(os.Getenv("EPS_BENCH_QUEUE")); err == nil && v > 0 {
		queued = v
	}
	tb := startBroker(b, b.TempDir())
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := tb.token(auth.RolePrescriber, "A83008")
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(queued) {
				g, _ := tmpl.Order(fhirgen.Options{Performer: "FA565"})
				if res := tb.post(tok, g.Body); res.Status != 200 {
					b.Errorf("order: %d", res.Status)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every consumer done with the orders (the notifications may lag far
	// behind intake: one fsynced write each), so the timed releases do not
	// share the machine with them.
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := tb.App.Notifier().WaitApplied(wctx, uint64(queued)); err != nil {
		b.Fatal(err)
	}
	if err := tb.App.Tracker.Index.WaitApplied(wctx, uint64(queued)); err != nil {
		b.Fatal(err)
	}
	if b.N*25 > queued {
		b.Fatalf("%d releases of 25 need more than the %d queued", b.N, queued)
	}
	body := releaseBody(b, "FA565", "")
	disp := tb.token(auth.RoleDispenser, "FA565")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res := tb.do("POST", "/FHIR/R4/Task/$release", disp, body)
		lat = append(lat, time.Since(start))
		if ids, _ := released(b, res); len(ids) != 25 {
			b.Fatalf("released %d", len(ids))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}
